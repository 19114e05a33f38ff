"""Petitions: launch, sign with a confirmed email, exact tallies."""

from flask import Blueprint

bp = Blueprint("petitions", __name__)
