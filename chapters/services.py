"""The chapter story: founding and joining chapters, meetups with RSVPs, waitlists,
reminders and calendars, and proposals that members vote on.

Views and jobs call these functions. Notifications go through
:func:`notifications.services.notify`, which also commits the change it reports.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, available_timezones

from flask import current_app
from icalendar import Calendar, Event, vText
from redis.exceptions import RedisError
from slugify import slugify
from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from chapters.models import (
    INVITATION_LIFETIME,
    CalendarKey,
    Chapter,
    ChapterError,
    ChapterInvitation,
    Choice,
    InvitationState,
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
from core.db import Page, dialect_insert, first_copy, paginate, utcnow
from core.extensions import db
from core.hooks import WorkSummary, linked_work, work_organised_by
from core.places import city_slug
from core.queue import cancel_job, enqueue
from core.urls import external_url
from members.models import Member, invitation_key
from members.signals import account_deleting, data_export, password_changed
from notifications.services import Recipient, notify

PER_PAGE = 20
TIME_ZONES = sorted(available_timezones() - {"localtime", "Factory"})

# Reminders go this long before a meetup starts, each within a short window so that a
# meetup scheduled at short notice is not announced and reminded at once.
REMINDER_LEADS = {"24h": timedelta(hours=24), "1h": timedelta(hours=1)}
REMINDER_WINDOWS = {"24h": timedelta(hours=2), "1h": timedelta(minutes=30)}
SCHEDULER_SLACK = timedelta(minutes=1)


# Anyone can register with any address, so taking part waits until the address is
# confirmed, as signing in one click and following do: otherwise an account made with
# someone else's address could join, vote, and have them mailed meetup news.
NOT_CONFIRMED = (
    "Please confirm your email address first: follow the link we emailed you, or have it "
    "sent again from your account page."
)


def require_confirmed(member: Member) -> None:
    """Refuse a member whose email address is not confirmed yet."""
    if not member.is_confirmed:
        raise ChapterError(NOT_CONFIRMED)


SHORTEST_VOTE = timedelta(hours=1)
LONGEST_VOTE = timedelta(days=90)
CLOSING_SOON_BEFORE = timedelta(hours=24)


# --- times -------------------------------------------------------------------------------

# The years a chapter's dates may fall in: far from the calendar's ends, so that every time
# zone can show them.
FIRST_YEAR, LAST_YEAR = 1900, 9000


def local_to_utc(local: datetime, zone: ZoneInfo, was: datetime | None = None) -> datetime:
    """A wall-clock time in ``zone`` as UTC; refuses a time the clocks skip over, and one
    outside the years a chapter deals in.

    A time that reads as ``was`` does, to the minute the form shows, keeps that instant:
    in an hour the clocks repeat, the wall clock alone would take its first occurrence and
    move a time left unchanged, and a stored time with seconds would lose them.
    """
    if was is not None and _to_the_minute(was.astimezone(zone)) == _to_the_minute(local):
        return was
    if not FIRST_YEAR <= local.year <= LAST_YEAR:
        raise ChapterError(f"Please give a date between the years {FIRST_YEAR} and {LAST_YEAR}.")
    aware = local.replace(tzinfo=zone)
    back = aware.astimezone(UTC).astimezone(zone)
    if back.replace(tzinfo=None) != local:
        raise ChapterError(
            f"{local:%H:%M} on {local:%-d %B} does not exist in {zone.key}: "
            "the clocks go forward then. Please choose another time."
        )
    return aware.astimezone(UTC)


def _to_the_minute(moment: datetime) -> datetime:
    """The wall-clock minute of ``moment``, as a form shows and sends it."""
    return moment.replace(tzinfo=None, second=0, microsecond=0)


def local_time(moment: datetime, zone: ZoneInfo) -> str:
    """A UTC time as people in ``zone`` read it, with the zone's abbreviation."""
    return f"{moment.astimezone(zone):%A %-d %B %Y, %H:%M %Z}"


def reminder_lead(meetup: Meetup, lead: str, now: datetime | None = None) -> str:
    """How far off a reminded meetup is, in words true on the chapter's calendar.

    A day-before reminder sent after local midnight, or across a clock change, may land on
    the meetup's own day or two days before it.
    """
    if lead == "1h":
        return "in an hour"
    zone = meetup.chapter.zone
    today = (now or utcnow()).astimezone(zone).date()
    day = meetup.starts_at.astimezone(zone).date()
    days = (day - today).days
    if days <= 0:
        return "today"
    return "tomorrow" if days == 1 else f"on {day:%A}"


def when_text(meetup: Meetup) -> str:
    """When a meetup happens, in its chapter's time zone."""
    zone = meetup.chapter.zone
    start, end = meetup.starts_at.astimezone(zone), meetup.ends_at.astimezone(zone)
    until = f"{end:%H:%M %Z}" if end.date() == start.date() else f"{end:%A %-d %B, %H:%M %Z}"
    return f"{start:%A %-d %B %Y, %H:%M %Z} to {until}"


# --- chapters ----------------------------------------------------------------------------


def chapters_in_city(city: str) -> list[Chapter]:
    """Chapters that already exist for ``city``, so a founder can join one instead."""
    return list(
        db.session.scalars(
            select(Chapter).where(Chapter.city_slug == city_slug(city)).order_by(Chapter.id)
        )
    )


# Words that name pages under /chapters/ rather than a chapter.
RESERVED_SLUGS = frozenset({"new", "import", "invitations"})


def unique_slug(name: str, city: str) -> str:
    base = slugify(name, max_length=100) or slugify(city, max_length=100) or "chapter"
    slug, n = base, 1
    while slug in RESERVED_SLUGS or _slug_taken(slug):
        n += 1
        slug = f"{base}-{n}"
    return slug


def _slug_taken(slug: str) -> bool:
    return db.session.scalar(select(Chapter.id).where(Chapter.slug == slug)) is not None


FOUNDING_ATTEMPTS = 3


def create_chapter(
    founder: Member, *, name: str, city: str, time_zone: str, description: str
) -> Chapter:
    """Found a chapter; the founder is its first organiser. It forms until enough join.

    The same chapter sent again by its founder within REPOST_WINDOW (a double submit)
    returns the one already founded. When another founder takes the same address at the
    same moment, this chapter gets the next free one.
    """
    require_confirmed(founder)
    if time_zone not in TIME_ZONES:
        raise ChapterError("Please choose a time zone from the list.", field="time_zone")
    details = {"name": name, "city": city, "time_zone": time_zone, "description": description}
    for _ in range(FOUNDING_ATTEMPTS):
        if (founded := chapter_just_founded(founder, **details)) is not None:
            return founded
        try:
            chapter = _found(founder, **details)
        except IntegrityError:  # its address was taken meanwhile, maybe by this very form
            db.session.rollback()
            continue
        _activate_if_ready(chapter)
        db.session.commit()
        return chapter
    raise ChapterError("Another chapter took this name at the same moment. Please try again.")


def _found(founder: Member, *, name: str, city: str, time_zone: str, description: str) -> Chapter:
    """Add the chapter with its founder as organiser; flushed, not committed."""
    chapter = Chapter(
        slug=unique_slug(name, city),
        name=name,
        city=city,
        city_slug=city_slug(city),
        time_zone=time_zone,
        description=description,
    )
    chapter.memberships.append(Membership(member_id=founder.id, role=Role.ORGANISER))
    db.session.add(chapter)
    db.session.flush()
    return chapter


