"""Notifications: email and in-app notices, delivered by RQ workers."""

from flask import Blueprint

bp = Blueprint("notifications", __name__)

from notifications import jobs, views  # noqa: E402, F401  (routes and periodic jobs)
