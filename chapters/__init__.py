"""Chapters: city groups, their meetups and their decisions."""

from flask import Blueprint

bp = Blueprint("chapters", __name__)

from chapters import api, demo, jobs, views  # noqa: E402, F401  (routes, messages, demo data)