def chapter_just_founded(
    founder: Member, *, name: str, city: str, time_zone: str, description: str
) -> Chapter | None:
    """The chapter ``founder`` founded with these very details within REPOST_WINDOW.

    A form sent again with any detail changed is not a double submit: its details are
    not dropped in favour of the first chapter's.
    """
    organised = select(Membership.chapter_id).where(
        Membership.member_id == founder.id, Membership.role == Role.ORGANISER
    )
    return first_copy(
        Chapter,
        Chapter.id.in_(organised),
        Chapter.name == name,
        Chapter.city == city,
        Chapter.time_zone == time_zone,
        Chapter.description == description,
    )


def chapter_by_slug(slug: str) -> Chapter | None:
    return db.session.scalar(select(Chapter).where(Chapter.slug == slug))


def find_chapters(*, q: str = "", city: str = "", page: int = 1) -> Page:
    """Chapters, largest first, filtered by city and a text search."""
    members = (
        select(func.count())
        .where(Membership.chapter_id == Chapter.id)
        .correlate(Chapter)
        .scalar_subquery()
    )
    query = select(Chapter)
    if city:
        query = query.where(Chapter.city_slug == city_slug(city))
    if q:  # "%" and "_" are searched for as themselves, not as wildcards
        query = query.where(
            or_(
                Chapter.name.icontains(q, autoescape=True),
                Chapter.city.icontains(q, autoescape=True),
            )
        )
    return paginate(query, [members.desc(), Chapter.id], page, PER_PAGE)


def member_count(chapter: Chapter) -> int:
    return db.session.scalar(select(func.count()).where(Membership.chapter_id == chapter.id)) or 0


def is_member(chapter_id: int, member_id: int | None) -> bool:
    """Whether the member is in the chapter now, for news built after a wait."""
    return member_id is not None and (
        db.session.scalar(
            select(Membership.id).where(
                Membership.chapter_id == chapter_id, Membership.member_id == member_id
            )
        )
        is not None
    )


def member_counts(chapter_ids: list[int]) -> dict[int, int]:
    rows = db.session.execute(
        select(Membership.chapter_id, func.count())
        .where(Membership.chapter_id.in_(chapter_ids))
        .group_by(Membership.chapter_id)
    )
    return {key: value for key, value in rows}


def chapters_of(member: Member) -> list[Chapter]:
    return list(
        db.session.scalars(
            select(Chapter)
            .join(Membership)
            .where(Membership.member_id == member.id)
            .order_by(Chapter.name)
        )
    )


def _activate_if_ready(chapter: Chapter) -> None:
    """Activate a forming chapter that has enough members, and tell them."""
    threshold = current_app.config["CHAPTER_ACTIVE_AT"]
    if chapter.activate_if_ready(member_count(chapter), threshold):
        notify(
            "chapter_active",
            title=f"{chapter.name} is now an active chapter",
            link=external_url("chapters.show", slug=chapter.slug),
            payload={"chapter_id": chapter.id},
            audience="chapter-members",
            key=f"chapter-active:{chapter.id}",
        )


def _lock_chapter(chapter: Chapter) -> None:
    """Serialise changes to one chapter's members and roles, then reread them.

    Without the row lock two transactions each count the members and organisers without
    seeing the other's uncommitted change: two joins at once could both miss the
    activation threshold, and two organisers stepping down at once could leave none.
    SQLite ignores FOR UPDATE; its writes are serial anyway.
    """
    db.session.refresh(chapter, with_for_update={"key_share": True})
    db.session.expire(chapter, ["memberships"])
    db.session.scalars(
        select(Membership)
        .where(Membership.chapter_id == chapter.id)
        .execution_options(populate_existing=True)
    ).all()


def _longest_standing(memberships: list[Membership]) -> Membership | None:
    return min(memberships, key=lambda m: (m.joined_at, m.id), default=None)


def _ensure_organiser(chapter: Chapter) -> None:
    """A chapter left without organisers is run by its longest-standing member."""
    if not chapter.organisers:
        successor = _longest_standing(chapter.memberships)
        if successor is not None:
            successor.role = Role.ORGANISER


def _enrol(chapter: Chapter, member: Member, role: Role) -> bool:
    """Add ``member`` with ``role`` unless they are in already; the caller commits.

    Raises IntegrityError when the same member joined at the same moment.
    """
    _lock_chapter(chapter)  # count the members with every other join committed
    if chapter.membership_of(member) is not None:
        return False
    chapter.memberships.append(Membership(member_id=member.id, role=role))
    db.session.flush()
    _close_invitation(chapter, member)
    _ensure_organiser(chapter)
    _activate_if_ready(chapter)
    return True


def _close_invitation(chapter: Chapter, member: Member) -> None:
    """Joining answers an open invitation to the chapter, by whichever button: left open,
    it would be offered again once the member left, with the role the file gave."""
    key = invitation_key(member)
    if key is None:
        return
    db.session.execute(
        update(ChapterInvitation)
        .where(
            ChapterInvitation.chapter_id == chapter.id,
            ChapterInvitation.email_key == key,
            ChapterInvitation.state == InvitationState.PENDING,
        )
        .values(state=InvitationState.ACCEPTED, answered_at=utcnow())
    )


def join(chapter: Chapter, member: Member) -> bool:
    """Add ``member``; returns False if they were already in. May activate the chapter.

    Whoever joins a chapter that has no organiser left becomes its organiser.
    """
    require_confirmed(member)
    try:
        joined = _enrol(chapter, member, Role.MEMBER)
    except IntegrityError:  # joined twice at once
        joined = False
    if not joined:
        db.session.rollback()
        return False
    db.session.commit()
    return True


def leave(chapter: Chapter, member: Member) -> None:
    """Leave the chapter, withdrawing votes on its open proposals and giving up places at
    its upcoming meetups, all in one commit with the news for whoever gets a place."""
    # Meetups are locked before their chapter, in the order an account's deletion uses.
    _give_up_places(member, chapter.id)
    _lock_chapter(chapter)
    membership = chapter.membership_of(member)
    if membership is None:
        db.session.rollback()
        raise ChapterError("You are not a member of this chapter.")
    others = [m for m in chapter.memberships if m.member_id != member.id]
    if membership.role == Role.ORGANISER and len(chapter.organisers) == 1 and others:
        db.session.rollback()
        raise ChapterError("You are the only organiser. Make someone else an organiser first.")
    _withdraw_open_votes(member, chapter_id=chapter.id)
    chapter.memberships.remove(membership)
    db.session.flush()  # waits for an answer being saved now, whose place goes below
    _give_up_places(member, chapter.id)
    _ensure_organiser(chapter)
    db.session.commit()


def set_role(chapter: Chapter, member_id: int, role: Role) -> Membership:
    """Promote a member to organiser, or step an organiser back to member."""
    _lock_chapter(chapter)
    membership = next((m for m in chapter.memberships if m.member_id == member_id), None)
    if membership is None:
        db.session.rollback()
        raise ChapterError("That person is not a member of this chapter.")
    if role == Role.MEMBER and membership.role == Role.ORGANISER and len(chapter.organisers) == 1:
        db.session.rollback()
        raise ChapterError("A chapter needs at least one organiser.")
    membership.role = role
    db.session.commit()
    return membership


