"""Notifications: email and in-app notices, delivered by RQ workers."""

from flask import Blueprint

bp = Blueprint("notifications", __name__)
