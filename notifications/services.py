"""Notifications: how every feature tells people things, by email and in the app.

A feature declares its messages once with ``@message`` (the template and a function that
builds its context from stored ids) and, for large audiences, an ``@audience`` function.
Web code then calls :func:`notify`; RQ workers do the rest:

- transactional messages (confirmations, resets, waitlist promotions) go on ``high`` and
  ignore preferences;
- everything else goes through a fan-out job on ``bulk``, which records one delivery per
  address, adds in-app notices for members, and queues batches that honour preferences
  (immediately, daily digest, off) and skip addresses that have failed for good.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from itertools import islice
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from core import mail
from core.db import dialect_insert, utcnow
from core.extensions import db
from core.queue import default_retry, enqueue
from core.tokens import make_token, read_token
from core.urls import external_url
from members.models import Member
from members.signals import email_confirmed
from notifications.models import (
    Category,
    Delivery,
    DeliveryState,
    FailingAddress,
    Frequency,
    Notice,
    Notification,
    Preference,
)

BATCH_SIZE = 200
INSERT_CHUNK = 1000
UNSUBSCRIBE_PURPOSE = "unsubscribe"
PREFERENCES_PURPOSE = "notification-preferences"
ALL_CATEGORIES = "all"


@dataclass(frozen=True)
class Recipient:
    email: str
    member_id: int | None = None
    name: str = ""


ContextBuilder = Callable[[dict[str, Any], Delivery], dict[str, Any] | None]


@dataclass(frozen=True)
class MessageKind:
    """A message a feature sends: ``email/<name>.txt`` and ``.html``, and how to fill them."""

    name: str
    category: Category | None
    transactional: bool
    build: ContextBuilder


KINDS: dict[str, MessageKind] = {}
AUDIENCES: dict[str, Callable[[dict[str, Any]], Iterable[Recipient]]] = {}


def message(
    name: str, *, category: Category | None = None, transactional: bool = False
) -> Callable[[ContextBuilder], ContextBuilder]:
    """Declare a message. The builder runs in a worker, once per recipient, and returns the
    template context, or None when the message no longer applies (e.g. already confirmed)."""

    def register(build: ContextBuilder) -> ContextBuilder:
        KINDS[name] = MessageKind(name, category, transactional, build)
        return build

    return register


def audience(name: str):
    """Declare who receives a message, as a function of the notification's payload."""

    def register(func: Callable[[dict[str, Any]], Iterable[Recipient]]):
        AUDIENCES[name] = func
        return func

    return register


# --- notify -------------------------------------------------------------------------


def notify(
    kind: str,
    *,
    title: str,
    link: str = "",
    payload: dict[str, Any] | None = None,
    recipients: Iterable[Recipient] = (),
    audience: str | None = None,
    key: str | None = None,
) -> Notification | None:
    """Record an event and queue its delivery to ``recipients`` or a named ``audience``.

    With a ``key``, the same event is only ever notified once: a second call returns None.
    """
    spec = KINDS[kind]
    notification = Notification(
        kind=kind,
        category=spec.category,
        transactional=spec.transactional,
        key=key,
        title=title[:300],
        link=link,
        payload=payload or {},
        audience=audience,
    )
    db.session.add(notification)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return None
    _record_deliveries(notification.id, recipients)
    db.session.commit()
    from notifications import jobs

    enqueue(jobs.fan_out, notification.id, queue=_queue_for(notification), retry=default_retry())
    return notification


def _queue_for(notification: Notification) -> str:
    return "high" if notification.transactional else "bulk"


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _record_deliveries(notification_id: int, recipients: Iterable[Recipient]) -> None:
    """One delivery row per address; an address already recorded is left alone."""
    for chunk in _chunks(recipients, INSERT_CHUNK):
        rows = {
            r.email.strip().lower(): {
                "notification_id": notification_id,
                "member_id": r.member_id,
                "email": r.email.strip(),
                "name": r.name[:100],
                "state": DeliveryState.PENDING,
                "created_at": utcnow(),
            }
            for r in chunk
        }
        statement = (
            dialect_insert(Delivery)
            .values(list(rows.values()))
            .on_conflict_do_nothing(index_elements=["notification_id", "email"])
        )
        db.session.execute(statement)


