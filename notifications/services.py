"""Notifications: how every feature tells people things, by email and in the app.

A feature declares its messages once with ``@message`` (the template and a function that
builds its context from stored ids) and, for large audiences, an ``@audience`` function.
Web code then calls :func:`notify`; RQ workers do the rest:

- transactional messages (confirmations, resets, waitlist promotions) go on ``high`` and
  ignore preferences;
- everything else goes on ``bulk``, in batches that honour preferences (immediately,
  daily digest, off) and skip addresses that have failed for good;
- one delivery is recorded per address. Named recipients are recorded by ``notify`` and
  their batches queued at once; an audience is walked by fan-out jobs, a page each, which
  record deliveries and in-app notices for members as they go;
- transactional deliveries wait in a Redis list that one job at a time drains in
  batches, so that a surge of confirmations shares its jobs, claims and mail sessions.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Any

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import (
    Integer,
    Select,
    String,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import aliased, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from core import mail
from core.db import built_once, dialect_insert, on_commit, utcnow
from core.extensions import db, redis_store
from core.queue import JobTimeout, default_retry, enqueue
from core.tokens import make_token, read_token
from core.urls import external_url
from members.models import Member
from members.services import find_by_email
from members.signals import account_deleting, data_export, email_confirmed
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
# Transactional mail: someone is waiting for each message, so batches stay small.
TRANSACTIONAL_BATCH = 50
TRANSACTIONAL_WAITING = "gs:mail:transactional"
TRANSACTIONAL_QUEUED = "gs:mail:transactional:queued"
# A lost job's flag lapses after this, so the next message queues a job again.
TRANSACTIONAL_FLAG_SECONDS = 60
# A sender hands over to a new job after this long, well inside the flag's life.
TRANSACTIONAL_RUN_SECONDS = 2
RETRY_PAUSE = timedelta(seconds=10)
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
# Someone a delivery is for: their address, and their member id if they have an account.
Reader = tuple[str, int | None]
# Given a notification's payload and some of its readers, those still in its audience.
AudienceCheck = Callable[[dict[str, Any], list[Reader]], set[Reader]]


@dataclass(frozen=True)
class MessageKind:
    """A message a feature sends: ``email/<name>.txt`` and ``.html``, and how to fill them."""

    name: str
    category: Category | None
    transactional: bool
    build: ContextBuilder
    notice: bool  # also shown in members' notification centre
    bulk: bool  # carries one-click unsubscribe headers and the preferences footer
    still_in_audience: AudienceCheck | None = None
    timely: bool = False  # goes at once to those who take its category as a digest


KINDS: dict[str, MessageKind] = {}
# An audience is a query selecting ``key`` (unique, increasing), ``email``, ``member_id``
# and ``name``; fan-out walks it a page at a time.
AUDIENCES: dict[str, Callable[[dict[str, Any]], Select]] = {}


def message(
    name: str,
    *,
    category: Category | None = None,
    transactional: bool = False,
    notice: bool = True,
    bulk: bool | None = None,
    still_in_audience: AudienceCheck | None = None,
    timely: bool = False,
) -> Callable[[ContextBuilder], ContextBuilder]:
    """Declare a message. The builder runs in a worker, once per recipient, and returns the
    template context, or None when the message no longer applies (e.g. already confirmed).

    News read from an audience may wait before it goes: in a digest for a day, or for a
    retry. ``still_in_audience`` says which readers still belong to it then (a signer
    who withdrew does not). A send asks it once per batch, not once per message; a
    digest asks it about each item it holds.

    A message with a ``category`` is bulk mail: preferences apply and it can be
    unsubscribed from. One without a category or ``transactional`` is a personal notice
    (an invitation, say): emailed whatever the preferences and shown in the notification
    centre, with nothing to unsubscribe from, unless declared ``bulk`` (the digest).

    A ``timely`` message is news that tomorrow's digest would bring too late (a meetup
    the reader is going to is cancelled tonight): it goes at once to readers who take its
    category as a daily digest. Those who turned the category off still get nothing.
    """

    def register(build: ContextBuilder) -> ContextBuilder:
        KINDS[name] = MessageKind(
            name,
            category,
            transactional,
            build,
            notice and not transactional,
            bulk=category is not None if bulk is None else bulk,
            still_in_audience=still_in_audience,
            timely=timely,
        )
        return build

    return register


def audience(name: str):
    """Declare who receives a message: a function of the notification's payload returning
    a query of ``key``, ``email``, ``member_id`` and ``name``."""

    def register(func: Callable[[dict[str, Any]], Select]):
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
    expires_at: datetime | None = None,
    commit: bool = True,
) -> int | None:
    """Record an event and queue its delivery to ``recipients`` or a named ``audience``.
    Returns the notification's id.

    With a ``key``, the same event is only ever notified once: a second call returns None.
    With ``expires_at``, nothing of it is emailed from then on, at once or in a digest.
    The caller's pending changes are committed with the notification, so an event and the
    news of it are saved together. With ``commit=False`` the caller commits, and the news
    is queued once it does (and forgotten if it rolls back). If Redis is unreachable, the
    sweep queues it later.
    """
    spec = KINDS[kind]
    queue = _queue_for(spec.transactional)
    notification_id = _add_notification(
        kind=kind,
        category=spec.category,
        transactional=spec.transactional,
        key=key,
        title=title[:300],
        link=link,
        payload=payload or {},
        audience=audience,
        expires_at=expires_at,
        # Named recipients are recorded here and now; an audience waits for its fan-out.
        fanned_out_at=utcnow() if audience is None else None,
    )
    if notification_id is None:  # this key was notified before
        if commit:
            db.session.commit()
        return None
    if audience is not None:
        _commit_then(commit, lambda: _queue_fan_out(notification_id, queue))
        return notification_id
    # Direct recipients are all known now: record them and queue their batches at once.
    delivery_ids = _record_deliveries(notification_id, recipients)
    if spec.notice:
        _add_notices(notification_id, None)
    _commit_then(commit, lambda: _queue_deliveries(notification_id, delivery_ids, spec))
    return notification_id


def _commit_then(commit: bool, queue: Callable[[], None]) -> None:
    """Commit and queue now, or leave the commit to the caller and queue after it."""
    if commit:
        db.session.commit()
        queue()
    else:
        on_commit(queue)


def _queue_deliveries(notification_id: int, delivery_ids: list[int], spec: MessageKind) -> None:
    try:
        if spec.transactional:
            queue_transactional(delivery_ids)
        else:
            _queue_batches(delivery_ids, _queue_for(spec.transactional))
    except RedisError:
        current_app.logger.warning("notification %s waits for the sweep", notification_id)


def _add_notification(**values: Any) -> int | None:
    """Insert a notification and return its id; None if its key is already taken.

    A plain INSERT rather than the unit of work: every signature sends one, and the
    conflict clause needs no savepoint to tell an event already notified.
    """
    return db.session.scalar(_new_notification(), {"created_at": utcnow(), **values})


@built_once
def _new_notification():
    return (
        dialect_insert(Notification.__table__)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(Notification.id)
    )


def _queue_fan_out(notification_id: int, queue: str, after: Any = None) -> None:
    from notifications import jobs

    try:
        enqueue(jobs.fan_out, notification_id, after, queue=queue, retry=default_retry())
    except RedisError:
        current_app.logger.warning("notification %s waits for the sweep", notification_id)


def _queue_for(transactional: bool) -> str:
    return "high" if transactional else "bulk"


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _member_owning(address_param: str):
    """The confirmed member whose account address is the bound ``address_param``, as SQL."""
    return (
        select(Member.id)
        .where(
            Member.email == bindparam(address_param, type_=String),
            Member.email_confirmed_at.is_not(None),
        )
        .scalar_subquery()
    )


def _record_deliveries(notification_id: int, recipients: Iterable[Recipient]) -> list[int]:
    """One delivery row per address; an address already recorded is left alone.
    Returns the ids of the rows added.

    A guest address that belongs to a member counts as the member, so their preferences
    and notification centre apply whichever way they signed. The database finds that
    member in the same statement, which saves a round trip per signature.
    """
    statement = _new_deliveries()
    added: list[int] = []
    for chunk in _chunks(recipients, INSERT_CHUNK):
        rows = {}
        for recipient in chunk:
            address = recipient.email.strip().lower()
            rows[address] = {
                "notification_id": notification_id,
                "given_member_id": recipient.member_id,
                "address": address,
                "email": address,
                "name": recipient.name[:100],
                "state": DeliveryState.PENDING,
                "created_at": utcnow(),
            }
        added.extend(db.session.scalars(statement, list(rows.values())))
    return sorted(added)


@built_once
def _new_deliveries():
    # Rows as parameters, not as VALUES in the statement, so that one statement serves
    # every call; SQLAlchemy still sends several rows as multi-row INSERTs.
    return (
        dialect_insert(Delivery.__table__)
        .values(
            member_id=func.coalesce(
                bindparam("given_member_id", type_=Integer), _member_owning("address")
            )
        )
        .on_conflict_do_nothing(index_elements=["notification_id", "email"])
        .returning(Delivery.id)
    )


def fan_out(notification_id: int, after: Any = None) -> int:
    """Record one page of recipients, add their in-app notices, and queue their batches.

    Large audiences are walked a page at a time, each page its own job, so that
    transactional mail on ``high`` is served between pages. Where the walk has got to is
    kept on the notification and committed with the page, before the next page is
    queued, so the sweep can carry on a walk whose job was lost. Safe to run again (after
    a crash, by a retry or by the sweep): a page already recorded is not walked again.
    Returns the number of batches queued.
    """
    notification = db.session.get(Notification, notification_id, with_for_update=True)
    if notification is None:
        return 0
    emails = None  # direct recipients: everything recorded by notify()
    last_key = None
    if notification.audience:
        if not notification.is_next_page(after):
            db.session.commit()  # another run recorded this page and queued what follows
            return 0
        page, last_key = _audience_page(notification, after)
        _record_deliveries(notification.id, page)
        emails = [recipient.email.strip().lower() for recipient in page]
        notification.record_page(last_key)
    if KINDS[notification.kind].notice:
        _add_notices(notification.id, emails)
    db.session.commit()
    if last_key is not None:
        _queue_fan_out(notification.id, _queue_for(notification.transactional), after=last_key)
    return _queue_pending(notification, emails)


def _audience_page(notification: Notification, after: Any) -> tuple[list[Recipient], Any]:
    """One page of the audience, and the key to continue after (None on the last page)."""
    everyone = AUDIENCES[notification.audience](notification.payload).subquery()
    query = select(everyone).order_by(everyone.c.key).limit(current_app.config["FAN_OUT_PAGE"])
    if after is not None:
        query = query.where(everyone.c.key > after)
    rows = db.session.execute(query).all()
    page = [Recipient(row.email, row.member_id, row.name or "") for row in rows]
    full = len(rows) == current_app.config["FAN_OUT_PAGE"]
    return page, rows[-1].key if full else None


def _queue_pending(notification: Notification, emails: list[str] | None) -> int:
    query = select(Delivery.id).where(
        Delivery.notification_id == notification.id, Delivery.state == DeliveryState.PENDING
    )
    if emails is not None:
        query = query.where(Delivery.email.in_(emails))
    pending = db.session.scalars(query.order_by(Delivery.id))
    return _queue_batches(pending, _queue_for(notification.transactional))


def _queue_batches(delivery_ids: Iterable[int], queue: str, *, retry: bool = True) -> int:
    """Queue delivery jobs of up to BATCH_SIZE deliveries each; returns how many.

    Without ``retry``, a delivery deferred again waits for the next sweep instead of
    RQ's quick retries, which would spend its attempts within minutes.
    """
    from notifications import jobs

    batches = 0
    for batch in _chunks(delivery_ids, BATCH_SIZE):
        enqueue(jobs.deliver, batch, queue=queue, retry=default_retry() if retry else None)
        batches += 1
    return batches


def queue_transactional(delivery_ids: list[int]) -> None:
    """Add transactional deliveries to the waiting list, and queue a job to send them
    unless one is already waiting.

    The deliveries are in the database first: if their ids are lost from Redis, the sweep
    sends them. Raises RedisError when Redis is unreachable.
    """
    from notifications import jobs

    pipeline = redis_store.connection.pipeline(transaction=False)
    if delivery_ids:
        pipeline.rpush(TRANSACTIONAL_WAITING, *delivery_ids)
    pipeline.set(TRANSACTIONAL_QUEUED, 1, nx=True, ex=TRANSACTIONAL_FLAG_SECONDS)
    if pipeline.execute()[-1]:
        enqueue(jobs.send_transactional, queue="high")


def send_transactional() -> int:
    """Send waiting transactional mail until none arrives for a moment; returns how many
    were sent.

    While the job runs it keeps the flag, so mail added meanwhile joins its batches
    instead of queuing a job each: a surge of confirmations costs a few jobs, not one per
    signature. After ``TRANSACTIONAL_RUN_SECONDS`` it hands over to a fresh job, so that
    tallies and other ``high`` jobs get a worker in turn. A batch that fails goes on as a
    delivery job of its own, with RQ's retries.
    """
    connection = redis_store.connection
    linger = current_app.config["TRANSACTIONAL_LINGER_SECONDS"]
    hand_over_at = time.monotonic() + TRANSACTIONAL_RUN_SECONDS
    sent = 0
    try:
        while batch := next_transactional_batch(linger):
            try:
                sent += deliver(batch)
            except Exception:
                _retry_later(batch)
                raise
            if time.monotonic() >= hand_over_at:
                break
    finally:
        # Dropped before the last look at the list: anything added after that look
        # finds no flag and queues a job itself.
        connection.delete(TRANSACTIONAL_QUEUED)
        if connection.llen(TRANSACTIONAL_WAITING):
            queue_transactional([])
    return sent


def next_transactional_batch(linger: float) -> list[int]:
    """Up to ``TRANSACTIONAL_BATCH`` waiting delivery ids, waiting up to ``linger`` seconds
    for the first one; empty if none came."""
    connection = redis_store.connection
    batch = connection.lpop(TRANSACTIONAL_WAITING, TRANSACTIONAL_BATCH) or []
    if not batch and linger > 0:
        first = connection.blpop([TRANSACTIONAL_WAITING], timeout=linger)
        if first is not None:
            rest = connection.lpop(TRANSACTIONAL_WAITING, TRANSACTIONAL_BATCH - 1) or []
            batch = [first[1], *rest]
    return [int(delivery_id) for delivery_id in batch]


def _retry_later(delivery_ids: list[int]) -> None:
    from notifications import jobs

    enqueue(jobs.deliver, delivery_ids, queue="high", retry=default_retry(), delay=RETRY_PAUSE)


def _add_notices(notification_id: int, emails: list[str] | None) -> None:
    members = (
        select(Delivery.notification_id, Delivery.member_id, func.min(Delivery.created_at))
        .where(Delivery.notification_id == notification_id, Delivery.member_id.is_not(None))
        .group_by(Delivery.notification_id, Delivery.member_id)
    )
    if emails is not None:
        members = members.where(Delivery.email.in_(emails))
    statement = (
        dialect_insert(Notice)
        .from_select(["notification_id", "member_id", "created_at"], members)
        .on_conflict_do_nothing(index_elements=["notification_id", "member_id"])
    )
    db.session.execute(statement)


# --- delivering ---------------------------------------------------------------------


def _claim(delivery_ids: list[int]) -> list[Delivery]:
    """Take the batch's pending deliveries for this worker, in one statement."""
    claimed = db.session.scalars(
        update(Delivery)
        .where(Delivery.id.in_(delivery_ids), Delivery.state == DeliveryState.PENDING)
        .values(state=DeliveryState.SENDING, claimed_at=utcnow())
        .returning(Delivery.id)
    ).all()
    db.session.commit()
    query = select(Delivery).where(Delivery.id.in_(claimed)).order_by(Delivery.id)
    return list(db.session.scalars(query.options(selectinload(Delivery.notification))))


