"""A chapter's data as OSDI JSON, and importing it into another Groundswell.

The export holds the group, the people who agreed to share their contact details with
organisers, the meetups with their attendances, and the decisions with their votes.
People who did not agree appear in attendances and votes without a person.

On import, a person whose email belongs to an account here joins as that member; anyone
else gets an unconfirmed account that they claim by resetting its password.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from chapters import services
from chapters.models import (
    Chapter,
    ChapterError,
    ChapterState,
    Choice,
    Meetup,
    MeetupState,
    Membership,
    Outcome,
    Proposal,
    ProposalState,
    Role,
    Rsvp,
    RsvpStatus,
    Vote,
)
from core.api import iso, person
from core.db import utcnow
from core.extensions import db
from core.places import city_slug
from members.models import Member, normalise_account_email

FORMAT = "groundswell-chapter-export/1"
ATTENDANCE = {
    "accepted": RsvpStatus.GOING,
    "tentative": RsvpStatus.WAITLISTED,
    "declined": RsvpStatus.NOT_GOING,
}
ATTENDANCE_NAMES = {status: name for name, status in ATTENDANCE.items()}


class ChapterImportError(ChapterError):
    """The file is not a chapter export we can read."""


def _ref(member_id: int | None, sharing: set[int]) -> str | None:
    return f"person-{member_id}" if member_id in sharing else None


def export_chapter(chapter: Chapter) -> dict[str, Any]:
    """Everything a chapter takes with it, with personal data only of those who agreed."""
    sharing = {m.member_id for m in chapter.memberships if m.shares_contact}
    people = [
        {
            "identifiers": [_ref(m.member_id, sharing)],
            **person(m.member.display_name, m.member.email, m.member.city),
            "groundswell:role": m.role,
            "groundswell:joined_date": iso(m.joined_at),
        }
        for m in chapter.memberships
        if m.member_id in sharing
    ]
    meetups = db.session.scalars(
        select(Meetup).where(Meetup.chapter_id == chapter.id).order_by(Meetup.starts_at)
    ).all()
    proposals = db.session.scalars(
        select(Proposal).where(Proposal.chapter_id == chapter.id).order_by(Proposal.id)
    ).all()
    return {
        "format": FORMAT,
        "origin_system": "Groundswell",
        "exported_date": iso(utcnow()),
        "osdi:group": {
            "name": chapter.name,
            "description": chapter.description,
            "locality": chapter.city,
            "time_zone": chapter.time_zone,
            "status": chapter.state,
            "created_date": iso(chapter.created_at),
            "groundswell:members_can_schedule": chapter.members_can_schedule,
            "groundswell:quorum_percent": chapter.quorum_percent,
            "groundswell:quorum_minimum": chapter.quorum_minimum,
            "total_members": len(chapter.memberships),
        },
        "osdi:people": people,
        "osdi:events": [_export_meetup(m, sharing) for m in meetups],
        "groundswell:decisions": [_export_proposal(p, sharing) for p in proposals],
    }


def _export_meetup(meetup: Meetup, sharing: set[int]) -> dict[str, Any]:
    rsvps = db.session.scalars(select(Rsvp).where(Rsvp.meetup_id == meetup.id)).all()
    return {
        "title": meetup.title,
        "description": meetup.description,
        "start_date": iso(meetup.starts_at),
        "end_date": iso(meetup.ends_at),
        "location": {"venue": meetup.venue, "address_lines": [meetup.address or ""]},
        "online_link": meetup.online_link,
        "capacity": meetup.capacity,
        "status": "cancelled" if meetup.is_cancelled else "confirmed",
        "osdi:attendances": [
            {
                "status": ATTENDANCE_NAMES[RsvpStatus(r.status)],
                "attended": r.attended,
                "created_date": iso(r.responded_at),
                "waitlisted_date": iso(r.waitlisted_at),
                "person": _ref(r.member_id, sharing),
            }
            for r in rsvps
        ],
    }


def _export_proposal(proposal: Proposal, sharing: set[int]) -> dict[str, Any]:
    return {
        "title": proposal.title,
        "details": proposal.details,
        "created_date": iso(proposal.created_at),
        "closes_date": iso(proposal.closes_at),
        "status": proposal.state,
        "outcome": proposal.outcome,
        "votes_needed": proposal.votes_needed,
        "members_at_close": proposal.members_at_close,
        "votes": [
            {"choice": v.choice, "reason": v.reason, "person": _ref(v.member_id, sharing)}
            for v in services.votes_on(proposal)
        ],
    }


# --- import ------------------------------------------------------------------------------


def _text(data: dict, key: str, maximum: int, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value in (None, ""):
        if required:
            raise ChapterImportError(f"The file has no '{key}'.")
        return None
    if not isinstance(value, str) or len(value) > maximum or "\x00" in value:
        raise ChapterImportError(f"'{key}' must be text of at most {maximum} characters.")
    return value


def _moment(data: dict, key: str, *, required: bool = True) -> datetime | None:
    raw = _text(data, key, 40, required=required)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ChapterImportError(f"'{key}' is not a date and time: {raw!r}.") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _word(value: Any) -> str | None:
    """A value used as a lookup key: only text counts."""
    return value if isinstance(value, str) else None


def _list(data: dict, key: str) -> list[dict]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ChapterImportError(f"'{key}' must be a list of objects.")
    return value


def _account_for(entry: dict) -> Member:
    """The member here with this email, or a new unconfirmed account to be claimed."""
    emails = _list(entry, "email_addresses")
    email = _text(emails[0], "address", 254) if emails else None
    if email is None:
        raise ChapterImportError("Every person needs an email address.")
    email = normalise_account_email(email)
    member = db.session.scalar(select(Member).where(Member.email == email))
    if member is not None:
        return member
    name = " ".join(
        p
        for p in (_text(entry, "given_name", 50), _text(entry, "family_name", 50, required=False))
        if p
    )
    localities = _list(entry, "postal_addresses")
    city = (_text(localities[0], "locality", 80, required=False) if localities else None) or ""
    member = Member(display_name=name, email=email, password=secrets.token_urlsafe(24), city=city)
    db.session.add(member)
    db.session.flush()
    return member


def import_chapter(importer: Member, data: Any) -> Chapter:
    """Recreate an exported chapter here, with the importer as an organiser."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ChapterImportError("This is not a Groundswell chapter export.")
    group = data.get("osdi:group")
    if not isinstance(group, dict):
        raise ChapterImportError("The file has no group.")
    time_zone = _text(group, "time_zone", 64)
    if time_zone not in services.TIME_ZONES:
        raise ChapterImportError(f"Unknown time zone {time_zone!r}.")
    name, city = _text(group, "name", 100), _text(group, "locality", 80)
    chapter = Chapter(
        slug=services.unique_slug(name, city),
        name=name,
        city=city,
        city_slug=city_slug(city),
        time_zone=time_zone,
        description=_text(group, "description", 5000) or "",
        members_can_schedule=bool(group.get("groundswell:members_can_schedule")),
        quorum_percent=_bounded(group.get("groundswell:quorum_percent"), 0, 100, 20),
        quorum_minimum=_bounded(group.get("groundswell:quorum_minimum"), 1, 10000, 3),
        state=ChapterState.ACTIVE if group.get("status") == "active" else ChapterState.FORMING,
    )
    if chapter.state == ChapterState.ACTIVE:
        chapter.activated_at = utcnow()
    db.session.add(chapter)
    db.session.flush()
    people = _import_people(chapter, importer, _list(data, "osdi:people"))
    for event in _list(data, "osdi:events"):
        _import_meetup(chapter, event, people)
    for decision in _list(data, "groundswell:decisions"):
        _import_proposal(chapter, decision, people)
    db.session.commit()
    for meetup in services.upcoming_meetups([chapter.id], limit=1000):
        services.schedule_reminders(meetup)
    for proposal in services.proposals_of(chapter, ProposalState.OPEN, limit=1000):
        services.schedule_closing(proposal, utcnow())
    return chapter


