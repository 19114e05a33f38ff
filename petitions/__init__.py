"""Petitions: launch, sign with a confirmed email, and exact tallies kept by RQ workers."""

from flask import Blueprint

bp = Blueprint("petitions", __name__)

from petitions import api, demo, jobs, views  # noqa: E402, F401  (routes, jobs, demo data)