# --- invitations to imported chapters ------------------------------------------------------


def _open_invitations(key: str) -> Select:
    return select(ChapterInvitation).where(
        ChapterInvitation.email_key == key,
        ChapterInvitation.state == InvitationState.PENDING,
        ChapterInvitation.created_at > utcnow() - INVITATION_LIFETIME,
    )


def invitations_for(member: Member | None, *, limit: int = 20) -> list[ChapterInvitation]:
    """Open invitations to chapters the member is not in yet, newest first."""
    key = invitation_key(member)
    if key is None:
        return []
    joined = select(Membership.chapter_id).where(Membership.member_id == member.id)
    return list(
        db.session.scalars(
            _open_invitations(key)
            .where(ChapterInvitation.chapter_id.not_in(joined))
            .order_by(ChapterInvitation.created_at.desc(), ChapterInvitation.id.desc())
            .limit(limit)
        )
    )


def invitation_to(chapter: Chapter, member: Member | None) -> ChapterInvitation | None:
    """The member's open invitation to ``chapter``, unless they are in it already."""
    key = invitation_key(member)
    if key is None or chapter.membership_of(member) is not None:
        return None
    return db.session.scalar(
        _open_invitations(key).where(ChapterInvitation.chapter_id == chapter.id)
    )


def invitation_of(member: Member | None, invitation_id: int) -> ChapterInvitation | None:
    """The invitation with this id if it is made to the member's confirmed address."""
    key = invitation_key(member)
    if key is None:
        return None
    return db.session.scalar(
        select(ChapterInvitation).where(
            ChapterInvitation.id == invitation_id, ChapterInvitation.email_key == key
        )
    )


def _answer_invitation(invitation: ChapterInvitation, answer: Callable[[], None]) -> None:
    """Record an answer under the invitation's row lock, so it is answered only once."""
    db.session.refresh(invitation, with_for_update=True)
    try:
        answer()
    except ChapterError:
        db.session.rollback()
        raise


def accept_invitation(invitation: ChapterInvitation, member: Member) -> bool:
    """Join the chapter with the role its file gave; False if the member was in already.

    Joining takes the same steps as any join, so it may activate the chapter. A member
    already in the chapter keeps their role, and the invitation is closed.
    """
    _answer_invitation(invitation, invitation.accept)
    try:
        joined = _enrol(invitation.chapter, member, Role(invitation.role))
    except IntegrityError:
        db.session.rollback()
        raise ChapterError(
            "You joined this chapter at the same moment; please look again."
        ) from None
    db.session.commit()
    return joined


def decline_invitation(invitation: ChapterInvitation) -> None:
    """Turn the invitation down; it is not shown again."""
    _answer_invitation(invitation, invitation.decline)
    db.session.commit()


def update_settings(chapter: Chapter, **settings: Any) -> None:
    """Change the description, time zone, who may schedule, and the quorum."""
    if settings.get("time_zone") not in TIME_ZONES:
        raise ChapterError("Please choose a time zone from the list.", field="time_zone")
    for name, value in settings.items():
        setattr(chapter, name, value)
    db.session.commit()


def set_contact_sharing(chapter: Chapter, member: Member, shares: bool) -> None:
    """Whether organisers may export the member's name and email with the chapter."""
    membership = chapter.membership_of(member)
    if membership is None:
        raise ChapterError("You are not a member of this chapter.")
    membership.shares_contact = shares
    db.session.commit()


def members_of(chapter: Chapter) -> list[Membership]:
    """Organisers first, then members in the order they joined."""
    return sorted(chapter.memberships, key=lambda m: (m.role != Role.ORGANISER, m.id))


def _recipients(key) -> Select:
    """The columns an audience selects: a unique increasing key, and who to tell."""
    return select(
        key.label("key"),
        Member.email,
        Member.id.label("member_id"),
        Member.display_name.label("name"),
    )


def member_audience(chapter_id: int) -> Select:
    """Members of a chapter with a confirmed address, for fan-out."""
    return (
        _recipients(Membership.id)
        .join(Member, Member.id == Membership.member_id)
        .where(Membership.chapter_id == chapter_id, Member.email_confirmed_at.is_not(None))
    )


# --- meetups -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MeetupDetails:
    """What an organiser fills in; times in UTC."""

    title: str
    description: str
    starts_at: datetime
    ends_at: datetime
    venue: str | None
    address: str | None
    online_link: str | None
    capacity: int | None


def schedule_meetup(chapter: Chapter, member: Member, details: MeetupDetails) -> Meetup:
    """Add a meetup, tell the chapter, and schedule its reminders.

    The same meetup sent again by the same member within REPOST_WINDOW returns the one
    already scheduled, so the chapter hears of it once.
    """
    if not chapter.may_schedule(member):
        raise ChapterError("Only this chapter's organisers can schedule meetups.")
    require_confirmed(member)
    if details.starts_at <= utcnow():
        raise ChapterError("A new meetup must start in the future.", field="starts")
    _hold_chapter(chapter)
    if (scheduled := _recent_meetup(chapter, member, details)) is not None:
        db.session.commit()
        return scheduled
    meetup = Meetup(chapter_id=chapter.id, created_by_id=member.id)
    _apply(meetup, details)
    db.session.add(meetup)
    db.session.flush()
    notify(
        "meetup_new",
        title=f"New meetup in {chapter.name}: {meetup.title}",
        link=external_url("chapters.meetup", meetup_id=meetup.id),
        payload={"meetup_id": meetup.id, "chapter_id": chapter.id},
        audience="chapter-members",
        key=f"meetup-new:{meetup.id}",
    )
    schedule_reminders(meetup)
    return meetup


def _hold_chapter(chapter: Chapter) -> None:
    """Serialise what is added to one chapter, on PostgreSQL and SQLite alike, so that a
    form sent twice at once finds the first copy when the second looks.

    The UPDATE changes nothing but takes the row lock (PostgreSQL) or the write lock
    (SQLite) until commit.
    """
    db.session.execute(
        update(Chapter)
        .where(Chapter.id == chapter.id)
        .values(updated_at=Chapter.updated_at)
        .execution_options(synchronize_session=False)
    )


def _recent_meetup(chapter: Chapter, member: Member, details: MeetupDetails) -> Meetup | None:
    """The same meetup, scheduled by the same member within REPOST_WINDOW."""
    same_details = [getattr(Meetup, name) == value for name, value in asdict(details).items()]
    return first_copy(
        Meetup,
        Meetup.chapter_id == chapter.id,
        Meetup.created_by_id == member.id,
        Meetup.state == MeetupState.SCHEDULED,
        *same_details,
    )


def _apply(meetup: Meetup, details: MeetupDetails) -> None:
    if not (details.venue or details.address or details.online_link):
        raise ChapterError("Please give a venue, an address or an online link.", field="venue")
    meetup.set_times(details.starts_at, details.ends_at)
    meetup.title, meetup.description = details.title, details.description
    meetup.venue, meetup.address = details.venue, details.address
    meetup.online_link, meetup.capacity = details.online_link, details.capacity