def _bounded(value: Any, low: int, high: int, default: int) -> int:
    return value if isinstance(value, int) and low <= value <= high else default


def _import_people(chapter: Chapter, importer: Member, entries: list[dict]) -> dict[str, int]:
    people: dict[str, int] = {}
    roles = {importer.id: Role.ORGANISER}
    for entry in entries:
        member = _account_for(entry)
        refs = entry.get("identifiers") or []
        for ref in refs if isinstance(refs, list) else []:
            if isinstance(ref, str):
                people[ref] = member.id
        role = Role.ORGANISER if entry.get("groundswell:role") == Role.ORGANISER else Role.MEMBER
        roles.setdefault(member.id, role)
    for member_id, role in roles.items():
        db.session.add(
            Membership(
                chapter_id=chapter.id,
                member_id=member_id,
                role=role,
                shares_contact=member_id in people.values(),  # they agreed where they came from
            )
        )
    return people


def _import_meetup(chapter: Chapter, event: dict, people: dict[str, int]) -> None:
    location = event.get("location") if isinstance(event.get("location"), dict) else {}
    lines = location.get("address_lines") if isinstance(location.get("address_lines"), list) else []
    meetup = Meetup(
        chapter_id=chapter.id,
        title=_text(event, "title", 150),
        description=_text(event, "description", 5000, required=False) or "",
        venue=_text(location, "venue", 150, required=False),
        address=(lines[0] or None) if lines and isinstance(lines[0], str) else None,
        online_link=_text(event, "online_link", 500, required=False),
        capacity=_bounded(event.get("capacity"), 1, 100000, None),
        state=MeetupState.CANCELLED
        if event.get("status") == "cancelled"
        else MeetupState.SCHEDULED,
    )
    meetup.set_times(_moment(event, "start_date"), _moment(event, "end_date"))
    db.session.add(meetup)
    db.session.flush()
    seen: set[int] = set()
    for attendance in _list(event, "osdi:attendances"):
        member_id = people.get(_word(attendance.get("person")))
        status = ATTENDANCE.get(_word(attendance.get("status")))
        if member_id is None or status is None or member_id in seen:
            continue  # those who did not share their details stay out
        seen.add(member_id)
        db.session.add(
            Rsvp(
                meetup_id=meetup.id,
                member_id=member_id,
                status=status,
                attended=bool(attendance.get("attended")),
                responded_at=_moment(attendance, "created_date", required=False) or utcnow(),
                waitlisted_at=_moment(attendance, "waitlisted_date", required=False),
            )
        )


