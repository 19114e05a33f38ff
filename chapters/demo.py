"""Demo chapters for ``flask seed-demo``: one active, with a meetup and a vote; one forming."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from sqlalchemy import select

from chapters import services
from chapters.models import Choice
from core.cli import demo_seeder
from core.db import utcnow
from core.extensions import db
from members.models import Member


def _member(email: str) -> Member:
    return db.session.scalar(select(Member).where(Member.email == email))


def _evening_in(days: int, zone, hour: int) -> datetime:
    day = (utcnow().astimezone(zone) + timedelta(days=days)).date()
    return services.local_to_utc(datetime.combine(day, time(hour, 30)), zone)


@demo_seeder(order=40)
def seed_chapters() -> list[str]:
    """Lisbon: active, a full meetup with a waitlist, an open proposal. Berlin: forming."""
    demo, ana, sam, jonas = (
        _member(f"{name}@groundswell.example.org") for name in ("demo", "ana", "sam", "jonas")
    )
    lisbon = services.create_chapter(
        demo,
        name="Lisbon Hosts and Riders",
        city="Lisbon",
        time_zone="Europe/Lisbon",
        description="Hosts, drivers and couriers in Lisbon who want fair, local rules.",
    )
    for member in (ana, sam):
        services.join(lisbon, member)
    starts = _evening_in(3, lisbon.zone, 18)
    meetup = services.schedule_meetup(
        lisbon,
        demo,
        services.MeetupDetails(
            title="Planning night: the Alfama rental cap",
            description="We plan the next month of the campaign. Bring a friend.",
            starts_at=starts,
            ends_at=starts + timedelta(hours=2),
            venue="Café Lua",
            address="Rua dos Remédios 12, Lisbon",
            online_link=None,
            capacity=2,
        ),
    )
    for member in (demo, ana, sam):  # the third joins the waitlist
        services.respond(meetup, member, going=True)
    proposal = services.open_proposal(
        lisbon,
        ana,
        title="Hold our meetups in a step-free venue",
        details="From next month, we only book venues with step-free access.",
        closes_at=utcnow() + timedelta(days=5),
    )
    services.cast_vote(proposal, demo, Choice.AGREE, "Everyone should be able to come.")

    services.create_chapter(
        jonas,
        name="Berlin Couriers",
        city="Berlin",
        time_zone="Europe/Berlin",
        description="Couriers in Berlin organising for pay that covers waiting time.",
    )
    return ["Demo chapters: 2 (Lisbon is active; Berlin is forming)"]
