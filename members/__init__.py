"""Members: accounts, sign-in, password reset, profiles and personal data."""

from flask import Blueprint

bp = Blueprint("members", __name__)

from members import demo, views  # noqa: E402, F401  (routes and demo data register on import)
