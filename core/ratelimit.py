"""Redis-backed rate limits shared by every web process, built on the ``limits`` library.

Limits are written as strings such as ``"10 per 15 minutes"``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flask import current_app
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from core.extensions import redis_store


def _limiter() -> MovingWindowRateLimiter:
    state = current_app.extensions.setdefault("rate_limiter", {})
    if "limiter" not in state:
        pool = redis_store.connection.connection_pool
        storage = RedisStorage("redis://", connection_pool=pool, key_prefix="gs:limits")
        state["limiter"] = MovingWindowRateLimiter(storage)
    return state["limiter"]


def _item(limit: str) -> RateLimitItem:
    return parse(limit)


def is_exhausted(limit: str, *identifiers: str, allow_when_down: bool = False) -> bool:
    """True when ``identifiers`` have used up ``limit`` (nothing is counted).

    With ``allow_when_down``, an unreachable Redis counts as not exhausted (see ``hit``).
    """
    try:
        return not _limiter().test(_item(limit), *identifiers)
    except RedisError:
        if allow_when_down:
            return False
        raise


def hit(limit: str, *identifiers: str, allow_when_down: bool = False) -> bool:
    """Count one use; False when it goes over ``limit``.

    With ``allow_when_down``, an unreachable Redis lets the use through rather than
    failing the request (for limits that protect inboxes, not accounts).
    """
    try:
        return _limiter().hit(_item(limit), *identifiers)
    except RedisError:
        if allow_when_down:
            return True
        raise


def hit_all(limits: Iterable[tuple[str, str]], *, allow_when_down: bool = False) -> int | None:
    """Count one use against each ``(limit, key)`` in turn; stop at the first that goes
    over and return the seconds until it frees, or None when every one allowed the use."""
    for limit, key in limits:
        if not hit(limit, key, allow_when_down=allow_when_down):
            return seconds_until_free(limit, key)
    return None


def seconds_until_free(limit: str, *identifiers: str) -> int:
    """How long until ``identifiers`` may try again under ``limit``."""
    stats = _limiter().get_window_stats(_item(limit), *identifiers)
    return max(1, int(stats.reset_time - time.time()) + 1)
