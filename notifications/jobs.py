"""RQ jobs for notifications. They take ids (the digests: a day and where in address order
to carry on) and are safe to run twice."""

from __future__ import annotations

from datetime import date

from core.extensions import db
from core.queue import periodic
from core.urls import external_url
from members import services as members
from members.models import Member
from members.signals import account_mail_wanted
from notifications import services
from notifications.models import Delivery


def fan_out(notification_id: int, after=None) -> int:
    """Record one page of who receives a notification and queue their delivery in batches."""
    return services.fan_out(notification_id, after)


def deliver(delivery_ids: list[int]) -> int:
    """Send one batch of deliveries over one mail connection."""
    return services.deliver(delivery_ids)


def send_transactional() -> int:
    """Send the next batch of waiting confirmations, resets and other transactional mail."""
    return services.send_transactional()


@periodic(interval=300)
def requeue_stalled_notifications() -> int:
    """Queue again notifications and deliveries that a lost job or Redis outage left."""
    return services.requeue_stalled()


# RQ reads cron lines in the scheduler's local time, and every time zone is a whole number
# of quarter hours from UTC: a run every quarter hour falls on 07:00 UTC wherever it is
# scheduled, and the job itself tells, in UTC, when the day's digests are due.
@periodic(queue="bulk", cron="*/15 * * * *")
def send_daily_digests() -> int:
    """Every morning from 07:00 UTC: one email per person gathering what they chose to
    receive daily, a slice of addresses per job."""
    return services.start_daily_digests()


def send_digests_after(day: str, after: str) -> int:
    """Carry on the digests of ``day`` (ISO date) with the addresses after ``after``."""
    return services.send_daily_digests(date.fromisoformat(day), after)


# --- account messages: members raise a signal, and they are sent from here ------------


@account_mail_wanted.connect
def _send_account_mail(sender, member: Member, kind: str, **extra) -> None:
    address = member.email_awaiting_confirmation if kind == "confirm_account" else member.email
    if address is None:
        return
    services.notify(
        kind,
        title=ACCOUNT_TITLES[kind],
        payload={"member_id": member.id, "email": address},
        recipients=[services.Recipient(address, member.id, member.display_name)],
    )


ACCOUNT_TITLES = {
    "confirm_account": "Confirm your email for Groundswell",
    "reset_password": "Reset your Groundswell password",
    "already_registered": "You already have a Groundswell account",
}


def _member(payload: dict) -> Member | None:
    return db.session.get(Member, payload["member_id"])


@services.message("confirm_account", transactional=True)
def confirm_account_message(payload: dict, delivery: Delivery) -> dict | None:
    """The link that confirms a member's address, while it still awaits confirmation."""
    member = _member(payload)
    if member is None or member.email_awaiting_confirmation != payload["email"]:
        return None
    token = members.confirmation_token(member)
    return {"member": member, "link": external_url("members.confirm", token=token)}


@services.message("reset_password", transactional=True)
def reset_password_message(payload: dict, delivery: Delivery) -> dict | None:
    """A single-use link to choose a new password, to the address it was asked for."""
    member = _member(payload)
    if member is None or member.email != payload["email"]:
        return None
    token = members.reset_token(member)
    return {"member": member, "link": external_url("members.reset_password", token=token)}


@services.message("already_registered", transactional=True)
def already_registered_message(payload: dict, delivery: Delivery) -> dict | None:
    """Someone tried to register with an address that has an account."""
    member = _member(payload)
    if member is None:
        return None
    return {
        "member": member,
        "login_link": external_url("members.login"),
        "reset_link": external_url("members.request_reset"),
    }
