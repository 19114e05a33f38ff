"""A page cache shared by every web worker, for the busiest public pages.

A popular petition's page is viewed far more often than it changes, so anonymous views
are served from Redis for ``PAGE_CACHE_SECONDS``. Each visitor still gets a CSRF token of
their own: it is swapped for a placeholder before the page is stored and filled in as it
is served. The first page rendered after the entry expires is the one stored (``SET NX``),
so all workers serve one snapshot at a time, and a count never steps back between them.
"""

from __future__ import annotations

import contextlib

from flask import current_app, g, request, session
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from redis.exceptions import RedisError

from core.extensions import redis_store

# Written with a "<", which escaping turns into "&lt;" in any text a visitor wrote, so
# only the token's own place in the page can hold it.
PLACEHOLDER = "<csrf>"


def _cacheable() -> bool:
    return (
        current_app.config["PAGE_CACHE_SECONDS"] > 0
        and request.method == "GET"
        and not request.args
        and not current_user.is_authenticated
        and not session.get("_flashes")
    )


def cached_page(key: str) -> str | None:
    """The stored page for this anonymous view, with the visitor's own CSRF token.

    Call it before rendering: it also decides whether the page rendered next may be stored.
    """
    # Rendering pops the flashed messages, so the decision cannot wait until after it.
    g.page_cacheable = _cacheable()
    if not g.page_cacheable:
        return None
    try:
        page = redis_store.connection.get(f"page:{key}")
    except RedisError:
        return None
    return page.decode().replace(PLACEHOLDER, generate_csrf()) if page else None


def store_page(key: str, page: str) -> None:
    """Keep a freshly rendered anonymous view, unless another worker stored one first.

    Only a page that ``cached_page`` found cacheable in this request is kept.
    """
    if not g.get("page_cacheable", False):
        return
    shared = page.replace(generate_csrf(), PLACEHOLDER)
    with contextlib.suppress(RedisError):  # the page is served either way
        redis_store.connection.set(
            f"page:{key}", shared, nx=True, ex=current_app.config["PAGE_CACHE_SECONDS"]
        )


def forget_page(key: str) -> None:
    """Drop the stored page after what it shows has changed, and store none for a while.

    A page rendered just before the change could otherwise be stored just after it; the
    empty entry (served as a miss) keeps such a page out until it has expired anyway.
    """
    seconds = current_app.config["PAGE_CACHE_SECONDS"]
    with contextlib.suppress(RedisError):  # unreachable Redis serves no stored page either
        if seconds > 0:
            redis_store.connection.set(f"page:{key}", "", ex=seconds)
        else:
            redis_store.connection.delete(f"page:{key}")
