"""Links: absolute ones for email, built from BASE_URL so they work outside a request too,
and the check that a link someone gave us is a web link."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app


def external_url(endpoint: str, **values: Any) -> str:
    """The absolute URL of ``endpoint`` under BASE_URL."""
    base = urlsplit(current_app.config["BASE_URL"])
    adapter = current_app.url_map.bind(
        base.netloc, script_name=base.path or "/", url_scheme=base.scheme
    )
    return adapter.build(endpoint, values, force_external=True)


WEB_SCHEMES = ("http", "https")


def is_web_link(value: str | None) -> bool:
    """Whether ``value`` is an absolute http(s) link with a host: never ``javascript:`` or
    another scheme a browser would run or hand to a program."""
    value = (value or "").strip()
    if not value or any(character.isspace() for character in value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - reading it checks the port is a number in range
    except ValueError:  # a broken host (``http://[``) or port
        return False
    return parts.scheme.lower() in WEB_SCHEMES and bool(parts.hostname)