def _release(deliveries: list[Delivery]) -> None:
    """Put claimed deliveries that were not attempted back in the queue's hands."""
    for delivery in deliveries:
        if delivery.state == DeliveryState.SENDING:
            delivery.state = DeliveryState.PENDING
    db.session.commit()


def _hand_back(deliveries: list[Delivery]) -> None:
    """Put back in the queue's hands every claimed delivery not recorded as sent.

    Read from the database rather than the session: a message whose record of sending
    was committed must stay sent, even if the session had not caught up with it.
    """
    claimed = [delivery.id for delivery in deliveries]
    db.session.rollback()
    db.session.execute(
        update(Delivery)
        .where(Delivery.id.in_(claimed), Delivery.state == DeliveryState.SENDING)
        .values(state=DeliveryState.PENDING)
    )
    db.session.commit()


def _settle(delivery: Delivery, state: DeliveryState, error: str | None = None) -> None:
    delivery.state, delivery.error = state, error
    if state == DeliveryState.SENT:
        delivery.sent_at = utcnow()
    db.session.commit()


def subscriber_of(member_id: int | None, email: str) -> str:
    """The key preferences are kept under: the member, or a guest's address."""
    return f"member:{member_id}" if member_id else address_subscriber(email)


def address_subscriber(email: str) -> str:
    """The key of the choices made for an address, by a guest or through its emails."""
    return f"email:{email.strip().lower()}"