def edit_meetup(meetup: Meetup, details: MeetupDetails) -> bool:
    """Save changes; a new time or place is told to everyone going or waitlisted.

    Returns True when people were told.
    """
    _refuse_closed_meetup_changes(meetup)
    _lock_rsvps(meetup)
    _refuse_closed_meetup_changes(meetup)  # it may have been cancelled while we waited
    if details.starts_at != meetup.starts_at and details.starts_at <= utcnow():
        db.session.rollback()
        raise ChapterError("A meetup can only be moved to a time in the future.", field="starts")
    before = (meetup.starts_at, meetup.ends_at, meetup.place)
    shown_before = meetup.calendar_fields
    _apply(meetup, details)
    if meetup.calendar_fields != shown_before:
        meetup.revision += 1
    moved = (meetup.starts_at, meetup.ends_at) != before[:2]
    changed = moved or meetup.place != before[2]
    if changed:  # the change and the news of it are committed together
        notify(
            "meetup_changed",
            title=f"Changed: {meetup.title}",
            link=external_url("chapters.meetup", meetup_id=meetup.id),
            payload={"meetup_id": meetup.id},
            audience="meetup-attendees",
        )
    else:
        db.session.commit()
    _fill_free_places(meetup)
    if moved:
        schedule_reminders(meetup)
    return changed


def _refuse_closed_meetup_changes(meetup: Meetup) -> None:
    if not meetup.can_be_changed:
        db.session.rollback()
        raise ChapterError("A cancelled or finished meetup cannot be changed.")


def cancel_meetup(meetup: Meetup) -> None:
    """Cancel, tell those going and waitlisted, and drop the reminders."""
    meetup.cancel()
    db.session.flush()
    notify(
        "meetup_cancelled",
        title=f"Cancelled: {meetup.title}",
        link=external_url("chapters.meetup", meetup_id=meetup.id),
        payload={"meetup_id": meetup.id},
        audience="meetup-attendees",
        key=f"meetup-cancelled:{meetup.id}",
    )
    unschedule_reminders(meetup)


def upcoming_meetups(chapter_ids: list[int] | None = None, *, limit: int = 20) -> list[Meetup]:
    query = select(Meetup).where(Meetup.state == MeetupState.SCHEDULED, Meetup.ends_at > utcnow())
    if chapter_ids is not None:
        query = query.where(Meetup.chapter_id.in_(chapter_ids))
    return list(db.session.scalars(query.order_by(Meetup.starts_at).limit(limit)))


def past_meetups(chapter: Chapter, *, limit: int = 20) -> list[Meetup]:
    return list(
        db.session.scalars(
            select(Meetup)
            .where(Meetup.chapter_id == chapter.id, Meetup.ends_at <= utcnow())
            .order_by(Meetup.starts_at.desc())
            .limit(limit)
        )
    )


def meetups_in_city(slug: str, *, limit: int = 20) -> list[Meetup]:
    chapter_ids = select(Chapter.id).where(Chapter.city_slug == slug)
    return list(
        db.session.scalars(
            select(Meetup)
            .where(
                Meetup.chapter_id.in_(chapter_ids),
                Meetup.state == MeetupState.SCHEDULED,
                Meetup.ends_at > utcnow(),
            )
            .order_by(Meetup.starts_at)
            .limit(limit)
        )
    )


# --- RSVPs and the waitlist -----------------------------------------------------------------


def _lock_rsvps(meetup: Meetup) -> int:
    """Serialise changes to one meetup's RSVPs, on PostgreSQL and SQLite alike.

    The UPDATE takes the row lock (PostgreSQL) or the write lock (SQLite) before anything
    is counted, so two changes at once cannot both see the same free place.
    """
    version = db.session.scalar(
        update(Meetup)
        .where(Meetup.id == meetup.id)
        .values(rsvp_version=Meetup.rsvp_version + 1)
        .returning(Meetup.rsvp_version)
        .execution_options(synchronize_session=False)
    )
    db.session.expire_all()  # count from the rows as they are now, not as first loaded
    return version


def _count(meetup_id: int, status: RsvpStatus) -> int:
    return (
        db.session.scalar(
            select(func.count()).where(Rsvp.meetup_id == meetup_id, Rsvp.status == status)
        )
        or 0
    )


def _is_full(meetup: Meetup) -> bool:
    if meetup.capacity is None:
        return False
    return _count(meetup.id, RsvpStatus.GOING) >= meetup.capacity or bool(
        _count(meetup.id, RsvpStatus.WAITLISTED)
    )


def _promote_waitlist(meetup: Meetup) -> list[Rsvp]:
    """Move the first on the waitlist into the places that are free; call under the lock."""
    query = (
        select(Rsvp)
        .where(Rsvp.meetup_id == meetup.id, Rsvp.status == RsvpStatus.WAITLISTED)
        .order_by(Rsvp.waitlisted_at, Rsvp.id)
    )
    if meetup.capacity is not None:
        free = meetup.capacity - _count(meetup.id, RsvpStatus.GOING)
        if free <= 0:
            return []
        query = query.limit(free)
    promoted = list(db.session.scalars(query))
    for rsvp in promoted:
        rsvp.status, rsvp.responded_at = RsvpStatus.GOING, utcnow()
    return promoted


def _fill_free_places(meetup: Meetup) -> None:
    """Give the places a change freed (a larger capacity) to those waiting, in a commit of
    their own with the news of them; a meetup cancelled meanwhile promotes no one."""
    version = _lock_rsvps(meetup)
    promoted = _promote_waitlist(meetup) if meetup.is_open_for_rsvp else []
    _commit_with_promotions(meetup, promoted, version)


def _commit_with_promotions(meetup: Meetup, promoted: list[Rsvp], version: int) -> None:
    """Commit the caller's changes together with the news for those promoted, so that no
    place is given without its email being on its way."""
    _tell_promoted(meetup, promoted, version)
    db.session.commit()


def _tell_promoted(meetup: Meetup, promoted: list[Rsvp], version: int) -> None:
    """Record one notification for everyone promoted under one lock of the meetup's
    RSVPs. It is queued once the caller commits, and forgotten with the places if the
    caller rolls back."""
    # Places still go in turn; the email only to those who confirmed their address.
    told = [rsvp.member for rsvp in promoted if rsvp.member.is_confirmed]
    if not told:
        return
    notify(
        "meetup_promoted",
        title=f"You have a place at {meetup.title}",
        link=external_url("chapters.meetup", meetup_id=meetup.id),
        payload={"meetup_id": meetup.id, "rsvp_ids": [rsvp.id for rsvp in promoted]},
        recipients=[Recipient(member.email, member.id, member.display_name) for member in told],
        key=f"meetup-places:{meetup.id}:{version}",
        commit=False,
    )


def rsvp_of(meetup: Meetup, member: Member | None) -> Rsvp | None:
    if member is None or not getattr(member, "is_authenticated", False):
        return None
    return db.session.scalar(
        select(Rsvp).where(Rsvp.meetup_id == meetup.id, Rsvp.member_id == member.id)
    )


def _refuse_closed_rsvps(meetup: Meetup) -> None:
    if not meetup.is_open_for_rsvp:
        db.session.rollback()
        raise ChapterError("This meetup no longer takes RSVPs.")


