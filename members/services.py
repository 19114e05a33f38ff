"""Account operations: registration, confirmation, sign-in checks, resets and deletion."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

from flask import current_app
from markupsafe import Markup
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from core import mail, ratelimit
from core.db import utcnow
from core.extensions import db
from core.hooks import collect
from core.tokens import make_token, read_token
from members.models import (
    ApiToken,
    Member,
    check_password_of_no_account,
    normalise_account_email,
)
from members.signals import (
    account_deleting,
    account_mail_wanted,
    data_export,
    email_confirmed,
    password_changed,
    profile_sections,
)

CONFIRM_PURPOSE = "confirm-email"
# However often someone presses "register" or "resend", an inbox gets at most this much.
ACCOUNT_MAIL_LIMIT = "5 per hour"
# Anyone can make us tell an owner that their address was tried, so those notices have an
# allowance of their own and cannot use up the one for confirmation links.
ADDRESS_IN_USE_MAIL_LIMIT = "5 per hour"
RESET_PURPOSE = "reset-password"


def _app():
    return current_app._get_current_object()


def find_by_email(email: str) -> Member | None:
    """The member whose account email is ``email``, in any case."""
    return db.session.scalar(select(Member).where(Member.email == normalise_account_email(email)))


def hold_account(member: Member) -> None:
    """Hold the member's row until commit: two copies of one form they sent at once are
    then saved one after the other, and the second can find the first.

    The UPDATE changes nothing but takes the row lock (PostgreSQL) or the write lock
    (SQLite, which ignores FOR UPDATE) until commit.
    """
    db.session.execute(
        update(Member)
        .where(Member.id == member.id)
        .values(updated_at=Member.updated_at)  # as it was: the account is not changed
        .execution_options(synchronize_session=False)
    )


def register(*, display_name: str, email: str, password: str, city: str) -> Member | None:
    """Create an unconfirmed account and send its confirmation link.

    When the address already has an account, nothing is created and its owner is told
    by email instead, so the page never reveals who has an account. Returns the new
    member, or None in that case.
    """
    # Built first, so the password is hashed either way and the answer takes as long.
    member = Member(display_name=display_name, email=email, password=password, city=city)
    if existing := find_by_email(email):
        tell_owner_address_in_use(existing)
        return None
    db.session.add(member)
    try:
        db.session.commit()
    except IntegrityError:
        # Another request registered the address between our check and our insert.
        db.session.rollback()
        existing = find_by_email(email)
        if existing is None:
            raise
        tell_owner_address_in_use(existing)
        return None
    send_confirmation(member)
    return member


def tell_owner_address_in_use(owner: Member) -> None:
    """Tell an account's owner that someone tried to use their address, within limits."""
    if ratelimit.hit(
        ADDRESS_IN_USE_MAIL_LIMIT, f"address-in-use-mail:{owner.id}", allow_when_down=True
    ):
        account_mail_wanted.send(_app(), member=owner, kind="already_registered")


def send_confirmation(member: Member) -> None:
    """Queue the email that confirms the member's address (or new address), within limits.

    A new address that belongs to another account gets its owner a notice instead of a
    link, so asking for it reveals nothing about who has an account.
    """
    awaiting = member.email_awaiting_confirmation
    owner = find_by_email(awaiting) if awaiting else None
    if owner is not None and owner.id != member.id:
        tell_owner_address_in_use(owner)
        return
    if not _within_account_mail_limits(member, awaiting or member.email):
        return
    account_mail_wanted.send(_app(), member=member, kind="confirm_account")


def _within_account_mail_limits(member: Member, address: str) -> bool:
    """Counted per account, and per inbox for other spellings of it: accounts registered
    as ``ana+1@``, ``a.na@`` and so on must not flood one inbox, nor use up the allowance
    of the account registered with the inbox's own address."""
    limits = [(ACCOUNT_MAIL_LIMIT, f"account-mail:{member.id}")]
    inbox = mail.inbox_key(address)
    if inbox != mail.as_mailed(address.strip()).lower():
        limits.append((ACCOUNT_MAIL_LIMIT, f"account-mail:inbox:{inbox}"))
    return ratelimit.hit_all(limits, allow_when_down=True) is None


def confirmation_token(member: Member) -> str:
    """A link token confirming the address that awaits confirmation."""
    return make_token(
        CONFIRM_PURPOSE, {"id": member.id, "email": member.email_awaiting_confirmation}
    )