def subscribers_of(member_id: int | None, email: str) -> tuple[str, ...]:
    """Every key whose choices apply to mail for this member at this address.

    An address keeps what was chosen for it after it becomes a member's, so an opt-out
    made as a guest, or through the link in an older email, still holds.
    """
    if member_id:
        return subscriber_of(member_id, email), address_subscriber(email)
    return (address_subscriber(email),)


_LESS_MAIL = (Frequency.IMMEDIATELY, Frequency.DAILY, Frequency.OFF)


def strictest(frequencies: Iterable[Frequency]) -> Frequency:
    """The choice sending the least mail: one opt-out outweighs any other choice."""
    return max(frequencies, key=_LESS_MAIL.index, default=Frequency.IMMEDIATELY)


def frequency_for(subscriber: str, category: str) -> Frequency:
    """How often ``subscriber`` wants to hear about ``category``."""
    chosen = db.session.get(Preference, (subscriber, category))
    return Frequency(chosen.frequency) if chosen else Frequency.IMMEDIATELY


def strictest_for(subscribers: Iterable[str], category: str) -> Frequency:
    """How often mail about ``category`` goes where all these subscribers' choices apply:
    the strictest of them."""
    return strictest(frequency_for(subscriber, category) for subscriber in subscribers)


def is_failing(email: str) -> bool:
    return db.session.get(FailingAddress, email.strip().lower()) is not None