def respond(meetup: Meetup, member: Member, going: bool) -> RsvpStatus:
    """Record going or not going. A full meetup waitlists newcomers first come, first
    served; a place given up goes at once to the first on the waitlist, who is told.

    Answers close when the meetup starts; taking a place needs a confirmed address.
    """
    if going:
        require_confirmed(member)
    _refuse_closed_rsvps(meetup)
    version = _lock_rsvps(meetup)
    _refuse_closed_rsvps(meetup)  # it may have been cancelled while we waited
    _hold_membership(meetup, member)
    rsvp = rsvp_of(meetup, member)
    promoted: list[Rsvp] = []
    if going:
        if rsvp is not None and rsvp.status in (RsvpStatus.GOING, RsvpStatus.WAITLISTED):
            db.session.commit()
            return RsvpStatus(rsvp.status)
        full = _is_full(meetup)  # counted before this RSVP is added
        if rsvp is None:
            rsvp = Rsvp(meetup_id=meetup.id, member_id=member.id, status=RsvpStatus.GOING)
            db.session.add(rsvp)
        if full:
            rsvp.status, rsvp.waitlisted_at = RsvpStatus.WAITLISTED, utcnow()
        else:
            rsvp.status = RsvpStatus.GOING
    else:
        if rsvp is not None and rsvp.attended:  # a meetup moved after it began, say
            db.session.rollback()
            raise ChapterError("You were marked as present at this meetup.")
        was_going = rsvp is not None and rsvp.status == RsvpStatus.GOING
        if rsvp is None:
            rsvp = Rsvp(meetup_id=meetup.id, member_id=member.id)
            db.session.add(rsvp)
        rsvp.status, rsvp.waitlisted_at = RsvpStatus.NOT_GOING, None
        if was_going:
            db.session.flush()
            promoted = _promote_waitlist(meetup)
    rsvp.responded_at = utcnow()
    status = RsvpStatus(rsvp.status)
    _commit_with_promotions(meetup, promoted, version)
    return status


def _hold_membership(meetup: Meetup, member: Member) -> None:
    """Refuse a non-member, and keep the member from leaving until this answer is saved.

    The share lock makes leaving the chapter wait for the answer and then give its place
    up too; an answer that waits for a leave sees the membership gone.
    """
    held = db.session.scalar(
        select(Membership.id)
        .where(Membership.chapter_id == meetup.chapter_id, Membership.member_id == member.id)
        .with_for_update(read=True, key_share=True)
    )
    if held is None:
        db.session.rollback()
        raise ChapterError("Join the chapter to RSVP to its meetups.")


def _meetups_with_places_of(member: Member, chapter_id: int | None = None) -> list[Meetup]:
    """Upcoming meetups the member is going to or waiting for, in the order to lock them."""
    query = (
        select(Meetup)
        .join(Rsvp, Rsvp.meetup_id == Meetup.id)
        .where(
            Rsvp.member_id == member.id,
            Rsvp.status.in_([RsvpStatus.GOING, RsvpStatus.WAITLISTED]),
            Meetup.state == MeetupState.SCHEDULED,
            Meetup.starts_at > utcnow(),  # once begun, who was going is history
        )
        .order_by(Meetup.id)
    )
    if chapter_id is not None:
        query = query.where(Meetup.chapter_id == chapter_id)
    return list(db.session.scalars(query))


def _give_up_places(member: Member, chapter_id: int | None = None) -> None:
    """Free the member's places at upcoming meetups, each under its meetup's lock, with
    the news for whoever gets one. Flushed, not committed: the caller commits it all."""
    for meetup in _meetups_with_places_of(member, chapter_id):
        _tell_promoted(meetup, *_free_place(meetup, member))


def _free_place(meetup: Meetup, member: Member) -> tuple[list[Rsvp], int]:
    """Withdraw the member's RSVP under the meetup's lock, giving a place they held to the
    first waiting. Flushed, not committed; returns who was promoted and under which
    version of the lock."""
    version = _lock_rsvps(meetup)
    rsvp = rsvp_of(meetup, member)
    if rsvp is None:
        return [], version
    was_going = rsvp.status == RsvpStatus.GOING
    rsvp.status, rsvp.waitlisted_at = RsvpStatus.NOT_GOING, None
    db.session.flush()
    # Read after the lock: cancelled or over since it was listed, it has no place to give.
    promoted = _promote_waitlist(meetup) if was_going and meetup.is_open_for_rsvp else []
    db.session.flush()  # before the next lock expires what this session holds
    return promoted, version


def attendees(meetup: Meetup, status: RsvpStatus) -> list[Rsvp]:
    order = (Rsvp.waitlisted_at, Rsvp.id) if status == RsvpStatus.WAITLISTED else (Rsvp.id,)
    return list(
        db.session.scalars(
            select(Rsvp).where(Rsvp.meetup_id == meetup.id, Rsvp.status == status).order_by(*order)
        )
    )


def waitlist_place(waitlist: list[Rsvp], rsvp: Rsvp | None) -> int | None:
    """The RSVP's number on the waitlist; None when it is not on it (any more)."""
    if rsvp is None:
        return None
    return next((n for n, r in enumerate(waitlist, 1) if r.member_id == rsvp.member_id), None)


def rsvp_counts(meetup_ids: list[int]) -> dict[int, Counter]:
    counts: dict[int, Counter] = {i: Counter() for i in meetup_ids}
    rows = db.session.execute(
        select(Rsvp.meetup_id, Rsvp.status, func.count())
        .where(Rsvp.meetup_id.in_(meetup_ids))
        .group_by(Rsvp.meetup_id, Rsvp.status)
    )
    for meetup_id, status, n in rows:
        counts[meetup_id][status] = n
    return counts


def attendee_audience(meetup_id: int, statuses: tuple[RsvpStatus, ...]) -> Select:
    """People with an RSVP in ``statuses`` and a confirmed address, for fan-out."""
    return (
        _recipients(Rsvp.id)
        .join(Member, Member.id == Rsvp.member_id)
        .where(
            Rsvp.meetup_id == meetup_id,
            Rsvp.status.in_(statuses),
            Member.email_confirmed_at.is_not(None),
        )
    )


def mark_attendance(meetup: Meetup, attended_member_ids: set[int]) -> int:
    """After a meetup has started, record who came; returns how many did."""
    if not meetup.has_started or meetup.is_cancelled:
        raise ChapterError("Attendance can be marked once the meetup has started.")
    count = 0
    for rsvp in attendees(meetup, RsvpStatus.GOING):
        rsvp.attended = rsvp.member_id in attended_member_ids
        count += rsvp.attended
    db.session.commit()
    return count


# --- reminders ---------------------------------------------------------------------------


def _reminder_job_id(meetup_id: int, lead: str) -> str:
    return f"meetup-{meetup_id}-reminder-{lead}"


def schedule_reminders(meetup: Meetup) -> None:
    """(Re)schedule the 24-hour and 1-hour reminders with RQ's scheduler.

    If Redis is down the periodic sweep still sends them on time.
    """
    from chapters import jobs

    try:
        for lead, before in REMINDER_LEADS.items():
            cancel_job(_reminder_job_id(meetup.id, lead))
            at = meetup.starts_at - before
            if at > utcnow():
                enqueue(
                    jobs.send_reminder,
                    meetup.id,
                    lead,
                    at=at,
                    job_id=_reminder_job_id(meetup.id, lead),
                )
    except RedisError:
        current_app.logger.warning("reminders of meetup %s wait for the sweep", meetup.id)


