"""Chapters, their members, meetups with RSVPs and waitlists, and proposals put to a vote.

Times are stored in UTC. A chapter's time zone is only for showing and reading times,
so a meetup keeps its instant when the clocks change.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Timestamped, utcnow
from core.extensions import db
from members.models import Answerable, InvitationState, Member


class ChapterError(Exception):
    """A change the current state of a chapter, meetup or proposal does not allow.

    ``field`` names the form field the refusal is about, if any, so that a form shows the
    message beside it.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ChapterState(StrEnum):
    FORMING = "forming"  # waiting for enough members
    ACTIVE = "active"


class Role(StrEnum):
    ORGANISER = "organiser"
    MEMBER = "member"


class Chapter(Timestamped, db.Model):
    """A city group that members found, join and govern."""

    __tablename__ = "chapters"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    city: Mapped[str] = mapped_column(String(80))
    city_slug: Mapped[str] = mapped_column(String(80), index=True)
    time_zone: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(10), default=ChapterState.FORMING)
    activated_at: Mapped[datetime | None]
    members_can_schedule: Mapped[bool] = mapped_column(default=False)
    quorum_percent: Mapped[int] = mapped_column(default=20)
    quorum_minimum: Mapped[int] = mapped_column(default=3)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="chapter", cascade="all, delete-orphan", order_by="Membership.id"
    )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @property
    def is_active(self) -> bool:
        return self.state == ChapterState.ACTIVE

    @property
    def organisers(self) -> list[Membership]:
        return [m for m in self.memberships if m.role == Role.ORGANISER]

    def membership_of(self, member: Member | None) -> Membership | None:
        if member is None or not getattr(member, "is_authenticated", False):
            return None
        return next((m for m in self.memberships if m.member_id == member.id), None)

    def is_organised_by(self, member: Member | None) -> bool:
        membership = self.membership_of(member)
        return membership is not None and membership.role == Role.ORGANISER

    def may_schedule(self, member: Member | None) -> bool:
        membership = self.membership_of(member)
        if membership is None:
            return False
        return membership.role == Role.ORGANISER or self.members_can_schedule

    def activate_if_ready(self, member_count: int, threshold: int) -> bool:
        """Become active once ``threshold`` members have joined; True when that happens now."""
        if self.is_active or member_count < threshold:
            return False
        self.state, self.activated_at = ChapterState.ACTIVE, utcnow()
        return True

    def quorum_rules(self) -> dict[str, int]:
        """The quorum settings, as a proposal opened now keeps them."""
        return {"quorum_percent": self.quorum_percent, "quorum_minimum": self.quorum_minimum}


