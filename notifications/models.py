"""Notifications, their deliveries, in-app notices, preferences and failing addresses.

A ``Notification`` is one event (an update posted, a milestone reached). Each person it
goes to gets one ``Delivery`` row, unique per notification and address, which is what
makes a retried or repeated job harmless: a delivery is claimed before it is sent, and a
claimed delivery is never sent again.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import utcnow
from core.extensions import db


class Category(StrEnum):
    """What people choose how often to hear about."""

    PETITIONS = "petitions"
    CAMPAIGNS = "campaigns"
    MEETUPS = "meetups"
    DECISIONS = "decisions"


CATEGORY_LABELS = {
    Category.PETITIONS: "Petitions I signed or started",
    Category.CAMPAIGNS: "Campaigns I follow",
    Category.MEETUPS: "My chapters' meetups and news",
    Category.DECISIONS: "My chapters' decisions",
}


class Frequency(StrEnum):
    IMMEDIATELY = "immediately"
    DAILY = "daily"
    OFF = "off"


FREQUENCY_LABELS = {
    Frequency.IMMEDIATELY: "Immediately",
    Frequency.DAILY: "In a daily digest",
    Frequency.OFF: "Off",
}


class DeliveryState(StrEnum):
    PENDING = "pending"  # waiting for a worker
    # Claimed by a worker. A message is marked sent the moment it is handed to the server,
    # so one still ``sending`` after a crash was never handed over whole: safe to resend.
    SENDING = "sending"
    SENT = "sent"
    DIGEST = "digest"  # held for the recipient's daily digest
    DIGESTED = "digested"  # included in a digest that was sent
    SKIPPED = "skipped"  # preference off, the address is failing, or no longer applies
    FAILED = "failed"  # the server refused the address for good


class Notification(db.Model):
    """One event to tell people about."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(60))
    category: Mapped[str | None] = mapped_column(String(20))
    transactional: Mapped[bool] = mapped_column(Boolean, default=False)
    # Makes notify() idempotent for events that must be told once (a milestone, a digest).
    key: Mapped[str | None] = mapped_column(String(200), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    link: Mapped[str] = mapped_column(String(500), default="")
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    audience: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # After this moment the news is no use (a reminder once the meetup started, a
    # closing-soon message once the vote closed): it is neither sent nor put in a digest.
    expires_at: Mapped[datetime | None]
    # An audience is recorded a page at a time. The next page starts after ``fan_out_after``
    # (from the start while None); ``fanned_out_at`` is set once the last page is recorded.
    fan_out_after: Mapped[Any | None] = mapped_column(JSON)
    fan_out_paged_at: Mapped[datetime | None]
    fanned_out_at: Mapped[datetime | None]

    def has_expired(self, now: datetime) -> bool:
        """Whether, at ``now``, the notification is past the moment it was worth reading."""
        return self.expires_at is not None and self.expires_at <= now

    def is_next_page(self, after: Any) -> bool:
        """Whether the page starting after ``after`` is the one still to be recorded."""
        return self.fanned_out_at is None and self.fan_out_after == after

    def record_page(self, last_key: Any) -> None:
        """Move the fan-out on past a recorded page; ``None`` says it was the last."""
        now = utcnow()
        self.fan_out_paged_at = now
        if last_key is None:
            self.fanned_out_at = now
        else:
            self.fan_out_after = last_key


class Delivery(db.Model):
    """One notification to one address."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("notification_id", "email"),
        Index("ix_notification_deliveries_state_email", "state", "email"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="SET NULL"), index=True
    )
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(100), default="")
    state: Mapped[str] = mapped_column(String(10), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]

    notification: Mapped[Notification] = relationship()


class Notice(db.Model):
    """A notification in a member's notification centre."""

    __tablename__ = "notification_notices"
    __table_args__ = (
        UniqueConstraint("notification_id", "member_id"),
        Index("ix_notification_notices_member_read", "member_id", "read_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None]

    notification: Mapped[Notification] = relationship(lazy="joined")

    @property
    def is_read(self) -> bool:
        return self.read_at is not None


class Preference(db.Model):
    """How often one subscriber hears about one category; the default is immediately.

    ``subscriber`` is ``member:<id>`` for members and ``email:<address>`` for guests.
    """

    __tablename__ = "notification_preferences"

    subscriber: Mapped[str] = mapped_column(String(270), primary_key=True)
    category: Mapped[str] = mapped_column(String(20), primary_key=True)
    frequency: Mapped[str] = mapped_column(String(12), default=Frequency.IMMEDIATELY)


class FailingAddress(db.Model):
    """An address a mail server refused for good; it gets no bulk mail until confirmed again."""

    __tablename__ = "notification_failing_addresses"

    email: Mapped[str] = mapped_column(String(254), primary_key=True)
    reason: Mapped[str] = mapped_column(String(300))
    failed_at: Mapped[datetime] = mapped_column(default=utcnow)
