"""Configuration read from the environment, with defaults that need no running service.

Every setting has a production form (PostgreSQL, Redis, SMTP) and a local default
(SQLite, an embedded Redis, an outbox folder) so a fresh checkout runs as it is.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from core.db import REPLICA

EMBEDDED_REDIS = "embedded"
OUTBOX_MAIL = "outbox"


def _secret_key(instance_path: Path) -> str:
    """Return SECRET_KEY from the environment, or one generated once and kept in instance/."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    key_file = instance_path / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(48))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _replica_bind(url: str) -> dict[str, str]:
    return {REPLICA: url} if url else {}


def load_config(instance_path: str | Path) -> dict[str, Any]:
    """Build the app's configuration from the environment."""
    instance = Path(instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    base_url = os.environ.get("BASE_URL", "http://127.0.0.1:5000").rstrip("/")
    secure_cookies = base_url.startswith("https://")
    return {
        "SECRET_KEY": _secret_key(instance),
        "SQLALCHEMY_DATABASE_URI": os.environ.get(
            "DATABASE_URL", f"sqlite:///{instance / 'groundswell.db'}"
        ),
        "SQLALCHEMY_BINDS": _replica_bind(os.environ.get("DATABASE_REPLICA_URL", "")),
        "REDIS_URL": os.environ.get("REDIS_URL", EMBEDDED_REDIS),
        # With sentinels listed, they name the primary and REDIS_URL is not used.
        "REDIS_SENTINELS": os.environ.get("REDIS_SENTINELS", ""),
        "REDIS_SENTINEL_SERVICE": os.environ.get("REDIS_SENTINEL_SERVICE", "groundswell"),
        "REDIS_PASSWORD": os.environ.get("REDIS_PASSWORD", ""),
        "REDIS_SENTINEL_PASSWORD": os.environ.get("REDIS_SENTINEL_PASSWORD", ""),
        "MAIL_URL": os.environ.get("MAIL_URL", OUTBOX_MAIL),
        "MAIL_FROM": os.environ.get("MAIL_FROM", "Groundswell <noreply@groundswell.localhost>"),
        "BASE_URL": base_url,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": secure_cookies,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": secure_cookies,
        "PREFERRED_URL_SCHEME": "https" if secure_cookies else "http",
        # Reverse proxies in front that append X-Forwarded-For/-Proto/-Host; 0 trusts none,
        # since without a proxy anyone can write those headers.
        "PROXY_HOPS": _int("PROXY_HOPS", 0),
        # Forms check their own CSRF token so the error can be shown beside the form.
        "WTF_CSRF_TIME_LIMIT": None,
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        "LOGIN_LIMIT_PER_ACCOUNT": os.environ.get("LOGIN_LIMIT_PER_ACCOUNT", "10 per 15 minutes"),
        "LOGIN_LIMIT_PER_ADDRESS": os.environ.get("LOGIN_LIMIT_PER_ADDRESS", "50 per 15 minutes"),
        "SIGN_LIMIT_PER_ADDRESS": os.environ.get("SIGN_LIMIT_PER_ADDRESS", "60 per 10 minutes"),
        "SIGN_LIMIT_PER_EMAIL": os.environ.get("SIGN_LIMIT_PER_EMAIL", "6 per hour"),
        # Recipients recorded per fan-out job; transactional mail is served between pages.
        "FAN_OUT_PAGE": _int("FAN_OUT_PAGE", 2000),
        # Confirmations within this many seconds share one tally; the count trails by about this.
        "TALLY_DELAY_SECONDS": float(os.environ.get("TALLY_DELAY_SECONDS", 1)),
        # How long a sender of transactional mail waits for more before its job ends.
        "TRANSACTIONAL_LINGER_SECONDS": float(os.environ.get("TRANSACTIONAL_LINGER_SECONDS", 0.2)),
        # Anonymous views of busy pages are served from Redis for this long; 0 turns it off.
        "PAGE_CACHE_SECONDS": _int("PAGE_CACHE_SECONDS", 2),
        "API_RATE_LIMIT": os.environ.get("API_RATE_LIMIT", "300 per minute"),
        # Members a forming chapter needs before it becomes active.
        "CHAPTER_ACTIVE_AT": _int("CHAPTER_ACTIVE_AT", 3),
        "EMAIL_TOKEN_MAX_AGE": _int("EMAIL_TOKEN_MAX_AGE", 3 * 24 * 3600),
        "RESET_TOKEN_MAX_AGE": _int("RESET_TOKEN_MAX_AGE", 3600),
    }