def unschedule_reminders(meetup: Meetup) -> None:
    try:
        for lead in REMINDER_LEADS:
            cancel_job(_reminder_job_id(meetup.id, lead))
    except RedisError:  # the reminder job itself refuses a cancelled meetup
        current_app.logger.warning("reminders of meetup %s stay queued", meetup.id)


def reminder_is_due(meetup: Meetup, lead: str, now: datetime | None = None) -> bool:
    """Whether it is time for this reminder: never early, late or after the start."""
    now = now or utcnow()
    opens = meetup.starts_at - REMINDER_LEADS[lead]
    closes = min(opens + REMINDER_WINDOWS[lead], meetup.starts_at)
    # A meetup announced (or moved) after this reminder's time gets only those still ahead.
    announced_late = meetup.time_announced_at > opens + SCHEDULER_SLACK
    return (
        not meetup.is_cancelled and not announced_late and opens - SCHEDULER_SLACK <= now < closes
    )


def send_reminder(meetup_id: int, lead: str) -> bool:
    """Remind everyone going; once per meetup time, whoever calls it and however often."""
    meetup = db.session.get(Meetup, meetup_id)
    if meetup is None or lead not in REMINDER_LEADS or not reminder_is_due(meetup, lead):
        return False
    starts = int(meetup.starts_at.timestamp())
    notified = notify(
        "meetup_reminder",
        title=f"Reminder: {meetup.title}",
        link=external_url("chapters.meetup", meetup_id=meetup.id),
        payload={"meetup_id": meetup.id, "lead": lead, "starts": starts},
        audience="meetup-going",
        key=f"meetup-reminder:{meetup.id}:{lead}:{starts}",
        expires_at=meetup.starts_at,  # a reminder is no use once the meetup has begun
    )
    return notified is not None


def send_due_reminders() -> int:
    """The safety net for reminders whose scheduled job was lost; returns how many went."""
    now = utcnow()
    soon = db.session.scalars(
        select(Meetup).where(
            Meetup.state == MeetupState.SCHEDULED,
            Meetup.starts_at > now,
            Meetup.starts_at <= now + max(REMINDER_LEADS.values()) + SCHEDULER_SLACK,
        )
    ).all()
    return sum(
        send_reminder(meetup.id, lead)
        for meetup in soon
        for lead in REMINDER_LEADS
        if reminder_is_due(meetup, lead, now)
    )


# --- calendars ---------------------------------------------------------------------------


def _event_for(meetup: Meetup, waitlisted: bool, with_link: bool) -> Event:
    event = Event()
    # Unique to this site, so two sites' feeds in one calendar never merge their events.
    event.add("uid", f"meetup-{meetup.id}@{urlsplit(current_app.config['BASE_URL']).hostname}")
    event.add("dtstamp", meetup.updated_at or utcnow())
    event.add("dtstart", meetup.starts_at)
    event.add("dtend", meetup.ends_at)
    event.add("summary", meetup.title)
    event.add("description", meetup.description)
    event.add("url", external_url("chapters.meetup", meetup_id=meetup.id))
    if place := meetup.place if with_link else meetup.public_place:
        event.add("location", vText(place))
    event.add("status", _event_status(meetup, waitlisted))
    event.add("sequence", meetup.revision)
    return event


def _event_status(meetup: Meetup, waitlisted: bool) -> str:
    if meetup.is_cancelled:
        return "CANCELLED"
    # Someone still waiting for a place may not be coming: their calendar says so.
    return "TENTATIVE" if waitlisted else "CONFIRMED"


def calendar_for(
    meetups: list[Meetup],
    name: str,
    waitlisted: Collection[int] = frozenset(),
    *,
    with_links: bool = False,
) -> bytes:
    """An iCalendar file of ``meetups`` that calendar applications import or subscribe to;
    those whose ids are in ``waitlisted`` are tentative. Online links go only into files
    made for the chapter's members (``with_links``)."""
    calendar = Calendar()
    calendar.add("prodid", "-//Groundswell//Meetups//EN")
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", name)
    for meetup in meetups:
        calendar.add_component(_event_for(meetup, meetup.id in waitlisted, with_links))
    return calendar.to_ical()


def calendar_meetups(chapter: Chapter) -> list[Meetup]:
    """Recent and coming meetups of a chapter, for its feed."""
    return list(
        db.session.scalars(
            select(Meetup)
            .where(
                Meetup.chapter_id == chapter.id,
                Meetup.starts_at > utcnow() - timedelta(days=90),
            )
            .order_by(Meetup.starts_at)
        )
    )


def _member_meetups(member: Member) -> Select:
    """Meetups the member is going to or waiting for, recent and coming, with the answer."""
    return (
        select(Meetup, Rsvp.status)
        .join(Rsvp, Rsvp.meetup_id == Meetup.id)
        .where(
            Rsvp.member_id == member.id,
            Rsvp.status.in_([RsvpStatus.GOING, RsvpStatus.WAITLISTED]),
            Meetup.starts_at > utcnow() - timedelta(days=90),
        )
        .order_by(Meetup.starts_at)
    )


def member_meetups(member: Member) -> list[Meetup]:
    """Meetups the member is going to or waiting for, recent and coming."""
    return list(db.session.scalars(_member_meetups(member)))


def member_calendar(member: Member) -> bytes:
    """The member's personal feed: their meetups, tentative while they wait for a place."""
    rows = db.session.execute(_member_meetups(member)).all()
    waiting = {meetup.id for meetup, status in rows if status == RsvpStatus.WAITLISTED}
    meetups = [meetup for meetup, _ in rows]
    # Meetups they answered are their chapters' own (a chapter left drops its answers).
    return calendar_for(meetups, "My Groundswell meetups", waiting, with_links=True)


def calendar_secret(member: Member) -> str:
    """The secret of the member's personal feed, made on first use (once, however many
    first visits arrive together)."""
    key = db.session.get(CalendarKey, member.id)
    if key is None:
        db.session.execute(
            dialect_insert(CalendarKey)
            .values(member_id=member.id, secret=secrets.token_urlsafe(32))
            .on_conflict_do_nothing(index_elements=["member_id"])
        )
        db.session.commit()
        key = db.session.get(CalendarKey, member.id)
    return key.secret


def reset_calendar_secret(member: Member) -> str:
    """A new feed address; the old one stops working."""
    key = db.session.get(CalendarKey, member.id)
    if key is None:
        return calendar_secret(member)
    key.secret = secrets.token_urlsafe(32)
    db.session.commit()
    return key.secret


@password_changed.connect
def revoke_calendar_feed(sender, member: Member, **extra) -> None:
    """Whoever knew the old password may have copied the feed's address: it stops working,
    and the member's next visit to their calendar page makes a new one."""
    db.session.execute(delete(CalendarKey).where(CalendarKey.member_id == member.id))


def member_for_calendar(secret: str) -> Member | None:
    if not secret or len(secret) > 64:
        return None
    key = db.session.scalar(select(CalendarKey).where(CalendarKey.secret == secret))
    return db.session.get(Member, key.member_id) if key else None


# --- decisions ---------------------------------------------------------------------------


def _closing_job_id(proposal_id: int, what: str) -> str:
    return f"proposal-{proposal_id}-{what}"