def member_for_confirmation(token: str) -> tuple[Member, str] | None:
    """The member and address a confirmation token names, while that address awaits.

    A link for an email change that was cancelled or replaced by another stops working.
    """
    payload = read_token(CONFIRM_PURPOSE, token, current_app.config["EMAIL_TOKEN_MAX_AGE"])
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), int):
        return None
    member = db.session.get(Member, payload["id"])
    email = payload.get("email")
    if member is None or email is None or email != member.email_awaiting_confirmation:
        return None
    return member, email


def confirm_email(token: str) -> Member | None:
    """Confirm the address a token names; returns the member, or None if the link is stale."""
    found = member_for_confirmation(token)
    if found is None:
        return None
    member, email = found
    taken = find_by_email(email)
    if taken is not None and taken.id != member.id:
        return None
    if not member.confirm_email(email):
        return None
    try:
        db.session.commit()
    except IntegrityError:  # another account took the address since it was looked up
        db.session.rollback()
        return None
    email_confirmed.send(_app(), member=member)
    return member


@dataclass(frozen=True)
class LoginResult:
    member: Member | None = None
    retry_after: int | None = None


def _login_limits(email: str, address: str) -> tuple[tuple[str, str], tuple[str, str]]:
    config = current_app.config
    return (
        (config["LOGIN_LIMIT_PER_ACCOUNT"], f"login:account:{normalise_account_email(email)}"),
        (config["LOGIN_LIMIT_PER_ADDRESS"], f"login:address:{address}"),
    )


def authenticate(email: str, password: str, address: str) -> LoginResult:
    """Check a login attempt against the account's and the address's limits.

    Every attempt on an account counts before its password is checked, so that guesses
    sent in parallel cannot all pass the check before the first is counted; one's own
    successful logins rarely come ten in a quarter of an hour. Against the address only
    failures count, since many people may log in from one shared network.
    """
    account, by_address = _login_limits(email, address)
    if ratelimit.is_exhausted(*by_address):
        return LoginResult(retry_after=ratelimit.seconds_until_free(*by_address))
    if not ratelimit.hit(*account):
        return LoginResult(retry_after=ratelimit.seconds_until_free(*account))
    member = find_by_email(email)
    if _password_matches(member, password):
        return LoginResult(member=member)
    ratelimit.hit(*by_address)
    return LoginResult()


def _password_matches(member: Member | None, password: str) -> bool:
    if member is None:
        return check_password_of_no_account(password)
    return member.check_password(password)


def load_session_member(session_id: str) -> Member | None:
    """The member for a login session id, if that session has not been ended."""
    member_id, _, version = session_id.partition(":")
    if not member_id.isdigit() or not version.isdigit():
        return None
    member = db.session.get(Member, int(member_id))
    if member is None or member.session_version != int(version):
        return None
    return member


RESET_REQUEST_LIMITS = ("5 per hour", "20 per hour")


def request_password_reset(email: str, address: str) -> None:
    """Email a reset link if an account has this address; say nothing either way."""
    per_email, per_address = RESET_REQUEST_LIMITS
    if not ratelimit.hit(per_email, f"reset:email:{normalise_account_email(email)}"):
        return
    if not ratelimit.hit(per_address, f"reset:address:{address}"):
        return
    member = find_by_email(email)
    if member is not None:
        account_mail_wanted.send(_app(), member=member, kind="reset_password")


def reset_token(member: Member) -> str:
    """A reset token that stops working once the password or the address changes."""
    return make_token(
        RESET_PURPOSE, {"id": member.id, "v": member.password_fingerprint, "e": member.email}
    )


def member_for_reset(token: str) -> Member | None:
    """The member a reset token belongs to, if it is fresh and unused."""
    payload = read_token(RESET_PURPOSE, token, current_app.config["RESET_TOKEN_MAX_AGE"])
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), int):
        return None
    member = db.session.get(Member, payload["id"])
    if member is None or payload.get("v") != member.password_fingerprint:
        return None
    # A link mailed to an address the account has since left must not take it over.
    if payload.get("e") != member.email:
        return None
    return member


def reset_password(token: str, password: str) -> Member | None:
    """Set a new password through a reset link; the link is spent afterwards."""
    member = member_for_reset(token)
    if member is None:
        return None
    _set_new_password(member, password)
    # Following the emailed link proves the member reads this address, confirmed or not
    # before: an address that once refused mail, say, takes it again.
    member.confirm_email(member.email)
    db.session.commit()
    email_confirmed.send(_app(), member=member)
    return member


def update_profile(member: Member, *, display_name: str, city: str) -> None:
    """Change the name and home city."""
    member.display_name, member.city = display_name, city
    db.session.commit()