def fan_out(notification_id: int) -> int:
    """Resolve the audience, add in-app notices, and queue delivery batches.

    Safe to run again (after a crash or by mistake): rows already recorded stay as they
    are, and only deliveries still pending are queued. Returns the number of batches.
    """
    notification = db.session.get(Notification, notification_id)
    if notification is None:
        return 0
    if notification.audience:
        _record_deliveries(notification.id, AUDIENCES[notification.audience](notification.payload))
    if not notification.transactional:
        _add_notices(notification.id)
    notification.fanned_out_at = notification.fanned_out_at or utcnow()
    db.session.commit()
    pending = db.session.scalars(
        select(Delivery.id)
        .where(Delivery.notification_id == notification.id, Delivery.state == DeliveryState.PENDING)
        .order_by(Delivery.id)
    )
    from notifications import jobs

    batches = 0
    for batch in _chunks(pending, BATCH_SIZE):
        enqueue(jobs.deliver, batch, queue=_queue_for(notification), retry=default_retry())
        batches += 1
    return batches


def _add_notices(notification_id: int) -> None:
    members = (
        select(Delivery.notification_id, Delivery.member_id, func.min(Delivery.created_at))
        .where(Delivery.notification_id == notification_id, Delivery.member_id.is_not(None))
        .group_by(Delivery.notification_id, Delivery.member_id)
    )
    statement = (
        dialect_insert(Notice)
        .from_select(["notification_id", "member_id", "created_at"], members)
        .on_conflict_do_nothing(index_elements=["notification_id", "member_id"])
    )
    db.session.execute(statement)


# --- delivering ---------------------------------------------------------------------


def _claim(delivery_id: int) -> bool:
    claimed = db.session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.state == DeliveryState.PENDING)
        .values(state=DeliveryState.SENDING)
    ).rowcount
    db.session.commit()
    return bool(claimed)


def _settle(delivery: Delivery, state: DeliveryState, error: str | None = None) -> None:
    delivery.state, delivery.error = state, error
    if state == DeliveryState.SENT:
        delivery.sent_at = utcnow()
    db.session.commit()


def subscriber_of(member_id: int | None, email: str) -> str:
    """The key preferences are kept under: the member, or a guest's address."""
    return f"member:{member_id}" if member_id else f"email:{email.strip().lower()}"


def frequency_for(subscriber: str, category: str) -> Frequency:
    """How often ``subscriber`` wants to hear about ``category``."""
    chosen = db.session.get(Preference, (subscriber, category))
    return Frequency(chosen.frequency) if chosen else Frequency.IMMEDIATELY


def is_failing(email: str) -> bool:
    return db.session.get(FailingAddress, email.strip().lower()) is not None


def _decide(delivery: Delivery, spec: MessageKind) -> DeliveryState | None:
    """What to do instead of sending now, if anything."""
    if spec.transactional:
        return None
    if is_failing(delivery.email):
        return DeliveryState.SKIPPED
    if spec.category is None:
        return None
    frequency = frequency_for(subscriber_of(delivery.member_id, delivery.email), spec.category)
    return {Frequency.OFF: DeliveryState.SKIPPED, Frequency.DAILY: DeliveryState.DIGEST}.get(
        frequency
    )