def closing_soon_at(opened: datetime, closes_at: datetime) -> datetime:
    """A day before closing, or halfway through a shorter vote."""
    return max(closes_at - CLOSING_SOON_BEFORE, opened + (closes_at - opened) / 2)


def open_proposal(
    chapter: Chapter, member: Member, *, title: str, details: str, closes_at: datetime
) -> Proposal:
    """Put a proposal to the chapter's members and schedule its closing.

    The same proposal sent again by the same member within REPOST_WINDOW returns the one
    already open, so members hear of it once.
    """
    if chapter.membership_of(member) is None:
        raise ChapterError("Only members of this chapter can open proposals.")
    require_confirmed(member)
    if not chapter.is_active:
        raise ChapterError("Proposals open once the chapter is active.")
    now = utcnow()
    # The form gives whole minutes: an hour from now, to the minute, is an hour.
    if closes_at < (now + SHORTEST_VOTE).replace(second=0, microsecond=0):
        raise ChapterError("Give members at least an hour to vote.", field="closes")
    if closes_at > now + LONGEST_VOTE:
        raise ChapterError("A vote can last at most 90 days.", field="closes")
    _hold_chapter(chapter)
    if (opened := _recent_proposal(chapter, member, title, details, closes_at)) is not None:
        db.session.commit()
        return opened
    proposal = Proposal(
        chapter_id=chapter.id,
        author_id=member.id,
        title=title,
        details=details,
        closes_at=closes_at,
        **chapter.quorum_rules(),
    )
    db.session.add(proposal)
    db.session.flush()
    notify(
        "proposal_new",
        title=f"New proposal in {chapter.name}: {title}",
        link=external_url("chapters.proposal", proposal_id=proposal.id),
        payload={"proposal_id": proposal.id, "chapter_id": chapter.id},
        audience="chapter-members",
        key=f"proposal-new:{proposal.id}",
    )
    schedule_closing(proposal, now)
    return proposal


def _recent_proposal(
    chapter: Chapter, member: Member, title: str, details: str, closes_at: datetime
) -> Proposal | None:
    """The same proposal, opened by the same member within REPOST_WINDOW."""
    return first_copy(
        Proposal,
        Proposal.chapter_id == chapter.id,
        Proposal.author_id == member.id,
        Proposal.state == ProposalState.OPEN,
        Proposal.title == title,
        Proposal.details == details,
        Proposal.closes_at == closes_at,
    )


def schedule_closing(proposal: Proposal, opened: datetime) -> None:
    from chapters import jobs

    try:
        enqueue(
            jobs.closing_soon,
            proposal.id,
            at=closing_soon_at(opened, proposal.closes_at),
            job_id=_closing_job_id(proposal.id, "closing-soon"),
        )
        enqueue(
            jobs.close_proposal,
            proposal.id,
            at=proposal.closes_at,
            job_id=_closing_job_id(proposal.id, "close"),
        )
    except RedisError:
        current_app.logger.warning("proposal %s closes through the sweep", proposal.id)


VOTING_ATTEMPTS = 3
VOTING_CLOSED = "Voting on this proposal has closed."


def cast_vote(proposal: Proposal, member: Member, choice: Choice, reason: str | None) -> Vote:
    """Record or change a member's vote while the proposal is open.

    When the same member's other vote is saved at the same moment, this one is recorded
    over it, after checking again that voting is open and they are still a member.
    """
    require_confirmed(member)
    for _ in range(VOTING_ATTEMPTS):
        vote = _record_vote(proposal, member, choice, reason)
        try:
            db.session.commit()
        except IntegrityError:  # the other vote is in now: start again from it
            db.session.rollback()
            continue
        return vote
    raise ChapterError("Your vote could not be recorded just now. Please send it again.")


def _record_vote(proposal: Proposal, member: Member, choice: Choice, reason: str | None) -> Vote:
    """Add or change the member's vote under the proposal's lock; the caller commits."""
    # Read the state under the row lock that closing takes, so no vote lands after it.
    db.session.refresh(proposal, with_for_update={"of": Proposal})
    if not proposal.is_open or proposal.closes_at <= utcnow():
        db.session.rollback()
        raise ChapterError(VOTING_CLOSED)
    if not is_member(proposal.chapter_id, member.id):  # read now, not as first loaded
        db.session.rollback()
        raise ChapterError("Only members of this chapter can vote.")
    vote = vote_of(proposal, member)
    if vote is None:
        vote = Vote(proposal_id=proposal.id, member_id=member.id)
        db.session.add(vote)
    vote.choice, vote.reason = choice, reason or None
    return vote


def vote_of(proposal: Proposal, member: Member | None) -> Vote | None:
    if member is None or not getattr(member, "is_authenticated", False):
        return None
    return db.session.scalar(
        select(Vote).where(Vote.proposal_id == proposal.id, Vote.member_id == member.id)
    )


def _counted_votes(proposal: Proposal) -> Select:
    """The votes that count: while a proposal is open, only those of current members.

    Once it closes, its votes are kept as they were counted.
    """
    query = select(Vote).where(Vote.proposal_id == proposal.id)
    if proposal.is_open:
        members = select(Membership.member_id).where(Membership.chapter_id == proposal.chapter_id)
        query = query.where(Vote.member_id.in_(members))
    return query


def tally(proposal: Proposal) -> dict[str, int]:
    counts = {choice.value: 0 for choice in Choice}
    votes = _counted_votes(proposal).subquery()
    rows = db.session.execute(select(votes.c.choice, func.count()).group_by(votes.c.choice))
    counts.update({key: value for key, value in rows})
    return counts


def votes_on(proposal: Proposal) -> list[Vote]:
    return list(db.session.scalars(_counted_votes(proposal).order_by(Vote.updated_at.desc())))


def _discard_uncounted_votes(proposal: Proposal) -> None:
    """Drop the votes of people who are not members as the proposal closes, so that the
    votes kept with the result are those it was decided by."""
    counted = _counted_votes(proposal).with_only_columns(Vote.id)
    db.session.execute(
        delete(Vote)
        .where(Vote.proposal_id == proposal.id, Vote.id.not_in(counted))
        .execution_options(synchronize_session=False)
    )


def _withdraw_open_votes(member: Member, chapter_id: int | None = None) -> None:
    """Remove the member's votes on proposals still open: only members decide them."""
    open_ones = select(Proposal.id).where(Proposal.state == ProposalState.OPEN)
    if chapter_id is not None:
        open_ones = open_ones.where(Proposal.chapter_id == chapter_id)
    db.session.execute(
        delete(Vote)
        .where(Vote.member_id == member.id, Vote.proposal_id.in_(open_ones))
        .execution_options(synchronize_session=False)
    )


def close_proposal(proposal_id: int) -> Outcome | None:
    """Close a proposal whose time has come and tell the chapter the outcome."""
    # populate_existing: a proposal this session loaded before (the sweep lists them) is
    # read again under the lock, so one closed meanwhile is not closed a second time.
    proposal = db.session.scalar(
        select(Proposal)
        .where(Proposal.id == proposal_id)
        .with_for_update(of=Proposal)
        .execution_options(populate_existing=True)
    )
    if proposal is None or not proposal.is_open or proposal.closes_at > utcnow():
        db.session.rollback()
        return None
    _discard_uncounted_votes(proposal)
    outcome = proposal.close(tally(proposal), member_count(proposal.chapter))
    db.session.flush()
    notify(
        "proposal_outcome",
        title=f"{proposal.title}: {outcome.value.replace('-', ' ')}",
        link=external_url("chapters.proposal", proposal_id=proposal.id),
        payload={"proposal_id": proposal.id, "chapter_id": proposal.chapter_id},
        audience="chapter-members",
        key=f"proposal-outcome:{proposal.id}",
    )
    return outcome