class Membership(db.Model):
    """A member of a chapter, and their role in it."""

    __tablename__ = "chapter_memberships"
    __table_args__ = (UniqueConstraint("chapter_id", "member_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    chapter_id: Mapped[int] = mapped_column(ForeignKey("chapters.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(10), default=Role.MEMBER)
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The member agreed that organisers may export their name and email with the chapter.
    shares_contact: Mapped[bool] = mapped_column(default=False, server_default=false())

    chapter: Mapped[Chapter] = relationship(back_populates="memberships")
    member: Mapped[Member] = relationship()


class MeetupState(StrEnum):
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"


class Meetup(Timestamped, db.Model):
    """A chapter's gathering, in person or online, with an optional capacity."""

    __tablename__ = "meetups"
    __table_args__ = (Index("ix_meetups_chapter_starts", "chapter_id", "starts_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    chapter_id: Mapped[int] = mapped_column(ForeignKey("chapters.id", ondelete="CASCADE"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(String(150))
    description: Mapped[str] = mapped_column(Text)
    starts_at: Mapped[datetime] = mapped_column(index=True)
    ends_at: Mapped[datetime]
    venue: Mapped[str | None] = mapped_column(String(150))
    address: Mapped[str | None] = mapped_column(String(300))
    online_link: Mapped[str | None] = mapped_column(String(500))
    capacity: Mapped[int | None]
    state: Mapped[str] = mapped_column(String(10), default=MeetupState.SCHEDULED)
    cancelled_at: Mapped[datetime | None]
    time_set_at: Mapped[datetime | None]  # when it last moved; empty for one never moved
    # Counts changes that calendars show (iCalendar's SEQUENCE); answers leave it alone.
    revision: Mapped[int] = mapped_column(default=0, server_default="0")
    # Bumped by every RSVP change: the UPDATE serialises changes to one meetup's list.
    rsvp_version: Mapped[int] = mapped_column(default=0)

    chapter: Mapped[Chapter] = relationship()

    @property
    def is_cancelled(self) -> bool:
        return self.state == MeetupState.CANCELLED

    @property
    def time_announced_at(self) -> datetime:
        """When people learnt of the current start time."""
        return self.time_set_at or self.created_at

    @property
    def has_started(self) -> bool:
        return self.starts_at <= utcnow()

    @property
    def has_ended(self) -> bool:
        return self.ends_at <= utcnow()

    @property
    def is_open_for_rsvp(self) -> bool:
        """Answers and the waitlist close at the start: who came is history by then."""
        return not self.is_cancelled and not self.has_started

    @property
    def can_be_changed(self) -> bool:
        """Details may change (and the meetup be cancelled) until it is over."""
        return not self.is_cancelled and not self.has_ended

    def is_run_by(self, member: Member | None) -> bool:
        """Whether ``member`` may edit and cancel it: the chapter's organisers, and the
        member who scheduled it while they remain in the chapter."""
        membership = self.chapter.membership_of(member)
        if membership is None:
            return False
        return membership.role == Role.ORGANISER or membership.member_id == self.created_by_id

    @property
    def place(self) -> str:
        """Where it happens, in one line, with the online link: for the chapter's members."""
        return self._place_with(self.online_link)

    @property
    def public_place(self) -> str:
        """Where it happens, for anyone: an online meetup's link is for members only, so
        that strangers cannot drop into the call."""
        return self._place_with("online" if self.online_link else None)

    def _place_with(self, online: str | None) -> str:
        return ", ".join(part for part in (self.venue, self.address, online) if part)

    def set_times(self, starts_at: datetime, ends_at: datetime) -> None:
        if ends_at <= starts_at:
            raise ChapterError("A meetup must end after it starts.", field="ends")
        if self.starts_at is not None and starts_at != self.starts_at:
            self.time_set_at = utcnow()
        self.starts_at, self.ends_at = starts_at, ends_at

    def cancel(self) -> None:
        if self.is_cancelled:
            raise ChapterError("This meetup is already cancelled.")
        if self.has_ended:
            raise ChapterError("This meetup is over; it can no longer be cancelled.")
        self.state, self.cancelled_at = MeetupState.CANCELLED, utcnow()
        self.revision += 1

    @property
    def calendar_fields(self) -> tuple:
        """What a calendar shows of it: a change to any is a new revision."""
        return (self.title, self.description, self.starts_at, self.ends_at, self.place)


class RsvpStatus(StrEnum):
    GOING = "going"
    WAITLISTED = "waitlisted"
    NOT_GOING = "not-going"


class Rsvp(db.Model):
    """One member's answer to one meetup; the waitlist is ordered by ``waitlisted_at``."""

    __tablename__ = "meetup_rsvps"
    __table_args__ = (
        UniqueConstraint("meetup_id", "member_id"),
        Index("ix_meetup_rsvps_meetup_status", "meetup_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    meetup_id: Mapped[int] = mapped_column(ForeignKey("meetups.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(12))
    responded_at: Mapped[datetime] = mapped_column(default=utcnow)
    waitlisted_at: Mapped[datetime | None]
    attended: Mapped[bool] = mapped_column(default=False)

    member: Mapped[Member] = relationship()


class ProposalState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Outcome(StrEnum):
    PASSED = "passed"
    REJECTED = "rejected"
    BLOCKED = "blocked"
    NO_QUORUM = "no-quorum"


OUTCOME_LABELS = {
    Outcome.PASSED: "Passed",
    Outcome.REJECTED: "Rejected",
    Outcome.BLOCKED: "Blocked",
    Outcome.NO_QUORUM: "No quorum",
}


class Choice(StrEnum):
    AGREE = "agree"
    ABSTAIN = "abstain"
    DISAGREE = "disagree"
    BLOCK = "block"


CHOICE_LABELS = {
    Choice.AGREE: "Agree",
    Choice.ABSTAIN: "Abstain",
    Choice.DISAGREE: "Disagree",
    Choice.BLOCK: "Block",
}


def decide(tally: dict[str, int], votes_needed: int) -> Outcome:
    """The outcome of a vote: quorum first, then any block, then agree against disagree."""
    if sum(tally.values()) < votes_needed:
        return Outcome.NO_QUORUM
    if tally.get(Choice.BLOCK, 0):
        return Outcome.BLOCKED
    if tally.get(Choice.AGREE, 0) > tally.get(Choice.DISAGREE, 0):
        return Outcome.PASSED
    return Outcome.REJECTED


class Proposal(Timestamped, db.Model):
    """A decision put to a chapter's members, open until ``closes_at``."""

    __tablename__ = "proposals"
    __table_args__ = (Index("ix_proposals_state_closes", "state", "closes_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    chapter_id: Mapped[int] = mapped_column(
        ForeignKey("chapters.id", ondelete="CASCADE"), index=True
    )
    author_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(String(150))
    details: Mapped[str] = mapped_column(Text)
    closes_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(10), default=ProposalState.OPEN)
    outcome: Mapped[str | None] = mapped_column(String(10))
    closed_at: Mapped[datetime | None]
    members_at_close: Mapped[int | None]
    votes_needed: Mapped[int | None]
    # The chapter's quorum settings when the vote opened: an organiser changing them
    # meanwhile cannot change the outcome of a vote under way.
    quorum_percent: Mapped[int]
    quorum_minimum: Mapped[int]

    chapter: Mapped[Chapter] = relationship()
    author: Mapped[Member | None] = relationship()

    @property
    def is_open(self) -> bool:
        return self.state == ProposalState.OPEN

    def quorum_for(self, member_count: int) -> int:
        """The votes needed: a share of the members, and never fewer than the minimum."""
        return max(self.quorum_minimum, math.ceil(member_count * self.quorum_percent / 100))

    def close(self, tally: dict[str, int], member_count: int) -> Outcome:
        """Record the outcome, with the members as they stood at closing."""
        if not self.is_open:
            raise ChapterError("This proposal is already closed.")
        needed = self.quorum_for(member_count)
        outcome = decide(tally, needed)
        self.state, self.outcome, self.closed_at = ProposalState.CLOSED, outcome, utcnow()
        self.members_at_close, self.votes_needed = member_count, needed
        return outcome


class Vote(Timestamped, db.Model):
    """One member's vote on one proposal; it can change until the proposal closes."""

    __tablename__ = "proposal_votes"
    __table_args__ = (UniqueConstraint("proposal_id", "member_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("proposals.id", ondelete="CASCADE"))
    # A vote on a decided proposal stays counted without a name when its account goes; on
    # an open one it is withdrawn, as only members' votes decide (see services.tally).
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="SET NULL"), index=True
    )
    choice: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(String(1000))

    member: Mapped[Member | None] = relationship()


# An imported file's list of people ages: after this, its invitations are neither shown
# nor accepted.
INVITATION_LIFETIME = timedelta(days=90)


class ChapterInvitation(Answerable, db.Model):
    """An offer to join an imported chapter, made to an address its export file listed.

    The file is the importer's word, not the person's, so nobody is enrolled or emailed:
    a member whose confirmed address matches sees the offer and takes it up or declines.
    """

    __tablename__ = "chapter_invitations"
    __table_args__ = (UniqueConstraint("chapter_id", "email_key"),)
    lifetime = INVITATION_LIFETIME
    refusal = ChapterError
    lapsed = "This invitation has expired. You can still join the chapter."

    id: Mapped[int] = mapped_column(primary_key=True)
    chapter_id: Mapped[int] = mapped_column(ForeignKey("chapters.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(254))  # as the file gave it
    email_key: Mapped[str] = mapped_column(String(254), index=True)  # as accounts match it
    role: Mapped[str] = mapped_column(String(10), default=Role.MEMBER)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(10), default=InvitationState.PENDING)
    answered_at: Mapped[datetime | None]

    chapter: Mapped[Chapter] = relationship()


class CalendarKey(db.Model):
    """The secret in a member's personal calendar feed address; replaced to revoke it."""

    __tablename__ = "calendar_keys"

    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(String(64), unique=True)