def _import_proposal(chapter: Chapter, decision: dict, people: dict[str, int]) -> None:
    closed = decision.get("status") == ProposalState.CLOSED
    outcome = _word(decision.get("outcome"))
    if closed and outcome not in set(Outcome):
        raise ChapterImportError("A closed decision needs its outcome.")
    proposal = Proposal(
        chapter_id=chapter.id,
        title=_text(decision, "title", 150),
        details=_text(decision, "details", 5000) or "",
        closes_at=_moment(decision, "closes_date"),
        state=ProposalState.CLOSED if closed else ProposalState.OPEN,
        outcome=outcome if closed else None,
        closed_at=_moment(decision, "closes_date") if closed else None,
        votes_needed=_bounded(decision.get("votes_needed"), 0, 10**6, None),
        members_at_close=_bounded(decision.get("members_at_close"), 0, 10**6, None),
    )
    db.session.add(proposal)
    db.session.flush()
    voted: set[int] = set()
    for vote in _list(decision, "votes"):
        choice = _word(vote.get("choice"))
        if choice not in set(Choice):
            raise ChapterImportError(f"Unknown vote {vote.get('choice')!r}.")
        member_id = people.get(_word(vote.get("person")))
        if member_id in voted:
            continue
        if member_id is not None:
            voted.add(member_id)
        db.session.add(
            Vote(
                proposal_id=proposal.id,
                member_id=member_id,
                choice=choice,
                reason=_text(vote, "reason", 1000, required=False),
            )
        )