def send_closing_soon(proposal_id: int) -> bool:
    """Remind members who have not voted, once, while the proposal is still open."""
    proposal = db.session.get(Proposal, proposal_id)
    if proposal is None or not proposal.is_open or proposal.closes_at <= utcnow():
        return False
    notified = notify(
        "proposal_closing",
        title=f"Closing soon: {proposal.title}",
        link=external_url("chapters.proposal", proposal_id=proposal.id),
        payload={"proposal_id": proposal.id},
        audience="proposal-non-voters",
        key=f"proposal-closing:{proposal.id}",
        expires_at=proposal.closes_at,  # no one can vote after the close
    )
    return notified is not None


def non_voter_audience(proposal_id: int) -> Select:
    """Members of the proposal's chapter who have not voted on it."""
    proposal = db.session.get(Proposal, proposal_id)
    voted = select(Vote.member_id).where(
        Vote.proposal_id == proposal_id, Vote.member_id.is_not(None)
    )
    return member_audience(proposal.chapter_id).where(Membership.member_id.not_in(voted))


def has_voted(proposal_id: int, member_id: int | None) -> bool:
    return member_id is not None and (
        db.session.scalar(
            select(Vote.id).where(Vote.proposal_id == proposal_id, Vote.member_id == member_id)
        )
        is not None
    )


def settle_due_proposals() -> int:
    """The safety net for lost scheduled jobs: close what is due, remind what is near."""
    now = utcnow()
    open_ones = db.session.scalars(
        select(Proposal).where(
            Proposal.state == ProposalState.OPEN,
            Proposal.closes_at <= now + CLOSING_SOON_BEFORE,
        )
    ).all()
    closed = 0
    for proposal in open_ones:
        if proposal.closes_at <= now:
            closed += close_proposal(proposal.id) is not None
        elif closing_soon_at(proposal.created_at, proposal.closes_at) <= now:
            send_closing_soon(proposal.id)
    return closed


def proposals_of(chapter: Chapter, state: ProposalState, *, limit: int = 20) -> list[Proposal]:
    order = Proposal.closes_at if state == ProposalState.OPEN else Proposal.closed_at.desc()
    return list(
        db.session.scalars(
            select(Proposal)
            .where(Proposal.chapter_id == chapter.id, Proposal.state == state)
            .order_by(order)
            .limit(limit)
        )
    )


# --- chapters on other features' pages and in members' data ---------------------------------


@linked_work.connect
def summarise_meetups(sender, kind: str, ids: list[int], **extra) -> dict[int, WorkSummary] | None:
    """Title, link, date and RSVPs of meetups, for campaign pages."""
    if kind != "meetup":
        return None
    found = db.session.scalars(select(Meetup).where(Meetup.id.in_(ids))).all()
    counts = rsvp_counts([m.id for m in found])
    return {
        m.id: WorkSummary(
            title=m.title,
            endpoint="chapters.meetup",
            values={"meetup_id": m.id},
            detail=(
                "cancelled"
                if m.is_cancelled
                else f"{counts[m.id][RsvpStatus.GOING]} going · {m.chapter.name}"
            ),
            when=m.starts_at.astimezone(m.chapter.zone),
        )
        for m in found
    }


@work_organised_by.connect
def organises_meetup(sender, kind: str, target_id: int, member: Member, **extra) -> bool | None:
    """Whether ``member`` organises the meetup's chapter, so may attach it to a campaign."""
    if kind != "meetup":
        return None
    meetup = db.session.get(Meetup, target_id)
    return meetup is not None and meetup.chapter.is_organised_by(member)


@data_export.connect
def export_member_chapters(sender, member: Member, **extra) -> dict[str, Any]:
    """The member's chapters (with whether they share their contact details there), RSVPs,
    votes, the proposals they opened, the meetups they created, whether they have a
    personal calendar feed (never its secret) and the invitations made to their confirmed
    address, for their data download."""
    memberships = db.session.scalars(select(Membership).where(Membership.member_id == member.id))
    rsvps = db.session.scalars(select(Rsvp).where(Rsvp.member_id == member.id))
    votes = db.session.scalars(select(Vote).where(Vote.member_id == member.id))
    proposals = db.session.scalars(
        select(Proposal).where(Proposal.author_id == member.id).order_by(Proposal.id)
    )
    meetups = db.session.scalars(
        select(Meetup).where(Meetup.created_by_id == member.id).order_by(Meetup.id)
    )
    key = invitation_key(member)
    invitations = (
        db.session.scalars(select(ChapterInvitation).where(ChapterInvitation.email_key == key))
        if key
        else []
    )
    return {
        "calendar_feed": {"has_personal_feed": db.session.get(CalendarKey, member.id) is not None},
        "chapter_invitations": [
            {
                "chapter": i.chapter.name,
                "email": i.email,
                "role": i.role,
                "state": i.state,
                "created_at": i.created_at.isoformat(),
            }
            for i in invitations
        ],
        "chapters": [
            {
                "chapter": m.chapter.name,
                "role": m.role,
                "joined_at": m.joined_at.isoformat(),
                "shares_contact": m.shares_contact,
            }
            for m in memberships
        ],
        "meetups_created": [
            {
                "meetup_id": m.id,
                "chapter": m.chapter.name,
                "title": m.title,
                "starts_at": m.starts_at.isoformat(),
                "created_at": m.created_at.isoformat(),
            }
            for m in meetups
        ],
        "proposals_opened": [
            {
                "proposal_id": p.id,
                "chapter": p.chapter.name,
                "title": p.title,
                "details": p.details,
                "state": p.state,
                "created_at": p.created_at.isoformat(),
            }
            for p in proposals
        ],
        "rsvps": [
            {"meetup_id": r.meetup_id, "status": r.status, "attended": r.attended} for r in rsvps
        ],
        "votes": [
            {"proposal_id": v.proposal_id, "choice": v.choice, "reason": v.reason} for v in votes
        ],
    }


@account_deleting.connect
def hand_over_before_deletion(sender, member: Member, **extra) -> None:
    """Free the member's places, withdraw their votes on open proposals, leave no
    chapter without an organiser, and drop the invitations kept against their confirmed
    address (they hold the address).

    Only flushed: the deletion commits everything at once, with the news for whoever gets
    a place, and none of it if the deletion is rolled back.
    """
    _give_up_places(member)
    _withdraw_open_votes(member)
    if key := invitation_key(member):
        db.session.execute(delete(ChapterInvitation).where(ChapterInvitation.email_key == key))
    for chapter in sorted(chapters_of(member), key=lambda c: c.id):  # lock in one order
        _lock_chapter(chapter)
        if chapter.is_organised_by(member) and len(chapter.organisers) == 1:
            others = [m for m in chapter.memberships if m.member_id != member.id]
            successor = _longest_standing(others)
            if successor is not None:
                successor.role = Role.ORGANISER
    db.session.flush()
