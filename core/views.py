"""Site-wide pages: home, health check, and the development outbox."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default as default_policy

from flask import Blueprint, abort, current_app, jsonify, redirect, render_template, url_for
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import text

from core import api
from core.extensions import db, redis_store
from core.hooks import city_sections, collect, home_sections
from core.mail import outbox_folder
from core.places import city_slug

bp = Blueprint("core", __name__)
dev_bp = Blueprint("dev", __name__, url_prefix="/dev")


@bp.get("/")
def home():
    member = current_user if current_user.is_authenticated else None
    sections = [Markup(html) for html in collect(home_sections, member=member)]
    city = city_slug(member.city) if member else None
    return render_template("core/home.html", sections=sections, city=city)


@bp.get("/api/v1/")
def api_entry():
    """The API's entry point: links to every collection."""
    return api.hal(
        {
            "motd": "Welcome to the Groundswell API, in the style of OSDI 1.x.",
            "vendor_name": "Groundswell",
            "product_name": "Groundswell",
            "osdi_version": "1.1",
            "max_pagesize": api.MAX_PER_PAGE,
            "_links": api.entry_links(),
        }
    )


@bp.get("/api/v1/openapi.json")
def api_openapi():
    return jsonify(api.openapi_document(current_app))


@bp.get("/api")
def api_docs():
    """The API described for people: endpoints, tokens and limits."""
    return render_template(
        "core/api.html",
        operations=api.OPERATIONS,
        limit=current_app.config["API_RATE_LIMIT"],
        max_per_page=api.MAX_PER_PAGE,
        header=api.TOKEN_HEADER,
    )


@bp.get("/cities/<slug>")
def city(slug: str):
    if slug != city_slug(slug):
        return redirect(url_for("core.city", slug=city_slug(slug)), 301)
    sections = [Markup(html) for html in collect(city_sections, city_slug=slug)]
    return render_template("core/city.html", name=slug.replace("-", " ").title(), sections=sections)


def _database_ok() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        return True
    except Exception:
        current_app.logger.exception("health check: database")
        db.session.rollback()
        return False


def _redis_ok() -> bool:
    try:
        return bool(redis_store.connection.ping())
    except Exception:
        current_app.logger.exception("health check: redis")
        return False


@bp.get("/healthz")
def healthz():
    checks = {"database": _database_ok(), "redis": _redis_ok()}
    healthy = all(checks.values())
    body = {
        "status": "ok" if healthy else "unavailable",
        **{name: "ok" if ok else "down" for name, ok in checks.items()},
    }
    return jsonify(body), 200 if healthy else 503


def _outbox_messages():
    folder = outbox_folder()
    files = sorted(folder.glob("*.eml"), reverse=True) if folder.exists() else []
    for path in files[:200]:
        yield path.stem, message_from_bytes(path.read_bytes(), policy=default_policy)


@dev_bp.before_request
def only_in_debug():
    if not current_app.debug:
        abort(404)


@dev_bp.get("/outbox")
def outbox():
    return render_template("core/outbox.html", messages=list(_outbox_messages()))


@dev_bp.get("/outbox/<name>")
def outbox_message(name: str):
    path = outbox_folder() / f"{name}.eml"
    if not name.isalnum() or not path.exists():
        abort(404)
    message = message_from_bytes(path.read_bytes(), policy=default_policy)
    text_part = message.get_body(preferencelist=("plain",))
    return render_template(
        "core/outbox_message.html",
        message=message,
        text=text_part.get_content() if text_part else "",
    )