class EmailChange(Enum):
    REQUESTED = "requested"
    CANCELLED = "cancelled"
    UNCHANGED = "unchanged"


def change_email(member: Member, new_email: str) -> EmailChange:
    """Start an email change, or cancel the pending one when given the current address.

    The new address is used once confirmed. The answer is the same whether or not the
    new address has another account (its owner then gets a notice, not a link).
    """
    if normalise_account_email(new_email) == member.email:
        cancelled = member.cancel_email_change()
        db.session.commit()
        return EmailChange.CANCELLED if cancelled else EmailChange.UNCHANGED
    member.request_email_change(new_email)
    db.session.commit()
    send_confirmation(member)
    return EmailChange.REQUESTED


def change_password(member: Member, new_password: str) -> None:
    """Set a new password; other sessions of this member end, and API tokens and feed
    addresses are revoked."""
    _set_new_password(member, new_password)
    db.session.commit()


def _set_new_password(member: Member, password: str) -> None:
    # Whoever knew the old password may have made tokens or stayed logged in elsewhere;
    # set_password ends those sessions, and the tokens and what features keep go here
    # (committed by the caller).
    member.set_password(password)
    db.session.execute(delete(ApiToken).where(ApiToken.member_id == member.id))
    password_changed.send(_app(), member=member)


def profile_html(member: Member) -> list[Any]:
    """Sections that features contribute to the member's profile page."""
    return [Markup(html) for html in collect(profile_sections, member=member)]


def export_data(member: Member) -> dict[str, Any]:
    """Everything Groundswell holds about the member, as JSON-ready data."""
    data: dict[str, Any] = {
        "account": {
            "id": member.id,
            "display_name": member.display_name,
            "email": member.email,
            "email_confirmed_at": member.email_confirmed_at.isoformat()
            if member.email_confirmed_at
            else None,
            "pending_email": member.pending_email,
            "city": member.city,
            "created_at": member.created_at.isoformat(),
        },
        "api_tokens": [_token_record(token) for token in api_tokens_of(member)],
    }
    for _, section in data_export.send(_app(), member=member):
        data.update(section or {})
    return data


def _token_record(token: ApiToken) -> dict[str, Any]:
    """A token as its account page lists it: never its hash, which would let anyone who
    sees the download test guesses at the token."""
    return {
        "name": token.name,
        "hint": token.hint,
        "created_at": token.created_at.isoformat(),
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
    }


def delete_account(member: Member) -> None:
    """Delete the account; features first anonymise what they keep (signatures stay counted)."""
    account_deleting.send(_app(), member=member)
    db.session.delete(member)
    db.session.commit()


# --- API tokens ---------------------------------------------------------------------------

API_TOKEN_PREFIX = "gs_"
MAX_API_TOKENS = 10


def create_api_token(member: Member, name: str) -> str:
    """Make a token for ``member`` and return it; it cannot be shown again.

    Only with a confirmed address: whoever registered someone else's address must not
    keep a key to the account once its owner takes it over.
    """
    if not member.is_confirmed:
        raise ValueError("Please confirm your email address before making a token.")
    if len(api_tokens_of(member)) >= MAX_API_TOKENS:
        raise ValueError(f"You can have at most {MAX_API_TOKENS} tokens. Revoke one first.")
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.session.add(
        ApiToken(member_id=member.id, name=name, token_hash=ApiToken.hash(token), hint=token[:7])
    )
    db.session.commit()
    return token


def api_tokens_of(member: Member) -> list[ApiToken]:
    return list(
        db.session.scalars(
            select(ApiToken).where(ApiToken.member_id == member.id).order_by(ApiToken.id)
        )
    )


def revoke_api_token(member: Member, token_id: int) -> bool:
    token = db.session.get(ApiToken, token_id)
    if token is None or token.member_id != member.id:
        return False
    db.session.delete(token)
    db.session.commit()
    return True


def member_for_api_token(token: str) -> Member | None:
    """The confirmed member a token belongs to, or None for an unknown or revoked token."""
    if not token.startswith(API_TOKEN_PREFIX) or len(token) > 100:
        return None
    found = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == ApiToken.hash(token)))
    if found is None:
        return None
    member = db.session.get(Member, found.member_id)
    if member is None or not member.is_confirmed:
        return None
    if found.last_used_at is None or found.last_used_at < utcnow() - timedelta(hours=1):
        found.last_used_at = utcnow()  # roughly, so reads do not write on every request
        db.session.commit()
    return member
