"""Petitions, their signatures, and the tallies derived from the signatures.

A signature row is the source of truth. ``Petition.signature_count``, the per-city
counts and the hourly counts are derived by tally jobs, which add what changed since
their last run; no web request writes to a petition's row when someone signs or confirms.
(The one exception is rare: someone signing again before their withdrawal was tallied;
that request runs the tally first, see ``Signature.renew``.)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypedDict

from sqlalchemy import (
    Boolean,
    ColumnElement,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    and_,
    or_,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.orm.attributes import set_committed_value

from core.db import Timestamped, utcnow
from core.extensions import db
from members.models import Member

MAX_OPEN_DAYS = 366
DEFAULT_OPEN_DAYS = 182
PENDING_SIGNATURE_DAYS = 7
MILESTONES = (10, 100, 1_000, 10_000, 100_000, 1_000_000)


class SignerChoices(TypedDict):
    """What a signer tells about themselves and chooses, each time they sign."""

    name: str
    city: str
    city_slug: str
    comment: str | None
    show_name: bool
    wants_updates: bool


class PetitionError(Exception):
    """A change the petition's current state does not allow."""


class PetitionState(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    CLOSED = "closed"
    WON = "won"
    HIDDEN = "hidden"


class Petition(Timestamped, db.Model):
    """A request to a named decision-maker, started by a member."""

    __tablename__ = "petitions"
    __table_args__ = (Index("ix_petitions_state_city", "state", "city_slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organiser_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="SET NULL"), index=True
    )
    title: Mapped[str] = mapped_column(String(150))
    ask: Mapped[str] = mapped_column(Text)
    decision_maker_name: Mapped[str] = mapped_column(String(150))
    decision_maker_role: Mapped[str] = mapped_column(String(150))
    city: Mapped[str] = mapped_column(String(80))
    city_slug: Mapped[str] = mapped_column(String(80))
    topic: Mapped[str] = mapped_column(String(40))
    goal: Mapped[int]
    closes_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(10), default=PetitionState.DRAFT)
    opened_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    outcome_note: Mapped[str | None] = mapped_column(Text)
    hidden_reason: Mapped[str | None] = mapped_column(String(500))
    signature_count: Mapped[int] = mapped_column(default=0)

    organiser: Mapped[Member | None] = relationship(lazy="joined")

    FROZEN_ONCE_SIGNED = ("ask", "decision_maker_name", "decision_maker_role")

    @property
    def takes_signatures(self) -> bool:
        return self.state == PetitionState.OPEN and self.closes_at > utcnow()

    @property
    def status(self) -> str:
        """The state as the public sees it: an open petition past its closing time is
        closed, in the minutes before the sweep records it."""
        if self.state == PetitionState.OPEN and self.closes_at <= utcnow():
            return PetitionState.CLOSED
        return self.state

    @classmethod
    def has_status(cls, status: str) -> ColumnElement[bool]:
        """The SQL condition for ``status``, written so an index on the state serves it."""
        now = utcnow()
        if status == PetitionState.OPEN:
            return and_(cls.state == PetitionState.OPEN, cls.closes_at > now)
        if status == PetitionState.CLOSED:
            expired = and_(cls.state == PetitionState.OPEN, cls.closes_at <= now)
            return or_(cls.state == PetitionState.CLOSED, expired)
        return cls.state == status

    @property
    def is_public(self) -> bool:
        return self.state in (PetitionState.OPEN, PetitionState.CLOSED, PetitionState.WON)

    @property
    def progress_percent(self) -> int:
        return min(100, round(100 * self.signature_count / self.goal)) if self.goal else 0

    def is_organised_by(self, member: Member | None) -> bool:
        return member is not None and member.is_authenticated and member.id == self.organiser_id

    def edit(self, changes: dict[str, object], *, has_signatures: bool) -> None:
        """Apply edits; once anyone has signed, the ask and the decision-maker are fixed."""
        if self.state not in (PetitionState.DRAFT, PetitionState.OPEN):
            raise PetitionError("Only a draft or open petition can be edited.")
        for field, value in changes.items():
            if (
                has_signatures
                and field in self.FROZEN_ONCE_SIGNED
                and getattr(self, field) != value
            ):
                raise PetitionError(
                    "People have signed this text, so the ask and the decision-maker "
                    "stay as they are."
                )
            if field == "closes_at" and self.opened_at is not None:
                self._refuse_closing_past_a_year(value)
            setattr(self, field, value)

    def _refuse_closing_past_a_year(self, closes_at: datetime) -> None:
        # Counted from the opening, so moving the date on cannot keep a petition open forever.
        latest = self.opened_at + timedelta(days=MAX_OPEN_DAYS)
        if closes_at > latest:
            raise PetitionError(
                "A petition can stay open for at most a year from when it opened: "
                f"choose a closing date no later than {latest:%Y-%m-%d}."
            )

    def publish(self) -> None:
        """draft → open."""
        self._require(PetitionState.DRAFT, "Only a draft can be published.")
        if self.closes_at <= utcnow():
            raise PetitionError("The closing date has passed; choose a later one first.")
        self.state, self.opened_at = PetitionState.OPEN, utcnow()

    def close(self) -> None:
        """open → closed, by the organiser or when its closing date passes."""
        self._require(PetitionState.OPEN, "Only an open petition can be closed.")
        self.state, self.ended_at = PetitionState.CLOSED, utcnow()

    def declare_victory(self, note: str) -> None:
        """open or closed → won, with a note on what was achieved."""
        if self.state not in (PetitionState.OPEN, PetitionState.CLOSED):
            self._refuse("Only an open or closed petition can be declared won.")
        self.state, self.outcome_note = PetitionState.WON, note
        self.ended_at = self.ended_at or utcnow()

    def hide(self, reason: str) -> None:
        """Any state → hidden, by a moderator."""
        if self.state == PetitionState.HIDDEN:
            raise PetitionError("This petition is already hidden.")
        self.state, self.hidden_reason = PetitionState.HIDDEN, reason

    def _require(self, state: PetitionState, message: str) -> None:
        if self.state != state:
            self._refuse(message)

    def _refuse(self, message: str) -> None:
        # A moderator may hide a petition while its organiser is changing it.
        if self.state == PetitionState.HIDDEN:
            message = "A moderator has hidden this petition, so it stays as it is."
        raise PetitionError(message)

    @staticmethod
    def default_closing_date() -> datetime:
        return utcnow() + timedelta(days=DEFAULT_OPEN_DAYS)

    @staticmethod
    def latest_closing_date() -> datetime:
        return utcnow() + timedelta(days=MAX_OPEN_DAYS)


class SignatureState(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    WITHDRAWN = "withdrawn"


class Signature(db.Model):
    """One person's signature on one petition; ``email_key`` makes it one per person."""

    __tablename__ = "signatures"
    __table_args__ = (
        UniqueConstraint("petition_id", "email_key"),
        # Tally jobs look for rows whose counted flag disagrees with their state.
        Index("ix_signatures_petition_counted", "petition_id", "counted", "state"),
        Index("ix_signatures_petition_confirmed_at", "petition_id", "confirmed_at"),
        Index("ix_signatures_state_created_at", "state", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    petition_id: Mapped[int] = mapped_column(ForeignKey("petitions.id", ondelete="CASCADE"))
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254))
    email_key: Mapped[str] = mapped_column(String(254))
    city: Mapped[str] = mapped_column(String(80))
    city_slug: Mapped[str] = mapped_column(String(80))
    comment: Mapped[str | None] = mapped_column(String(500))
    show_name: Mapped[bool] = mapped_column(Boolean, default=False)
    wants_updates: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(10), default=SignatureState.PENDING)
    # Whether the petition's tallies include this signature; the tally job reconciles it.
    counted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    withdrawn_at: Mapped[datetime | None]
    confirmation_sent_at: Mapped[datetime | None]

    petition: Mapped[Petition] = relationship()

    @property
    def public_name(self) -> str:
        return self.name if self.show_name else "Anonymous"

    def confirm(self) -> bool:
        """pending → confirmed; False if it was not pending when saved."""
        return self._change_state(
            (SignatureState.PENDING,), state=SignatureState.CONFIRMED, confirmed_at=utcnow()
        )

    def withdraw(self) -> bool:
        """pending or confirmed → withdrawn; the name and comment are dropped. False if it
        was withdrawn already, or is gone.

        The address stays, to be found if the same person signs again, and the place, for
        the tally to subtract, until the purge deletes the row."""
        return self._change_state(
            (SignatureState.PENDING, SignatureState.CONFIRMED),
            state=SignatureState.WITHDRAWN,
            withdrawn_at=utcnow(),
            name="",
            comment=None,
            show_name=False,
            wants_updates=False,
        )

    def renew(self, details: SignerChoices) -> bool:
        """withdrawn → pending, when the same person signs again; False if it was no
        longer withdrawn when saved (renewed by a request at the same time, say).

        The tallies subtract a signature by its city and confirmation hour, so one still
        counted must be tallied before it is renewed.
        """
        if self.counted:
            raise PetitionError("Tally the withdrawal before renewing the signature.")
        return self._change_state(
            (SignatureState.WITHDRAWN,),
            **details,
            state=SignatureState.PENDING,
            confirmed_at=None,
            withdrawn_at=None,
            created_at=utcnow(),
        )

    def _change_state(self, allowed: tuple[SignatureState, ...], **values: object) -> bool:
        """Save a change only if the row is still in one of the ``allowed`` states, in one
        conditional UPDATE: of two changes at once, the second finds the first's result
        instead of overwriting it. Whether this call changed the row; if it did not, the
        object is expired, to be read again as it is saved.
        """
        if self.state not in allowed:
            return False
        db.session.flush()  # a new row needs its id; a changed one is saved first
        changed = db.session.execute(
            update(Signature)
            .where(Signature.id == self.id, Signature.state.in_(allowed))
            .values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not changed:
            db.session.expire(self)
            return False
        for field, value in values.items():
            set_committed_value(self, field, value)
        return True

    def retake_details(self, details: SignerChoices) -> bool:
        """Take what the signer gave when signing again, while the signature is pending:
        the latest form is what they mean. False if it was no longer pending when saved."""
        return self._change_state((SignatureState.PENDING,), **details)

    def replace_details(self, details: SignerChoices) -> None:
        """Take the signer's details afresh while the signature is still pending."""
        if self.state != SignatureState.PENDING:
            raise PetitionError("Only a pending signature can take new details.")
        self._set_details(details)

    def _set_details(self, details: SignerChoices) -> None:
        for field, value in details.items():
            setattr(self, field, value)

    def anonymise(self) -> None:
        """Keep the signature counted but drop who made it (account deletion)."""
        self.name, self.comment, self.show_name, self.wants_updates = (
            "Former member",
            None,
            False,
            False,
        )
        self.email = self.email_key = f"deleted-{self.id}@invalid"
        self.member_id = None


class CityCount(db.Model):
    """Confirmed signatures of one petition from one city."""

    __tablename__ = "petition_city_counts"

    petition_id: Mapped[int] = mapped_column(
        ForeignKey("petitions.id", ondelete="CASCADE"), primary_key=True
    )
    city_slug: Mapped[str] = mapped_column(String(80), primary_key=True)
    city: Mapped[str] = mapped_column(String(80))
    count: Mapped[int] = mapped_column(default=0)


class HourlyCount(db.Model):
    """Confirmed signatures of one petition by the hour they were confirmed in."""

    __tablename__ = "petition_hourly_counts"

    petition_id: Mapped[int] = mapped_column(
        ForeignKey("petitions.id", ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(default=0)


class Milestone(db.Model):
    """A signature count a petition reached, recorded once."""

    __tablename__ = "petition_milestones"

    petition_id: Mapped[int] = mapped_column(
        ForeignKey("petitions.id", ondelete="CASCADE"), primary_key=True
    )
    threshold: Mapped[int] = mapped_column(primary_key=True)
    reached_at: Mapped[datetime] = mapped_column(default=utcnow)


class PetitionUpdate(db.Model):
    """News from the organiser, emailed to signers who asked for updates."""

    __tablename__ = "petition_updates"

    id: Mapped[int] = mapped_column(primary_key=True)
    petition_id: Mapped[int] = mapped_column(
        ForeignKey("petitions.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(150))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
