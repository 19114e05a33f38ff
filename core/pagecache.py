"""A page cache shared by every web worker, for the busiest public pages.

A popular petition's page is viewed far more often than it changes, so anonymous views
are served from Redis for ``PAGE_CACHE_SECONDS``. Each visitor still gets a CSRF token of
their own: it is swapped for a placeholder before the page is stored and filled in as it
is served. The first page rendered after the entry expires is the one stored (``SET NX``),
so all workers serve one snapshot at a time, and a count never steps back between them.
"""

from __future__ import annotations

import contextlib

from flask import current_app, request, session
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from redis.exceptions import RedisError

from core.extensions import redis_store

PLACEHOLDER = "__csrf_token__"


def _cacheable() -> bool:
    return (
        current_app.config["PAGE_CACHE_SECONDS"] > 0
        and request.method == "GET"
        and not request.args
        and not current_user.is_authenticated
        and not session.get("_flashes")
    )


def cached_page(key: str) -> str | None:
    """The stored page for this anonymous view, with the visitor's own CSRF token."""
    if not _cacheable():
        return None
    try:
        page = redis_store.connection.get(f"page:{key}")
    except RedisError:
        return None
    return page.decode().replace(PLACEHOLDER, generate_csrf()) if page else None


def store_page(key: str, page: str) -> None:
    """Keep a freshly rendered anonymous view, unless another worker stored one first."""
    if not _cacheable():
        return
    shared = page.replace(generate_csrf(), PLACEHOLDER)
    with contextlib.suppress(RedisError):  # the page is served either way
        redis_store.connection.set(
            f"page:{key}", shared, nx=True, ex=current_app.config["PAGE_CACHE_SECONDS"]
        )
