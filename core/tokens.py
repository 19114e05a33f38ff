"""Signed, time-limited tokens for links in emails (confirm, reset, withdraw, unsubscribe)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app
from itsdangerous import BadData, URLSafeTimedSerializer


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=f"groundswell.{purpose}")


def make_token(purpose: str, payload: Any) -> str:
    """Sign ``payload`` for one ``purpose``; a token for one purpose is useless for another."""
    return _serializer(purpose).dumps(payload)


def read_token(purpose: str, token: str, max_age: int | None = None) -> Any | None:
    """The payload of a valid token, or None if it is forged, mangled or older than ``max_age``."""
    try:
        return _serializer(purpose).loads(token, max_age=max_age)
    except BadData:
        return None


def read_token_issued(
    purpose: str, token: str, max_age: int | None = None
) -> tuple[Any, datetime] | None:
    """The payload of a valid token and when it was signed (to the second), or None."""
    try:
        return _serializer(purpose).loads(token, max_age=max_age, return_timestamp=True)
    except BadData:
        return None
