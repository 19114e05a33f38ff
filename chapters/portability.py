"""A chapter's data as OSDI JSON, and importing it into another Groundswell.

The export holds the group, the people who agreed to share their contact details with
organisers, the meetups with their attendances, and the decisions with their votes.
People who did not agree appear in attendances and votes without a person.

On import the importer is the chapter's only member, and its organiser. The file is the
importer's word, not the people's, so nobody else is enrolled or tied to an account here,
whether or not their email has one: the chapter's votes on decided proposals are kept
without names, and only the importer's own RSVPs and votes, found by their email address,
keep a name. Everyone else the file lists gets an invitation, kept against their address
and offered to whoever signs in with it confirmed; no mail is sent, since a file can list
any address.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select

from chapters import services
from chapters.models import (
    Chapter,
    ChapterError,
    ChapterInvitation,
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
from core.forms import unusual_characters
from core.places import city_slug
from core.urls import is_web_link
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


def _text(
    data: dict, key: str, maximum: int, *, required: bool = True, one_line: bool = True
) -> str | None:
    """Text held to what the forms take: bounded, without control characters, and on
    one line unless it is a description or a reason."""
    value = data.get(key)
    if value in (None, ""):
        if required:
            raise ChapterImportError(f"The file has no '{key}'.")
        return None
    if not isinstance(value, str) or len(value) > maximum:
        raise ChapterImportError(f"'{key}' must be text of at most {maximum} characters.")
    if unusual_characters(one_line).intersection(value):
        where = "control characters" if not one_line else "line breaks or control characters"
        raise ChapterImportError(f"'{key}' holds {where}, which it may not.")
    return value


def read_export(raw: bytes) -> Any:
    """The uploaded file, parsed; ChapterImportError when it is not JSON (nested past
    reason included) or holds text that is not Unicode, which no database would store."""
    try:
        data = json.loads(raw)
        json.dumps(data, ensure_ascii=False).encode()  # a lone surrogate cannot be written
    except UnicodeEncodeError:
        raise ChapterImportError("This file holds text that is not valid Unicode.") from None
    except (ValueError, RecursionError):
        raise ChapterImportError("This file is not JSON.") from None
    return data


def _link(data: dict, key: str) -> str | None:
    value = _text(data, key, 500, required=False)
    if value is not None and not is_web_link(value):
        raise ChapterImportError(f"'{key}' must be a link starting with https:// or http://.")
    return value


def _moment(data: dict, key: str, *, required: bool = True) -> datetime | None:
    raw = _text(data, key, 40, required=required)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ChapterImportError(f"'{key}' is not a date and time: {raw!r}.") from None
    try:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        moment = None  # 9999-12-31T23:59:59-05:00 parses, but in UTC it is past year 9999
    # Far from both ends, so the time shown in any chapter's zone is a date too.
    if moment is None or not services.FIRST_YEAR <= moment.year <= services.LAST_YEAR:
        raise ChapterImportError(
            f"'{key}' must be a date between the years {services.FIRST_YEAR} and "
            f"{services.LAST_YEAR}: {raw!r}."
        )
    return moment


def _minute_of(data: dict, key: str) -> datetime:
    """A meetup time to the minute, as forms take and show times: a start kept with its
    seconds would move to the whole minute when the meetup is next edited."""
    return _moment(data, key).replace(second=0, microsecond=0)


def _word(value: Any) -> str | None:
    """A value used as a lookup key: only text counts."""
    return value if isinstance(value, str) else None


def _list(data: dict, key: str) -> list[dict]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ChapterImportError(f"'{key}' must be a list of objects.")
    return value


def _address_of(entry: dict) -> str:
    """A person's email address as the file spells it, without surrounding spaces."""
    emails = _list(entry, "email_addresses")
    given = _text(emails[0], "address", 254) if emails else None
    if given is None:
        raise ChapterImportError("Every person needs an email address.")
    email = given.strip()
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        raise ChapterImportError(f"{given!r} is not an email address.") from None
    return email


def _email_of(entry: dict) -> str:
    """A person's email address as accounts are matched by it."""
    return normalise_account_email(_address_of(entry))


@dataclass(frozen=True)
class ImportedChapter:
    """The chapter made from a file, and how many people in it were invited to join."""

    chapter: Chapter
    invitations: int


def import_chapter(importer: Member, data: Any) -> ImportedChapter:
    """Recreate an exported chapter here, with the importer as an organiser, and invite
    everyone else the file lists."""
    services.require_confirmed(importer)
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
        description=_text(group, "description", 5000, one_line=False) or "",
        members_can_schedule=bool(group.get("groundswell:members_can_schedule")),
        quorum_percent=_bounded(group.get("groundswell:quorum_percent"), 0, 100, 20),
        quorum_minimum=_bounded(group.get("groundswell:quorum_minimum"), 1, 10000, 3),
        state=ChapterState.ACTIVE if group.get("status") == "active" else ChapterState.FORMING,
    )
    if chapter.state == ChapterState.ACTIVE:
        chapter.activated_at = utcnow()
    db.session.add(chapter)
    db.session.flush()
    people = _list(data, "osdi:people")
    own_refs = _join_as_importer(chapter, importer, people)
    invitations = _invite_the_others(chapter, importer, people)
    for event in _list(data, "osdi:events"):
        _import_meetup(chapter, event, importer, own_refs)
    for decision in _list(data, "groundswell:decisions"):
        _import_proposal(chapter, decision, importer, own_refs)
    db.session.commit()
    for meetup in services.upcoming_meetups([chapter.id], limit=1000):
        services.schedule_reminders(meetup)
    for proposal in services.proposals_of(chapter, ProposalState.OPEN, limit=1000):
        services.schedule_closing(proposal, utcnow())
    return ImportedChapter(chapter, invitations)


