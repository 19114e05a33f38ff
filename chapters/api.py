"""Chapters and meetups in the API: OSDI groups, events and attendances.

Who is going is personal data here: attendances carry the person only for a token of the
chapter's organisers, and then the email and city only of members who agreed to share
their contact details with organisers (the same consent as the chapter export).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from chapters import bp, services
from chapters.models import Chapter, Meetup, Rsvp, RsvpStatus
from core.api import (
    LINKS_SCHEMA,
    ApiProblem,
    api_member,
    api_route,
    collection,
    collection_schema,
    hal,
    identifiers,
    iso,
    link,
    modified_filter,
    person,
    person_schema,
    schema,
)
from core.extensions import db
from members.models import Member

ATTENDANCE_STATUS = {
    RsvpStatus.GOING: "accepted",
    RsvpStatus.WAITLISTED: "tentative",
    RsvpStatus.NOT_GOING: "declined",
}

EVENT = schema(
    "Event",
    {
        "type": "object",
        "required": ["identifiers", "title", "start_date", "end_date", "status", "total_accepted"],
        "properties": {
            "identifiers": {"type": "array", "items": {"type": "string"}},
            "origin_system": {"type": "string"},
            "created_date": {"type": "string", "format": "date-time"},
            "modified_date": {"type": "string", "format": "date-time"},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "start_date": {"type": "string", "format": "date-time"},
            "end_date": {"type": "string", "format": "date-time"},
            "location": {
                "type": "object",
                "properties": {
                    "venue": {"type": "string"},
                    "address_lines": {"type": "array", "items": {"type": "string"}},
                    "locality": {"type": "string"},
                },
            },
            "online_link": {"type": "string"},
            "capacity": {"type": "integer", "nullable": True},
            "status": {"type": "string", "enum": ["confirmed", "cancelled"]},
            "total_accepted": {"type": "integer", "minimum": 0},
            "total_waitlisted": {"type": "integer", "minimum": 0},
            "browser_url": {"type": "string"},
            "_links": LINKS_SCHEMA,
        },
    },
)
ATTENDANCE = schema(
    "Attendance",
    {
        "type": "object",
        "required": ["identifiers", "status"],
        "properties": {
            "identifiers": {"type": "array", "items": {"type": "string"}},
            "created_date": {"type": "string", "format": "date-time"},
            "modified_date": {"type": "string", "format": "date-time"},
            "status": {"type": "string", "enum": sorted(ATTENDANCE_STATUS.values())},
            "attended": {"type": "boolean"},
            "person": person_schema(),
            "_links": LINKS_SCHEMA,
        },
    },
)
GROUP = schema(
    "Group",
    {
        "type": "object",
        "required": ["identifiers", "name", "status", "total_members"],
        "properties": {
            "identifiers": {"type": "array", "items": {"type": "string"}},
            "origin_system": {"type": "string"},
            "created_date": {"type": "string", "format": "date-time"},
            "modified_date": {"type": "string", "format": "date-time"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "locality": {"type": "string"},
            "time_zone": {"type": "string"},
            "status": {"type": "string", "enum": ["forming", "active"]},
            "total_members": {"type": "integer", "minimum": 0},
            "browser_url": {"type": "string"},
            "_links": LINKS_SCHEMA,
        },
    },
)
EVENTS = collection_schema("Events", EVENT)
ATTENDANCES = collection_schema("Attendances", ATTENDANCE)
GROUPS = collection_schema("Groups", GROUP)


def represent_event(meetup: Meetup, counts: dict | None = None) -> dict[str, Any]:
    counts = counts or services.rsvp_counts([meetup.id])
    location: dict[str, Any] = {"locality": meetup.chapter.city}
    if meetup.venue:
        location["venue"] = meetup.venue
    if meetup.address:
        location["address_lines"] = [meetup.address]
    body: dict[str, Any] = {
        "identifiers": identifiers("meetup", meetup.id),
        "origin_system": "Groundswell",
        "created_date": iso(meetup.created_at),
        "modified_date": iso(meetup.updated_at),
        "title": meetup.title,
        "description": meetup.description,
        "start_date": iso(meetup.starts_at),
        "end_date": iso(meetup.ends_at),
        "location": location,
        "capacity": meetup.capacity,
        "status": "cancelled" if meetup.is_cancelled else "confirmed",
        "total_accepted": counts[meetup.id][RsvpStatus.GOING],
        "total_waitlisted": counts[meetup.id][RsvpStatus.WAITLISTED],
        "browser_url": link("chapters.meetup", meetup_id=meetup.id)["href"],
        "_links": {
            "self": link("chapters.api_event", meetup_id=meetup.id),
            "osdi:attendances": link("chapters.api_attendances", meetup_id=meetup.id),
            "osdi:group": link("chapters.api_group", chapter_id=meetup.chapter_id),
        },
    }
    if meetup.online_link and meetup.chapter.membership_of(api_member()) is not None:
        body["online_link"] = meetup.online_link  # for the chapter's members only
    return body


def represent_attendance(rsvp: Rsvp, audience: Audience) -> dict[str, Any]:
    body: dict[str, Any] = {
        "identifiers": identifiers("rsvp", rsvp.id),
        "created_date": iso(rsvp.responded_at),
        "modified_date": iso(rsvp.responded_at),
        "status": ATTENDANCE_STATUS[RsvpStatus(rsvp.status)],
        "attended": rsvp.attended,
        "_links": {
            "self": link("chapters.api_attendance", meetup_id=rsvp.meetup_id, rsvp_id=rsvp.id),
            "osdi:event": link("chapters.api_event", meetup_id=rsvp.meetup_id),
        },
    }
    if audience.organiser:
        body["person"] = _attendee(rsvp.member, audience)
    return body


@dataclass(frozen=True)
class Audience:
    """Who asks about a chapter's RSVPs: one of its organisers or not, and which members
    agreed to share their contact details with its organisers."""

    organiser: bool
    sharing: frozenset[int] = frozenset()


def _audience(chapter: Chapter) -> Audience:
    if not chapter.is_organised_by(api_member()):
        return Audience(organiser=False)
    sharing = frozenset(m.member_id for m in chapter.memberships if m.shares_contact)
    return Audience(organiser=True, sharing=sharing)


def _attendee(member: Member, audience: Audience) -> dict[str, Any]:
    """An RSVP'er as organisers see them: the name, and the email and city only of those
    who agreed to share them, as in the chapter export."""
    if member.id not in audience.sharing:
        return person(member.display_name)
    return person(member.display_name, member.email, member.city)


def represent_group(chapter: Chapter, members: int | None = None) -> dict[str, Any]:
    return {
        "identifiers": identifiers("chapter", chapter.id),
        "origin_system": "Groundswell",
        "created_date": iso(chapter.created_at),
        "modified_date": iso(chapter.updated_at),
        "name": chapter.name,
        "description": chapter.description,
        "locality": chapter.city,
        "time_zone": chapter.time_zone,
        "status": chapter.state,
        "total_members": services.member_count(chapter) if members is None else members,
        "browser_url": link("chapters.show", slug=chapter.slug)["href"],
        "_links": {"self": link("chapters.api_group", chapter_id=chapter.id)},
    }


def _meetup(meetup_id: int) -> Meetup:
    meetup = db.session.get(Meetup, meetup_id)
    if meetup is None:
        raise ApiProblem(404, "There is no event with that id.")
    return meetup


@api_route(
    bp,
    "/events",
    summary="Meetups, soonest start first.",
    response=EVENTS,
    paged=True,
    entry="osdi:events",
)
def api_events():
    query = select(Meetup).where(*modified_filter(Meetup.updated_at))
    return collection(
        query,
        order_by=[Meetup.starts_at, Meetup.id],
        rel="osdi:events",
        represent=represent_event,
        endpoint="chapters.api_events",
    )


@api_route(bp, "/events/<id:meetup_id>", summary="One meetup.", response=EVENT)
def api_event(meetup_id: int):
    return hal(represent_event(_meetup(meetup_id)))


@api_route(
    bp,
    "/events/<id:meetup_id>/attendances",
    summary=(
        "RSVPs to a meetup. The chapter organisers' token also sees each person's name, "
        "and the email and city of those who share their contact details with organisers."
    ),
    response=ATTENDANCES,
    paged=True,
    personal=True,
)
def api_attendances(meetup_id: int):
    meetup = _meetup(meetup_id)
    audience = _audience(meetup.chapter)
    query = select(Rsvp).where(Rsvp.meetup_id == meetup.id, *modified_filter(Rsvp.responded_at))
    return collection(
        query,
        order_by=[Rsvp.id],
        rel="osdi:attendances",
        represent=lambda rsvp: represent_attendance(rsvp, audience),
        endpoint="chapters.api_attendances",
        values={"meetup_id": meetup.id},
    )


@api_route(
    bp,
    "/events/<id:meetup_id>/attendances/<id:rsvp_id>",
    summary="One RSVP; personal data as in the list of RSVPs.",
    response=ATTENDANCE,
    personal=True,
)
def api_attendance(meetup_id: int, rsvp_id: int):
    meetup = _meetup(meetup_id)
    rsvp = db.session.get(Rsvp, rsvp_id)
    if rsvp is None or rsvp.meetup_id != meetup.id:
        raise ApiProblem(404, "There is no attendance with that id on this event.")
    return hal(represent_attendance(rsvp, _audience(meetup.chapter)))


@api_route(
    bp,
    "/groups",
    summary="Chapters, oldest first.",
    response=GROUPS,
    paged=True,
    entry="osdi:groups",
)
def api_groups():
    query = select(Chapter).where(*modified_filter(Chapter.updated_at))
    return collection(
        query,
        order_by=[Chapter.id],
        rel="osdi:groups",
        represent=represent_group,
        endpoint="chapters.api_groups",
    )


@api_route(bp, "/groups/<id:chapter_id>", summary="One chapter.", response=GROUP)
def api_group(chapter_id: int):
    chapter = db.session.get(Chapter, chapter_id)
    if chapter is None:
        raise ApiProblem(404, "There is no group with that id.")
    return hal(represent_group(chapter))
