"""Campaigns: member-led local campaigns with a decision-maker tracker and a funding disclosure."""

from flask import Blueprint

bp = Blueprint("campaigns", __name__)

from campaigns import api, demo, jobs, views  # noqa: E402, F401  (routes, messages, demo data)
