"""Campaigns: member-led local campaigns with a funding disclosure."""

from flask import Blueprint

bp = Blueprint("campaigns", __name__)
