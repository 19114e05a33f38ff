"""A read replica: feeds and exports read from it, everything else from the primary.

The replica here is a second SQLite database holding a snapshot of the primary, which
is what a lagging replica looks like to the app: rows written after the snapshot are
on the primary only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask_migrate import upgrade
from icalendar import Calendar
from sqlalchemy import select

from core.app import create_app
from core.db import REPLICA, reads_from_replica
from core.extensions import db
from members.models import Member
from tests.factories import PASSWORD, make_chapter, make_meetup, make_member


@pytest.fixture
def replicated(app: Flask, tmp_path: Path) -> Iterator[tuple[Flask, Path, Path]]:
    primary, replica = tmp_path / "primary.db", tmp_path / "replica.db"
    replicated = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{primary}",
            "SQLALCHEMY_BINDS": {REPLICA: f"sqlite:///{replica}"},
            "REDIS_URL": app.config["REDIS_URL"],
            "MAIL_URL": "outbox",
            "BASE_URL": "http://localhost",
        }
    )
    with replicated.app_context():
        upgrade()
    yield replicated, primary, replica
    with replicated.app_context():
        for engine in db.engines.values():
            engine.dispose()


def _replicate(primary: Path, replica: Path) -> None:
    """Bring the replica up to date with the primary, as streaming replication would."""
    source, target = sqlite3.connect(primary), sqlite3.connect(replica)
    with target:
        source.backup(target)
    source.close()
    target.close()


def _summaries(response) -> list[str]:
    assert response.status_code == 200, response.status_code
    return sorted(str(e["summary"]) for e in Calendar.from_ical(response.data).walk("VEVENT"))


def test_a_chapter_feed_is_served_from_the_replica_and_pages_from_the_primary(replicated):
    app, primary, replica = replicated
    with app.app_context():
        olga = make_member()
        chapter = make_chapter(olga)
        make_meetup(chapter, olga, title="Planning night")
        _replicate(primary, replica)
        late = make_meetup(chapter, olga, starts_in=timedelta(days=9), title="Picnic day")
        slug, late_id = chapter.slug, late.id

    client = app.test_client()
    assert _summaries(client.get(f"/chapters/{slug}/calendar.ics")) == ["Planning night"]
    assert "Picnic day" in client.get(f"/meetups/{late_id}").text  # pages read the primary
    _replicate(primary, replica)
    assert _summaries(client.get(f"/chapters/{slug}/calendar.ics")) == [
        "Picnic day",
        "Planning night",
    ]


def test_a_request_on_the_replica_still_writes_to_the_primary(replicated):
    app, primary, replica = replicated
    with app.app_context():
        make_member("early@example.org", name="Early")
        _replicate(primary, replica)

    @reads_from_replica
    def register_late_member() -> list[str]:
        db.session.add(
            Member(display_name="Late", email="late@example.org", password=PASSWORD, city="Porto")
        )
        db.session.commit()
        return list(db.session.scalars(select(Member.email).order_by(Member.email)))

    with app.test_request_context():
        assert register_late_member() == ["early@example.org"]  # the replica lags
    with app.app_context():
        on_primary = db.session.scalars(select(Member.email).order_by(Member.email))
        assert list(on_primary) == ["early@example.org", "late@example.org"]


def test_without_a_replica_marked_reads_use_the_primary(ctx):
    @reads_from_replica
    def members() -> list[str]:
        return list(db.session.scalars(select(Member.email)))

    make_member("only@example.org")
    assert members() == ["only@example.org"]
