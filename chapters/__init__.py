"""Chapters: city groups, their meetups and their decisions."""

from flask import Blueprint

bp = Blueprint("chapters", __name__)