@dataclass(frozen=True)
class _Choices:
    """What a batch's recipients chose, read in two queries rather than two per delivery."""

    failing: set[str]
    frequencies: dict[tuple[str, str], Frequency]
    left_audience: set[int]  # deliveries whose readers have left the news's audience

    @classmethod
    def of(cls, deliveries: list[Delivery]) -> _Choices:
        left = _left_audience(deliveries)
        deliveries = [d for d in deliveries if not d.notification.transactional]
        if not deliveries:  # transactional mail goes out whatever was chosen
            return cls(set(), {}, left)
        emails = [delivery.email for delivery in deliveries]
        failing = set(
            db.session.scalars(select(FailingAddress.email).where(FailingAddress.email.in_(emails)))
        )
        subscribers = {key for d in deliveries for key in subscribers_of(d.member_id, d.email)}
        chosen = db.session.execute(
            select(Preference.subscriber, Preference.category, Preference.frequency).where(
                Preference.subscriber.in_(subscribers)
            )
        )
        return cls(failing, {(s, category): Frequency(f) for s, category, f in chosen}, left)

    def instead_of_sending(self, delivery: Delivery, spec: MessageKind) -> DeliveryState | None:
        """What to do instead of sending now, if anything."""
        if spec.transactional:
            return None
        if delivery.email in self.failing:
            return DeliveryState.SKIPPED
        if spec.category is None:
            return None
        frequency = strictest(
            self.frequencies.get((subscriber, spec.category), Frequency.IMMEDIATELY)
            for subscriber in subscribers_of(delivery.member_id, delivery.email)
        )
        if frequency == Frequency.OFF:
            return DeliveryState.SKIPPED
        if frequency == Frequency.DAILY and not spec.timely:
            return DeliveryState.DIGEST
        return None


def _left_audience(deliveries: list[Delivery]) -> set[int]:
    """The ids of deliveries whose readers have left their news's audience, asked once per
    notification in the batch."""
    by_notification: dict[int, list[Delivery]] = {}
    for delivery in deliveries:
        by_notification.setdefault(delivery.notification_id, []).append(delivery)
    left: set[int] = set()
    for group in by_notification.values():
        notification = group[0].notification
        spec = KINDS.get(notification.kind)
        if spec is None or spec.still_in_audience is None:
            continue
        staying = spec.still_in_audience(notification.payload, [_reader(d) for d in group])
        left.update(delivery.id for delivery in group if _reader(delivery) not in staying)
    return left


def _reader(delivery: Delivery) -> Reader:
    return delivery.email, delivery.member_id


def readers_found(
    readers: list[Reader],
    key_of: Callable[[str], str],
    still_there: Callable[[set[str], set[int]], Select],
) -> set[Reader]:
    """Of ``readers``, those an audience still holds, for a ``still_in_audience`` check.

    ``still_there(keys, member_ids)`` selects the (address key, member id) rows of the
    audience among those keys and members; ``key_of`` makes a reader's key from their
    address. A reader counts by either: an account's mail may have moved address.
    """
    keys = {email: key_of(email) for email, _ in readers}
    member_ids = {member_id for _, member_id in readers if member_id is not None}
    rows = db.session.execute(still_there(set(keys.values()), member_ids)).all()
    found_keys = {key for key, _ in rows}
    found_members = {member_id for _, member_id in rows if member_id is not None}
    return {
        (email, member_id)
        for email, member_id in readers
        if keys[email] in found_keys or member_id in found_members
    }


