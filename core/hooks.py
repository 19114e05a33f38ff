"""Signals through which features contribute to shared pages without importing each other.

- ``home_sections(member)``: return rendered HTML for the home page, or None.
- ``city_sections(city_slug, within="")``: return rendered HTML for the page of one city,
  or None. A chapter's page asks with ``within="chapter"`` for the city's other work.
- ``linked_work(kind, ids)``: the feature owning ``kind`` ("petition", "meetup") returns
  ``{id: WorkSummary}`` for the ids it knows.
- ``work_organised_by(kind, target_id, member)``: the owning feature returns True when the
  member organises that petition or meetup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from blinker import Namespace
from flask import current_app

signals = Namespace()

home_sections = signals.signal("home-sections")
city_sections = signals.signal("city-sections")
linked_work = signals.signal("linked-work")
work_organised_by = signals.signal("work-organised-by")


@dataclass(frozen=True)
class WorkSummary:
    """A line about a petition or meetup, for pages of other features."""

    title: str
    endpoint: str  # with ``values``, for url_for when a page shows it
    values: dict
    detail: str
    when: datetime | None


def collect(signal, **arguments) -> list:
    """Every non-empty answer to ``signal``."""
    answers = signal.send(current_app._get_current_object(), **arguments)
    return [answer for _, answer in answers if answer]
