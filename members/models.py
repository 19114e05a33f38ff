"""The Member account."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import ClassVar

from flask_login import UserMixin
from sqlalchemy import ForeignKey, String, false
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from core.db import Timestamped, utcnow
from core.extensions import db

PASSWORD_HASH_METHOD = "scrypt"


def normalise_account_email(email: str) -> str:
    """Accounts are found by email regardless of case or surrounding spaces."""
    return email.strip().lower()


@cache
def _hash_of_no_account() -> str:
    return generate_password_hash(secrets.token_urlsafe(16), method=PASSWORD_HASH_METHOD)


def check_password_of_no_account(password: str) -> bool:
    """Check a password as costly as for a real account, for an address that has none.

    A sign-in answered sooner for unknown addresses would tell who has an account.
    """
    check_password_hash(_hash_of_no_account(), password)
    return False


class Member(UserMixin, Timestamped, db.Model):
    """Someone with an account. Guests who only sign petitions have none."""

    __tablename__ = "members"
    # Never reuse a deleted member's id: old links and records must not point at someone new.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    display_name: Mapped[str] = mapped_column(String(80))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    email_confirmed_at: Mapped[datetime | None]
    pending_email: Mapped[str | None] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    city: Mapped[str] = mapped_column(String(80))
    # Moderators may hide content that breaks the rules.
    is_moderator: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Bumped when the password changes, which ends every other session.
    session_version: Mapped[int] = mapped_column(default=1)

    def __init__(self, *, display_name: str, email: str, password: str, city: str) -> None:
        super().__init__(display_name=display_name, email=normalise_account_email(email), city=city)
        self.set_password(password)

    def __repr__(self) -> str:
        return f"<Member {self.id} {self.email}>"

    @property
    def is_confirmed(self) -> bool:
        return self.email_confirmed_at is not None

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method=PASSWORD_HASH_METHOD)
        self.session_version = (self.session_version or 0) + 1

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def password_fingerprint(self) -> str:
        """Changes whenever the password does, so reset links work once."""
        return hashlib.sha256(self.password_hash.encode()).hexdigest()[:16]

    def request_email_change(self, new_email: str) -> None:
        """Hold a new address until it is confirmed; the old one stays in use meanwhile."""
        self.pending_email = normalise_account_email(new_email)

    def cancel_email_change(self) -> bool:
        """Drop the address awaiting confirmation, so its link stops working; True if one was."""
        was_pending = self.pending_email is not None
        self.pending_email = None
        return was_pending

    def confirm_email(self, email: str) -> bool:
        """Confirm ``email`` if it is the address awaiting confirmation; True if it was."""
        email = normalise_account_email(email)
        if self.pending_email == email:
            self.email, self.pending_email = email, None
            self.email_confirmed_at = utcnow()
            return True
        if self.email == email and not self.is_confirmed:
            self.email_confirmed_at = utcnow()
            return True
        return False

    @property
    def email_awaiting_confirmation(self) -> str | None:
        """The address a confirmation link should go to, if any."""
        if self.pending_email:
            return self.pending_email
        return None if self.is_confirmed else self.email


class ApiToken(db.Model):
    """A member's key to the API. Only a hash is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(12))  # the first characters, to tell tokens apart
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()


# --- offers made out to an address ----------------------------------------------------------


class InvitationState(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"


def invitation_key(member: Member | None) -> str | None:
    """The key of what is offered to the member's address, once they confirmed it.

    Anyone can register with any address, so an unconfirmed one is offered nothing.
    """
    if member is None or not getattr(member, "is_authenticated", False):
        return None
    return normalise_account_email(member.email) if member.is_confirmed else None


class Answerable:
    """An invitation made out to an address: open until answered once, or until it lapses
    ``lifetime`` after it was made. A model mixing it in has ``created_at``, ``state`` and
    ``answered_at``, and names the error its refusals raise and what a lapse says."""

    lifetime: ClassVar[timedelta]
    refusal: ClassVar[type[Exception]]
    lapsed: ClassVar[str]

    @property
    def expires_at(self) -> datetime:
        return self.created_at + self.lifetime

    @property
    def is_open(self) -> bool:
        """Still waiting for an answer, and not lapsed."""
        return self.state == InvitationState.PENDING and utcnow() < self.expires_at

    def accept(self) -> None:
        self._answer(InvitationState.ACCEPTED)

    def decline(self) -> None:
        self._answer(InvitationState.DECLINED)

    def _answer(self, state: InvitationState) -> None:
        if self.state != InvitationState.PENDING:
            raise self.refusal("You have already answered this invitation.")
        if not self.is_open:
            raise self.refusal(self.lapsed)
        self.state, self.answered_at = state, utcnow()