def _bounded(value: Any, low: int, high: int, default: int) -> int:
    return value if isinstance(value, int) and low <= value <= high else default


def _join_as_importer(chapter: Chapter, importer: Member, entries: list[dict]) -> set[str]:
    """Make the importer the chapter's organiser; returns the file's references to them.

    Nobody else in the file is looked up, so the result is the same whether or not
    their emails have accounts here.
    """
    own_email = normalise_account_email(importer.email)
    own_refs: set[str] = set()
    for entry in entries:
        if _email_of(entry) != own_email:
            continue
        refs = entry.get("identifiers") or []
        own_refs.update(ref for ref in (refs if isinstance(refs, list) else []) if _word(ref))
    db.session.add(
        Membership(
            chapter_id=chapter.id,
            member_id=importer.id,
            role=Role.ORGANISER,
            shares_contact=bool(own_refs),  # they agreed where they came from
        )
    )
    return own_refs


def _invite_the_others(chapter: Chapter, importer: Member, entries: list[dict]) -> int:
    """Keep an invitation for each other address the file lists, with the role it gives;
    returns how many. Contact sharing is not carried over: members choose it again here."""
    invited = {normalise_account_email(importer.email)}
    for entry in entries:
        address = _address_of(entry)
        key = normalise_account_email(address)
        if not key or key in invited:
            continue  # one invitation per address; the first listing counts
        invited.add(key)
        role = Role.ORGANISER if entry.get("groundswell:role") == Role.ORGANISER else Role.MEMBER
        db.session.add(
            ChapterInvitation(chapter_id=chapter.id, email=address, email_key=key, role=role)
        )
    return len(invited) - 1


def _is_importer(entry: dict, own_refs: set[str]) -> bool:
    return _word(entry.get("person")) in own_refs


def _import_meetup(chapter: Chapter, event: dict, importer: Member, own_refs: set[str]) -> None:
    location = event.get("location") if isinstance(event.get("location"), dict) else {}
    lines = location.get("address_lines") if isinstance(location.get("address_lines"), list) else []
    meetup = Meetup(
        chapter_id=chapter.id,
        title=_text(event, "title", 150),
        description=_text(event, "description", 5000, required=False, one_line=False) or "",
        venue=_text(location, "venue", 150, required=False),
        address=_text(
            {"address_lines": lines[0] if lines else None}, "address_lines", 300, required=False
        ),
        online_link=_link(event, "online_link"),
        capacity=_bounded(event.get("capacity"), 1, 100000, None),
        state=MeetupState.CANCELLED
        if event.get("status") == "cancelled"
        else MeetupState.SCHEDULED,
    )
    starts, ends = _minute_of(event, "start_date"), _minute_of(event, "end_date")
    try:
        meetup.set_times(starts, ends)
    except ChapterError as error:  # the file's times, not a form's
        raise ChapterImportError(f"{meetup.title}: {error}") from None
    db.session.add(meetup)
    db.session.flush()
    # An RSVP is a member's place here, so only the importer's own comes along.
    for attendance in _list(event, "osdi:attendances"):
        status = ATTENDANCE.get(_word(attendance.get("status")))
        if status is None or not _is_importer(attendance, own_refs):
            continue
        db.session.add(
            Rsvp(
                meetup_id=meetup.id,
                member_id=importer.id,
                status=status,
                attended=bool(attendance.get("attended")),
                responded_at=_moment(attendance, "created_date", required=False) or utcnow(),
                waitlisted_at=_moment(attendance, "waitlisted_date", required=False),
            )
        )
        break


def _import_proposal(
    chapter: Chapter, decision: dict, importer: Member, own_refs: set[str]
) -> None:
    closed = decision.get("status") == ProposalState.CLOSED
    outcome = _word(decision.get("outcome"))
    if closed and outcome not in set(Outcome):
        raise ChapterImportError("A closed decision needs its outcome.")
    proposal = Proposal(
        chapter_id=chapter.id,
        title=_text(decision, "title", 150),
        details=_text(decision, "details", 5000, one_line=False) or "",
        closes_at=_moment(decision, "closes_date"),
        state=ProposalState.CLOSED if closed else ProposalState.OPEN,
        outcome=outcome if closed else None,
        closed_at=_moment(decision, "closes_date") if closed else None,
        votes_needed=_bounded(decision.get("votes_needed"), 0, 10**6, None),
        members_at_close=_bounded(decision.get("members_at_close"), 0, 10**6, None),
        **chapter.quorum_rules(),
    )
    db.session.add(proposal)
    db.session.flush()
    importer_voted = False
    for vote in _list(decision, "votes"):
        choice = _word(vote.get("choice"))
        if choice not in set(Choice):
            raise ChapterImportError(f"Unknown vote {vote.get('choice')!r}.")
        mine = _is_importer(vote, own_refs)
        if (mine and importer_voted) or not (closed or mine):
            continue  # one vote each; an open proposal is decided by the members here
        importer_voted = importer_voted or mine
        member_id = importer.id if mine else None  # a decided vote is kept without a name
        db.session.add(
            Vote(
                proposal_id=proposal.id,
                member_id=member_id,
                choice=choice,
                reason=_text(vote, "reason", 1000, required=False, one_line=False),
            )
        )