def render(delivery: Delivery, spec: MessageKind, context: dict[str, Any]):
    """The email for one delivery; bulk mail carries one-click unsubscribe headers."""
    notification = delivery.notification
    context = {"recipient_name": delivery.name, "notification": notification, **context}
    headers: dict[str, str] = {}
    if not spec.transactional:
        subscriber = subscriber_of(delivery.member_id, delivery.email)
        unsubscribe = unsubscribe_url(subscriber, spec.category or ALL_CATEGORIES)
        headers = {
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        context["preferences_link"] = preferences_url(subscriber)
        context["unsubscribe_link"] = unsubscribe
    return mail.render(spec.name, delivery.email, headers=headers, **context)


def deliver(delivery_ids: list[int]) -> int:
    """Send a batch of deliveries over one connection; returns how many were sent.

    Each delivery is claimed before it is sent, so no address gets a message twice. A
    temporary failure puts the delivery back and raises so that RQ retries the batch; a
    permanent one marks the address as failing.
    """
    sent = 0
    with _lazy_connection() as connection:
        for delivery_id in delivery_ids:
            if not _claim(delivery_id):
                continue
            delivery = db.session.get(Delivery, delivery_id)
            spec = KINDS[delivery.notification.kind]
            if (instead := _decide(delivery, spec)) is not None:
                _settle(delivery, instead)
                continue
            context = spec.build(delivery.notification.payload, delivery)
            if context is None:
                _settle(delivery, DeliveryState.SKIPPED, "no longer applies")
                continue
            try:
                connection().send(render(delivery, spec, context))
            except mail.TemporaryMailError:
                _settle(delivery, DeliveryState.PENDING)
                raise
            except mail.PermanentMailError as error:
                mark_failing(delivery.email, str(error))
                _settle(delivery, DeliveryState.FAILED, str(error)[:300])
                continue
            _settle(delivery, DeliveryState.SENT)
            sent += 1
    return sent


class _lazy_connection:
    """Opens the mail connection only when the first message is ready to go."""

    def __enter__(self) -> Callable[[], mail.Connection]:
        self._context = None
        self._connection: mail.Connection | None = None

        def connection() -> mail.Connection:
            if self._connection is None:
                self._context = mail.connection()
                self._connection = self._context.__enter__()
            return self._connection

        return connection

    def __exit__(self, *exc_info: object) -> None:
        if self._context is not None:
            self._context.__exit__(*exc_info)


def mark_failing(email: str, reason: str) -> None:
    """Stop bulk mail to an address a server refused for good."""
    statement = (
        dialect_insert(FailingAddress)
        .values(email=email.strip().lower(), reason=reason[:300], failed_at=utcnow())
        .on_conflict_do_nothing(index_elements=["email"])
    )
    db.session.execute(statement)
    db.session.commit()


def address_confirmed(email: str) -> None:
    """Someone proved they read this address again: bulk mail may resume."""
    db.session.execute(delete(FailingAddress).where(FailingAddress.email == email.strip().lower()))
    db.session.commit()


@email_confirmed.connect
def _member_confirmed_address(sender, member: Member, **extra) -> None:
    address_confirmed(member.email)


# --- digests ------------------------------------------------------------------------


def send_daily_digests(today: date | None = None) -> int:
    """Gather each recipient's held deliveries into one email; returns how many digests.

    Nothing is sent to someone with nothing new, and a second run on the same day finds
    the deliveries already gathered.
    """
    today = today or utcnow().date()
    emails = db.session.scalars(
        select(Delivery.email).where(Delivery.state == DeliveryState.DIGEST).distinct()
    ).all()
    digests = 0
    for email in emails:
        held = db.session.scalars(
            select(Delivery)
            .where(Delivery.state == DeliveryState.DIGEST, Delivery.email == email)
            .order_by(Delivery.id)
        ).all()
        # Someone who turned a category off since gets none of it.
        wanted = [d for d in held if not _turned_off(d)]
        for delivery in held:
            delivery.state = DeliveryState.DIGESTED if delivery in wanted else DeliveryState.SKIPPED
        if not wanted:
            db.session.commit()
            continue
        first = wanted[0]
        notified = notify(
            "daily_digest",
            title=f"Your Groundswell digest for {today:%-d %B}",
            payload={"delivery_ids": [d.id for d in wanted]},
            recipients=[Recipient(first.email, first.member_id, first.name)],
            key=f"digest:{email.lower()}:{today.isoformat()}",
        )
        digests += notified is not None
    return digests


def _turned_off(delivery: Delivery) -> bool:
    subscriber = subscriber_of(delivery.member_id, delivery.email)
    return frequency_for(subscriber, delivery.notification.category) == Frequency.OFF


@message("daily_digest")
def _digest_context(payload: dict[str, Any], delivery: Delivery) -> dict[str, Any] | None:
    items = db.session.scalars(
        select(Notification)
        .join(Delivery, Delivery.notification_id == Notification.id)
        .where(Delivery.id.in_(payload["delivery_ids"]))
        .order_by(Notification.id)
    ).all()
    return {"items": items} if items else None


# --- preferences and unsubscribing ----------------------------------------------------


def unsubscribe_url(subscriber: str, category: str) -> str:
    token = make_token(UNSUBSCRIBE_PURPOSE, [subscriber, category])
    return external_url("notifications.unsubscribe", token=token)


def preferences_url(subscriber: str) -> str:
    return external_url(
        "notifications.guest_preferences", token=make_token(PREFERENCES_PURPOSE, subscriber)
    )


def read_unsubscribe_token(token: str) -> tuple[str, str] | None:
    payload = read_token(UNSUBSCRIBE_PURPOSE, token)
    valid = (
        isinstance(payload, list)
        and len(payload) == 2
        and all(isinstance(part, str) for part in payload)
        and (payload[1] in set(Category) or payload[1] == ALL_CATEGORIES)
    )
    return (payload[0], payload[1]) if valid else None


def read_preferences_token(token: str) -> str | None:
    subscriber = read_token(PREFERENCES_PURPOSE, token)
    return subscriber if isinstance(subscriber, str) else None


def preferences_of(subscriber: str) -> dict[str, Frequency]:
    """Every category with its chosen frequency."""
    return {category: frequency_for(subscriber, category) for category in Category}


def set_preferences(subscriber: str, choices: dict[str, Frequency]) -> None:
    """Save frequencies for the given categories."""
    for category, frequency in choices.items():
        statement = dialect_insert(Preference).values(
            subscriber=subscriber, category=category, frequency=frequency
        )
        statement = statement.on_conflict_do_update(
            index_elements=["subscriber", "category"], set_={"frequency": frequency}
        )
        db.session.execute(statement)
    db.session.commit()


def unsubscribe(subscriber: str, category: str) -> None:
    """Turn off one category, or all of them."""
    categories = list(Category) if category == ALL_CATEGORIES else [Category(category)]
    set_preferences(subscriber, dict.fromkeys(categories, Frequency.OFF))


# --- the notification centre ------------------------------------------------------------


def notices_for(member: Member, limit: int = 50) -> list[Notice]:
    """A member's notices, newest first."""
    return list(
        db.session.scalars(
            select(Notice)
            .where(Notice.member_id == member.id)
            .order_by(Notice.id.desc())
            .limit(limit)
        )
    )


def unread_count(member: Member) -> int:
    return (
        db.session.scalar(
            select(func.count()).where(Notice.member_id == member.id, Notice.read_at.is_(None))
        )
        or 0
    )


def mark_read(member: Member, notice_id: int | None = None) -> int:
    """Mark one of the member's notices, or all of them, as read."""
    query = update(Notice).where(Notice.member_id == member.id, Notice.read_at.is_(None))
    if notice_id is not None:
        query = query.where(Notice.id == notice_id)
    marked = db.session.execute(query.values(read_at=utcnow())).rowcount
    db.session.commit()
    return marked


def notice_link(member: Member, notice_id: int) -> str | None:
    """Mark a notice read and return where it points."""
    notice = db.session.get(Notice, notice_id)
    if notice is None or notice.member_id != member.id:
        return None
    mark_read(member, notice_id)
    return notice.notification.link or None
