"""RQ jobs for account email. Each takes a member id and runs in an app context."""

from __future__ import annotations

from core import mail
from core.extensions import db
from core.urls import external_url
from members import services
from members.models import Member


def send_email_confirmation(member_id: int) -> bool:
    """Email the link that confirms the member's address; nothing if already confirmed."""
    member = db.session.get(Member, member_id)
    if member is None or member.email_awaiting_confirmation is None:
        return False
    link = external_url("members.confirm", token=services.confirmation_token(member))
    return mail.deliver(
        "confirm_account", member.email_awaiting_confirmation, member=member, link=link
    )


def send_password_reset(member_id: int) -> bool:
    """Email a single-use password reset link."""
    member = db.session.get(Member, member_id)
    if member is None:
        return False
    link = external_url("members.reset_password", token=services.reset_token(member))
    return mail.deliver("reset_password", member.email, member=member, link=link)


def send_already_registered(member_id: int) -> bool:
    """Tell an account's owner that someone tried to register with their address."""
    member = db.session.get(Member, member_id)
    if member is None:
        return False
    return mail.deliver(
        "already_registered",
        member.email,
        member=member,
        login_link=external_url("members.login"),
        reset_link=external_url("members.request_reset"),
    )