def render(delivery: Delivery, spec: MessageKind, context: dict[str, Any]):
    """The email for one delivery; bulk mail carries one-click unsubscribe headers."""
    notification = delivery.notification
    context = {"recipient_name": delivery.name, "notification": notification, **context}
    headers: dict[str, str] = {}
    if spec.bulk:
        subscriber = subscriber_of(delivery.member_id, delivery.email)
        unsubscribe = unsubscribe_url(subscriber, spec.category or ALL_CATEGORIES)
        headers = {
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        context["preferences_link"] = preferences_url(subscriber)
        context["unsubscribe_link"] = unsubscribe
    return mail.render(
        spec.name, delivery.email, headers=headers, message_id=message_id(delivery), **context
    )


def message_id(delivery: Delivery) -> str:
    """The same Message-ID every time a delivery is sent, so that the one copy a crash can
    cause (see :func:`_send`) is the same message again, which mailboxes show once. The
    time the delivery was recorded keeps ids unique if a database is ever started afresh.
    """
    recorded = int(delivery.created_at.timestamp() * 1_000_000)
    return f"<{recorded}.{delivery.id}.delivery@{mail.message_domain()}>"


MAX_ATTEMPTS = 8
EXPIRED = "expired"  # the error recorded on a delivery skipped as out of date
NO_LONGER_APPLIES = "no longer applies"  # e.g. a reminder for someone no longer going


def deliver(delivery_ids: list[int]) -> int:
    """Send a batch of deliveries over one connection; returns how many were sent.

    The batch is claimed in one statement, and each message is marked sent the moment it
    is handed to the server, so a worker that dies leaves in ``sending`` only messages the
    server never had whole; the sweep sends those once their claim lapses. A temporary refusal
    puts that delivery back and the batch carries on; the job then raises so that RQ
    retries what was put back. A refused address is marked failing; any other failure
    fails that one delivery, never the batch. A job stopped for running too long puts
    back everything it had not sent, and RQ's retry sends it.
    """
    deliveries = _claim(delivery_ids)
    if not deliveries:
        return 0
    # Each message is committed on its own; reloading the batch after every commit would
    # cost more than sending. Only this job changes the deliveries it claimed.
    db.session().expire_on_commit = False
    choices = _Choices.of(deliveries)
    # The session forgets objects nothing refers to; holding each message's context keeps
    # what the batch shares (the petition, the update) from being read again per message.
    held: list[dict[str, Any]] = []
    sent, deferred = 0, 0
    with _lazy_connection() as connection:
        try:
            for position, delivery in enumerate(deliveries):
                spec = KINDS[delivery.notification.kind]
                try:
                    message = _prepare(delivery, spec, choices, held)
                    if message is None:
                        continue
                    server = connection()
                except mail.TemporaryMailError:  # the server cannot be reached: retry later
                    _release(deliveries[position:])
                    raise
                except (JobTimeout, OperationalError):  # the job's or the database's failure
                    raise
                except Exception as error:
                    current_app.logger.exception("delivery %s could not be prepared", delivery.id)
                    _settle(delivery, DeliveryState.FAILED, repr(error)[:300])
                    continue
                outcome = _send_or_settle(server, delivery, message)
                sent += outcome == DeliveryState.SENT
                deferred += outcome == DeliveryState.PENDING
        except Exception:  # out of time, or the database failed: the retry sends the rest
            _hand_back(deliveries)
            raise
    db.session.commit()  # skipped and held deliveries since the last message sent
    if deferred:
        raise mail.TemporaryMailError(f"{deferred} deliveries deferred; retrying them")
    return sent


def _prepare(delivery: Delivery, spec: MessageKind, choices: _Choices, held: list):
    """The message to send, or None once the delivery is settled another way."""
    # Checked first, so that news already out of date is not held for a digest either.
    if delivery.notification.has_expired(utcnow()):
        delivery.state, delivery.error = DeliveryState.SKIPPED, EXPIRED
        return None
    if delivery.id in choices.left_audience:
        delivery.state, delivery.error = DeliveryState.SKIPPED, NO_LONGER_APPLIES
        return None
    if (instead := choices.instead_of_sending(delivery, spec)) is not None:
        delivery.state = instead  # saved with the next commit; redone if the worker dies
        return None
    context = spec.build(delivery.notification.payload, delivery)
    if context is None:
        delivery.state, delivery.error = DeliveryState.SKIPPED, NO_LONGER_APPLIES
        return None
    held.append(context)
    return render(delivery, spec, context)


def _send(server: mail.Connection, delivery: Delivery, message) -> DeliveryState:
    db.session.commit()  # what preparing settled (skips) is kept whatever happens below
    record = {"delivery_id": delivery.id, "attempts": delivery.attempts + 1, "sent_at": utcnow()}
    # The record of sending is written before the final dot and committed right after it,
    # on the driver's connection, the shortest path from one write to the other: only a
    # crash in the few microseconds between them can send a message twice. A statement of
    # its own costs a fraction of the session's flush, once per message.
    connection = db.session.connection()
    if not connection.execute(_record_sent(), record).rowcount:
        # Settled since it was claimed (its account was deleted): it is not to go.
        db.session.commit()
        return DeliveryState.SKIPPED
    try:
        server.send(message, handed_over=connection.connection.dbapi_connection.commit)
    except mail.MailError:
        _not_sent(delivery, record["attempts"])
        raise
    db.session.commit()  # already committed; this ends the session's transaction
    set_committed_value(delivery, "attempts", record["attempts"])
    set_committed_value(delivery, "sent_at", record["sent_at"])
    set_committed_value(delivery, "state", DeliveryState.SENT)
    return DeliveryState.SENT


@built_once
def _record_sent():
    return (
        update(Delivery.__table__)
        .where(
            Delivery.__table__.c.id == bindparam("delivery_id"),
            Delivery.__table__.c.state == DeliveryState.SENDING,
        )
        .values(
            state=DeliveryState.SENT, attempts=bindparam("attempts"), sent_at=bindparam("sent_at")
        )
    )


def _send_or_settle(server: mail.Connection, delivery: Delivery, message) -> DeliveryState:
    try:
        return _send(server, delivery, message)
    except mail.TemporaryMailError as error:
        if delivery.attempts >= MAX_ATTEMPTS:
            _settle(delivery, DeliveryState.FAILED, f"gave up: {error}"[:300])
            return DeliveryState.FAILED
        _settle(delivery, DeliveryState.PENDING, str(error)[:300])
        return DeliveryState.PENDING
    except mail.AddressRefused as error:
        mark_failing(delivery.email, str(error))
        _settle(delivery, DeliveryState.FAILED, str(error)[:300])
        return DeliveryState.FAILED
    except mail.PermanentMailError as error:
        _settle(delivery, DeliveryState.FAILED, str(error)[:300])
        return DeliveryState.FAILED


def _not_sent(delivery: Delivery, attempts: int) -> None:
    """Take back the record of sending, unless the server had the message already."""
    db.session.rollback()
    delivery.attempts, delivery.sent_at = attempts, None


CLAIM_LEASE = timedelta(minutes=30)  # far longer than any job may run (RQ's timeout)


def requeue_stalled(
    older_than: timedelta = timedelta(minutes=10), lease: timedelta = CLAIM_LEASE
) -> int:
    """Queue again what a lost job or an unreachable Redis left behind; returns jobs queued.

    Fan-outs that stopped short carry on after their last recorded page; deliveries still
    pending are queued in batches, with those a dead worker claimed longer than ``lease``
    ago (no job runs that long). A delivery a server deferred waits ``older_than`` after
    its first try, then twice as long after each further one (RQ's own retries count as
    tries). Claims make a second queueing harmless.
    """
    now = utcnow()
    cutoff = now - older_than
    db.session.execute(
        update(Delivery)
        .where(Delivery.state == DeliveryState.SENDING, Delivery.claimed_at < now - lease)
        .values(state=DeliveryState.PENDING)
    )
    db.session.commit()
    stalled = db.session.scalars(
        select(Notification).where(
            Notification.fanned_out_at.is_(None),
            func.coalesce(Notification.fan_out_paged_at, Notification.created_at) < cutoff,
        )
    ).all()
    for notification in stalled:
        queue = _queue_for(notification.transactional)
        _queue_fan_out(notification.id, queue, after=notification.fan_out_after)
    pending = db.session.execute(
        select(Delivery.id, Notification.transactional, Delivery.attempts, Delivery.claimed_at)
        .join(Notification)
        .where(Delivery.state == DeliveryState.PENDING, Delivery.created_at < cutoff)
        .order_by(Delivery.id)
    ).all()
    due = [row for row in pending if _due_again(row.attempts, row.claimed_at, now, older_than)]
    batches = 0
    for transactional in (True, False):
        ids = [row.id for row in due if row.transactional == transactional]
        batches += _queue_batches(ids, _queue_for(transactional), retry=False)
    return len(stalled) + batches


MAX_RETRY_PAUSE = timedelta(hours=6)


def _due_again(
    attempts: int, last_claimed: datetime | None, now: datetime, pause: timedelta
) -> bool:
    """Whether a pending delivery has waited long enough since it was last tried.

    The pause doubles with each attempt, so a server deferring mail for a few hours
    (greylisting, a rate limit) sees the message again before it is given up.
    """
    if last_claimed is None:
        return True
    return now - last_claimed >= min(pause * 2 ** max(attempts - 1, 0), MAX_RETRY_PAUSE)


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
    db.session.execute(_forget_failing_address(), {"address": email.strip().lower()})
    db.session.commit()


@built_once
def _forget_failing_address():
    statement = delete(FailingAddress).where(
        FailingAddress.email == bindparam("address", type_=String)
    )
    # No session object needs updating: a failing address is never loaded for a request.
    return statement.execution_options(synchronize_session=False)


def _moment(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _owned_addresses(member: Member) -> list[str]:
    """The member's address once they proved it is theirs; until then it may be another's."""
    return [member.email.lower()] if member.is_confirmed else []


def _deliveries_to(member: Member) -> Select:
    """Mail to the member: sent to their account, or to their confirmed address before they
    had one (as a guest signer or follower). Mail to another account that once had this
    address is that account's."""
    owned = _owned_addresses(member)
    as_guest = and_(Delivery.member_id.is_(None), Delivery.email.in_(owned))
    return select(Delivery).where(or_(Delivery.member_id == member.id, as_guest))


@data_export.connect
def export_member_notifications(sender, member: Member, **extra) -> dict[str, Any]:
    """The member's mail choices, notices and the mail sent to them, for their data download."""
    notices = db.session.scalars(
        select(Notice).where(Notice.member_id == member.id).order_by(Notice.id)
    )
    deliveries = db.session.scalars(
        _deliveries_to(member).options(selectinload(Delivery.notification)).order_by(Delivery.id)
    )
    return {
        "notification_preferences": {
            str(category): str(frequency)
            for category, frequency in member_preferences(member).items()
        },
        "notices": [
            {
                "title": n.notification.title,
                "link": n.notification.link,
                "created_at": _moment(n.created_at),
                "read_at": _moment(n.read_at),
            }
            for n in notices
        ],
        "emails": [
            {
                "kind": d.notification.kind,
                "title": d.notification.title,
                "to": d.email,
                "state": d.state,
                "created_at": _moment(d.created_at),
                "sent_at": _moment(d.sent_at),
            }
            for d in deliveries
        ],
    }


@account_deleting.connect
def _forget_member(sender, member: Member, **extra) -> None:
    """Nothing more goes to a deleted account, and its address leaves our records.

    Its deliveries stay, without address, name or the server's words about the address,
    as do the notifications they belong to, without the address in their payload and
    without the digests' keys, which are made from it. The choices and failures kept for
    the account's address go too, once the member proved the address is theirs; until
    then they may be someone else's.
    """
    owned = _owned_addresses(member)
    mine = list(db.session.scalars(_deliveries_to(member)))
    addresses = {*owned, *(delivery.email for delivery in mine)}
    notification_ids = {delivery.notification_id for delivery in mine}
    _forget_addresses_in_payloads(notification_ids, addresses)
    _forget_digest_keys(notification_ids)
    _stop_unsent([delivery.id for delivery in mine])
    for delivery in mine:
        _forget_recipient(delivery)
    subscribers = [subscriber_of(member.id, member.email), *map(address_subscriber, owned)]
    db.session.execute(delete(Preference).where(Preference.subscriber.in_(subscribers)))
    db.session.execute(delete(FailingAddress).where(FailingAddress.email.in_(owned)))


_UNSENT = (DeliveryState.PENDING, DeliveryState.SENDING, DeliveryState.DIGEST)


def _stop_unsent(delivery_ids: list[int]) -> None:
    """Skip these deliveries unless they were sent or settled.

    A claimed one (``sending``) is skipped too: the sweep would hand it back once its
    claim lapsed, and a batch sending it now finds it settled and leaves it (see
    :func:`_send`). Decided by the database, so a message sent a moment ago stays sent.
    """
    db.session.execute(
        update(Delivery)
        .where(Delivery.id.in_(delivery_ids), Delivery.state.in_(_UNSENT))
        .values(state=DeliveryState.SKIPPED)
    )


def _forget_recipient(delivery: Delivery) -> None:
    delivery.email, delivery.name = f"deleted-{delivery.id}@invalid", ""
    delivery.error = None  # servers' replies name the address they refused


def _forget_digest_keys(notification_ids: set[int]) -> None:
    """Drop the keys of these notifications' digests: each is made from its address."""
    db.session.execute(
        update(Notification)
        .where(Notification.id.in_(notification_ids), Notification.kind == "daily_digest")
        .values(key=None)
    )


def _forget_addresses_in_payloads(notification_ids: set[int], addresses: set[str]) -> None:
    """Blank out ``addresses`` wherever they appear in these notifications' payloads."""
    notifications = db.session.scalars(
        select(Notification).where(Notification.id.in_(notification_ids))
    )
    for notification in notifications:
        payload = _without_addresses(notification.payload, addresses)
        if payload != notification.payload:
            notification.payload = payload  # a new value: the column is plain JSON


def _without_addresses(value: Any, addresses: set[str]) -> Any:
    if isinstance(value, dict):
        return {key: _without_addresses(item, addresses) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_addresses(item, addresses) for item in value]
    if isinstance(value, str) and value.strip().lower() in addresses:
        return ""
    return value


@email_confirmed.connect
def _member_confirmed_address(sender, member: Member, **extra) -> None:
    _adopt_guest_mail(member)
    _readdress_waiting_mail(member)
    address_confirmed(member.email)


def _adopt_guest_mail(member: Member) -> None:
    """Mail sent or waiting for the address the member just proved theirs, from before they
    had an account with it, becomes the account's: their choices then stop what still
    waits, and it goes with the account if they delete it, whatever address they move to.
    News they have as a member already stays with that copy alone."""
    address = member.email.lower()
    as_member = aliased(Delivery)
    db.session.execute(
        update(Delivery)
        .where(
            Delivery.member_id.is_(None),
            Delivery.email == address,
            ~select(as_member.id)
            .where(
                as_member.notification_id == Delivery.notification_id,
                as_member.member_id == member.id,
            )
            .exists(),
        )
        .values(member_id=member.id)
        .execution_options(synchronize_session=False)
    )


_WAITING = (DeliveryState.PENDING, DeliveryState.DIGEST)


def _readdress_waiting_mail(member: Member) -> None:
    """Mail still waiting for the member follows them to the address they just confirmed:
    the one they left may be someone else's by now. Each piece of news goes there once:
    a copy the new address already has, or a second copy waiting at another old address,
    is dropped. A message being sent right now goes where it was going."""
    address = member.email.lower()

    def waiting_elsewhere(delivery) -> Any:
        return and_(
            delivery.member_id == member.id,
            delivery.state.in_(_WAITING),
            delivery.email != address,
        )

    twin, earlier = aliased(Delivery), aliased(Delivery)
    other_copies = (
        # the new address has this news already
        and_(twin.notification_id == Delivery.notification_id, twin.email == address),
        # an earlier copy, waiting at another old address, moves instead
        and_(
            earlier.notification_id == Delivery.notification_id,
            waiting_elsewhere(earlier),
            earlier.id < Delivery.id,
        ),
    )
    for copy in other_copies:
        db.session.execute(
            update(Delivery)
            .where(waiting_elsewhere(Delivery), select(1).where(copy).exists())
            .values(state=DeliveryState.SKIPPED, error=NO_LONGER_APPLIES)
            .execution_options(synchronize_session=False)
        )
    db.session.execute(
        update(Delivery)
        .where(waiting_elsewhere(Delivery))
        .values(email=address)
        .execution_options(synchronize_session=False)
    )


# --- digests ------------------------------------------------------------------------

DIGEST_HOUR = 7  # the day's digests start at 07:00 UTC
# Addresses one digest job goes through, and for how long, before it hands over to the
# next: well inside RQ's job timeout (180 s), whatever one address costs.
DIGEST_SLICE = 500
DIGEST_RUN_SECONDS = 60
# A day's walk through the addresses that has shown no progress for this long is taken
# as lost (its job gone with Redis, say) and started again from the first address.
DIGEST_STALL_SECONDS = 3600
DIGESTS_WALKING = "gs:digests:walking:{day}"
DIGESTS_DONE = "gs:digests:done:{day}"
DIGESTS_DONE_SECONDS = 2 * 24 * 3600


def start_daily_digests(now: datetime | None = None) -> int:
    """Start the day's digests the first time this runs at or after 07:00 UTC; returns
    how many digests this job sent.

    The hour is read here, in UTC, because the scheduler reads cron lines in its own time
    zone. A walk already under way or done today is left alone; one that stalled is
    started again, and the day's digest keys keep anyone from getting a second digest.
    """
    now = (now or utcnow()).astimezone(UTC)
    if now.hour < DIGEST_HOUR:
        return 0
    day = now.date()
    connection = redis_store.connection
    if connection.exists(DIGESTS_DONE.format(day=day.isoformat())):
        return 0
    walking = DIGESTS_WALKING.format(day=day.isoformat())
    if not connection.set(walking, 1, nx=True, ex=DIGEST_STALL_SECONDS):
        return 0
    return send_daily_digests(day)


def send_daily_digests(today: date | None = None, after: str | None = None) -> int:
    """Send the digests of one slice of addresses, in address order from just after
    ``after``, and queue the next slice; returns how many digests this slice sent.

    Gathers each recipient's held deliveries into one email a day. Nothing is sent to
    someone with nothing new, nor with only news that has expired since it was held. What
    is held after today's digest went (when the job runs again the same day) waits for
    tomorrow's. A slice run twice (a retry, or a walk started again) sends nobody a second
    digest: each is keyed by address and day.
    """
    today = today or utcnow().date()
    query = (
        select(Delivery.email)
        .where(Delivery.state == DeliveryState.DIGEST)
        .distinct()
        .order_by(Delivery.email)
        .limit(DIGEST_SLICE)
    )
    if after is not None:
        query = query.where(Delivery.email > after)
    emails = db.session.scalars(query).all()
    hand_over_at = time.monotonic() + DIGEST_RUN_SECONDS
    sent, done = 0, 0
    for email in emails:
        sent += _send_digest(email, today)
        done += 1
        if time.monotonic() >= hand_over_at:
            break
    if done == DIGEST_SLICE or done < len(emails):
        _queue_digests_after(today, emails[done - 1])
    else:
        _digests_done(today)
    return sent


def _queue_digests_after(today: date, after: str) -> None:
    from notifications import jobs

    day = today.isoformat()
    try:
        # The walk shows progress, so that no one takes it for lost and starts it again.
        redis_store.connection.set(DIGESTS_WALKING.format(day=day), 1, ex=DIGEST_STALL_SECONDS)
        enqueue(jobs.send_digests_after, day, after, queue="bulk", retry=default_retry())
    except RedisError:
        current_app.logger.warning("the digests of %s wait for the walk to start again", day)


def _digests_done(today: date) -> None:
    day = today.isoformat()
    try:
        pipeline = redis_store.connection.pipeline(transaction=False)
        pipeline.set(DIGESTS_DONE.format(day=day), 1, ex=DIGESTS_DONE_SECONDS)
        pipeline.delete(DIGESTS_WALKING.format(day=day))
        pipeline.execute()
    except RedisError:  # the next start finds every digest of the day sent
        current_app.logger.warning("the digests of %s are sent but not marked done", day)


def _send_digest(email: str, today: date) -> bool:
    """Send ``email`` today's digest of what is held for it; False if there is none to send."""
    key = f"digest:{_address_key(email)}:{today.isoformat()}"
    if _notified_before(key):  # what is held now waits for tomorrow's
        db.session.commit()
        return False
    held = db.session.scalars(
        select(Delivery)
        .where(Delivery.state == DeliveryState.DIGEST, Delivery.email == email)
        .order_by(Delivery.id)
    ).all()
    now = utcnow()
    wanted = []
    for delivery in held:
        # News out of date by now, no longer true for this reader, or of a category
        # turned off since, is left out for good.
        if delivery.notification.has_expired(now):
            delivery.state, delivery.error = DeliveryState.SKIPPED, EXPIRED
        elif not _still_applies(delivery):
            delivery.state, delivery.error = DeliveryState.SKIPPED, NO_LONGER_APPLIES
        elif _turned_off(delivery):
            delivery.state = DeliveryState.SKIPPED
        else:
            wanted.append(delivery)
    if not wanted:
        db.session.commit()
        return False
    for delivery in wanted:
        delivery.state = DeliveryState.DIGESTED  # committed together with the digest
    first = wanted[0]
    notified = notify(
        "daily_digest",
        title=f"Your Groundswell digest for {today:%-d %B}",
        payload={"delivery_ids": [d.id for d in wanted]},
        recipients=[Recipient(first.email, first.member_id, first.name)],
        key=key,
    )
    if notified is None:  # a run alongside this one sent today's digest a moment ago
        _hold_again([d.id for d in wanted], but_not=_digested_under(key))
    return notified is not None


def _notified_before(key: str) -> bool:
    return db.session.scalar(select(Notification.id).where(Notification.key == key)) is not None


def _digested_under(key: str) -> set[int]:
    payload = db.session.scalar(select(Notification.payload).where(Notification.key == key))
    return set((payload or {}).get("delivery_ids", []))


def _hold_again(delivery_ids: list[int], but_not: set[int]) -> None:
    """Keep deliveries for the next digest after all, except those in the one sent."""
    db.session.execute(
        update(Delivery)
        .where(
            Delivery.id.in_([i for i in delivery_ids if i not in but_not]),
            Delivery.state == DeliveryState.DIGESTED,
        )
        .values(state=DeliveryState.DIGEST)
    )
    db.session.commit()


def _address_key(email: str) -> str:
    # Keys have a bounded length; addresses can be long.
    return hashlib.sha256(email.lower().encode()).hexdigest()[:32]


def _still_applies(delivery: Delivery) -> bool:
    """Whether the held message would still be sent on its own now: a reminder of a
    meetup the reader left, say, or of a vote they have since cast, would not."""
    spec = KINDS.get(delivery.notification.kind)
    if spec is None or delivery.id in _left_audience([delivery]):
        return False
    return spec.build(delivery.notification.payload, delivery) is not None


def _turned_off(delivery: Delivery) -> bool:
    subscribers = subscribers_of(delivery.member_id, delivery.email)
    return strictest_for(subscribers, delivery.notification.category) == Frequency.OFF


@message("daily_digest", notice=False, bulk=True)
def _digest_context(payload: dict[str, Any], delivery: Delivery) -> dict[str, Any] | None:
    """The digest's items; news that expired, stopped applying, or whose category the
    reader turned off while the digest waited to go is left out."""
    held = db.session.scalars(
        select(Delivery)
        .join(Notification, Delivery.notification_id == Notification.id)
        .where(Delivery.id.in_(payload["delivery_ids"]))
        .order_by(Notification.id)
    ).all()
    now = utcnow()
    items = [
        item.notification
        for item in held
        if not item.notification.has_expired(now) and _still_applies(item) and not _turned_off(item)
    ]
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
    _save_preferences(subscriber, choices)
    db.session.commit()


def _save_preferences(subscriber: str, choices: dict[str, Frequency]) -> None:
    for category, frequency in choices.items():
        statement = dialect_insert(Preference).values(
            subscriber=subscriber, category=category, frequency=frequency
        )
        statement = statement.on_conflict_do_update(
            index_elements=["subscriber", "category"], set_={"frequency": frequency}
        )
        db.session.execute(statement)


def member_preferences(member: Member) -> dict[str, Frequency]:
    """Every category with how often it reaches the member: with a confirmed address,
    what was chosen for that address counts too (the strictest choice wins)."""
    subscribers = _subscribers_of_member(member)
    return {category: strictest_for(subscribers, category) for category in Category}


def set_member_preferences(member: Member, choices: dict[str, Frequency]) -> None:
    """Save a member's frequencies. The proven owner of an address decides for it too, so
    earlier choices made for the address give way to these."""
    _save_preferences(subscriber_of(member.id, member.email), choices)
    if member.is_confirmed:
        db.session.execute(
            delete(Preference).where(
                Preference.subscriber == address_subscriber(member.email),
                Preference.category.in_(list(choices)),
            )
        )
    db.session.commit()


def _subscribers_of_member(member: Member) -> tuple[str, ...]:
    # Until the address is confirmed it may be someone else's, whose choices stay theirs.
    if member.is_confirmed:
        return subscribers_of(member.id, member.email)
    return (subscriber_of(member.id, member.email),)


def _member_behind(subscriber: str) -> Member | None:
    """The member a key stands for: a ``member:<id>``, or the member who has since proved
    an ``email:<address>`` is theirs (a link in a mail sent before they registered)."""
    kind, _, rest = subscriber.partition(":")
    if kind == "member" and rest.isdigit():
        return db.session.get(Member, int(rest))
    if kind == "email":
        owner = find_by_email(rest)
        return owner if owner is not None and owner.is_confirmed else None
    return None


def linked_preferences(subscriber: str) -> dict[str, Frequency]:
    """What the preferences link in an email shows: for a member, what reaches them, as
    on their own preferences page."""
    member = _member_behind(subscriber)
    return member_preferences(member) if member else preferences_of(subscriber)


def save_linked_preferences(subscriber: str, choices: dict[str, Frequency]) -> None:
    """Save what was chosen through an emailed link, as the member's own page would."""
    member = _member_behind(subscriber)
    if member:
        set_member_preferences(member, choices)
    else:
        set_preferences(subscriber, choices)


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
