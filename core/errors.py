"""Friendly error pages, and a 503 instead of a 500 when a backing service is down."""

from __future__ import annotations

from flask import Flask, abort, render_template, request
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

from core.api import guard_api_request, is_api_request, problem_response

MESSAGES = {
    400: ("Bad request", "We could not understand that request."),
    403: ("Not allowed", "You do not have permission to do that."),
    404: ("Not found", "We could not find that page. It may have moved or never existed."),
    405: ("Not allowed", "That page does not accept this kind of request."),
    413: ("Too large", "What you sent is larger than we accept."),
    # Forms answer with their own page; this is a button whose page had gone stale.
    422: (
        "Nothing was changed",
        "The page you came from was out of date. Go back, reload it and try again.",
    ),
    429: ("Slow down", "Too many attempts. Please wait a little and try again."),
    500: ("Something went wrong", "An error on our side stopped this page. It has been logged."),
    503: (
        "Temporarily unavailable",
        "Part of Groundswell is not answering. Please try again soon.",
    ),
}


def render_error(error: HTTPException):
    """Render the friendly page for an HTTP error, keeping its headers (e.g. Retry-After)."""
    if is_api_request():
        return problem_response(error)
    code = error.code or 500
    title, message = MESSAGES.get(code, (error.name, error.description))
    response = error.get_response()
    try:
        page = render_template("errors/error.html", code=code, title=title, message=message)
    except Exception:
        # The page itself may need the service that just failed (the signed-in member, say).
        page = (
            f'<!doctype html><html lang="en"><title>{title}</title>'
            f"<h1>{title}</h1><p>{message}</p></html>"
        )
    response.set_data(page)
    response.content_type = "text/html; charset=utf-8"
    return response


def refuse_nul_bytes() -> None:
    """No field of ours has a use for NUL, and PostgreSQL refuses text that holds one."""
    values = [*request.args.values(), *(request.view_args or {}).values()]
    if any(isinstance(value, str) and "\x00" in value for value in values):
        abort(400)


def refuse_unreadable_host() -> None:
    """A host name that cannot be decoded (``xn--`` and nothing after) cannot be written
    into a link back to this page, such as the one the login page returns to."""
    try:
        request.url  # noqa: B018 (decoding it is the check)
    except UnicodeError:
        abort(400)


def register(app: Flask) -> None:
    """Install the handlers on ``app``."""
    app.before_request(refuse_unreadable_host)
    app.before_request(refuse_nul_bytes)
    app.before_request(guard_api_request)
    app.register_error_handler(HTTPException, render_error)

    def service_down(error: Exception):
        app.logger.error("backing service unavailable: %s", error)
        return render_error(ServiceUnavailable())

    app.register_error_handler(RedisError, service_down)
    app.register_error_handler(OperationalError, service_down)

    def unexpected(error: Exception):
        app.logger.exception("unhandled error", exc_info=error)
        return render_error(InternalServerError())

    app.register_error_handler(Exception, unexpected)
