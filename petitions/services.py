"""The petition story: launching, signing, confirming, tallying, finding and organising.

Views and jobs call these functions; they take models or ids and return results.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import Select, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError

from core import mail, pagecache, ratelimit
from core.db import (
    Page,
    add_to_count,
    built_once,
    claim_unless_recent,
    dialect_insert,
    first_copy,
    paginate,
    utcnow,
)
from core.extensions import db, redis_store
from core.hooks import WorkSummary, linked_work, work_organised_by
from core.places import city_slug
from core.queue import default_retry, enqueue
from core.tokens import make_token, read_token
from core.urls import external_url
from members.models import Member
from members.services import hold_account
from members.signals import account_deleting, data_export, email_confirmed
from notifications.services import Reader, Recipient, address_confirmed, notify, readers_found
from petitions.models import (
    MILESTONES,
    PENDING_SIGNATURE_DAYS,
    CityCount,
    HourlyCount,
    Milestone,
    Petition,
    PetitionError,
    PetitionState,
    PetitionUpdate,
    Signature,
    SignatureState,
    SignerChoices,
)

CONFIRM_PURPOSE = "confirm-signature"
WITHDRAW_PURPOSE = "withdraw-signature"
RESEND_AFTER = timedelta(minutes=10)
ALREADY_SIGNED_LIMIT = "1 per 10 minutes"  # as often as RESEND_AFTER
TALLY_DEBOUNCE_SECONDS = 60
PER_PAGE = 20

# --- launching and organising ---------------------------------------------------------


def create_petition(organiser: Member, **fields: Any) -> Petition:
    """Save a new petition as a draft owned by ``organiser``; the same form sent again
    within REPOST_WINDOW gives the draft it made the first time."""
    hold_account(organiser)
    same = (getattr(Petition, name) == value for name, value in fields.items())
    copy = first_copy(
        Petition,
        Petition.organiser_id == organiser.id,
        Petition.state == PetitionState.DRAFT,
        *same,
    )
    if copy is not None:
        db.session.commit()  # let the hold go
        return copy
    petition = Petition(organiser_id=organiser.id, state=PetitionState.DRAFT, **fields)
    petition.city_slug = city_slug(petition.city)
    db.session.add(petition)
    db.session.commit()
    return petition


def has_signatures(petition: Petition) -> bool:
    """Whether anyone has signed, which freezes the ask and the decision-maker."""
    return (
        db.session.scalar(select(Signature.id).where(Signature.petition_id == petition.id).limit(1))
        is not None
    )


def page_cache_key(petition_id: int) -> str:
    """The key of the petition page's shared anonymous view."""
    return f"petition:{petition_id}"


def _forget_page(petition_id: int) -> None:
    # Anonymous visitors see a change of state or text at once, a hidden petition above all.
    pagecache.forget_page(page_cache_key(petition_id))


def edit_petition(petition: Petition, **fields: Any) -> None:
    """Change a petition; raises PetitionError if a frozen field would change.

    The petition's row is held while the signatures are counted: a signature's insert
    waits for it (through its foreign key), so none lands between the check and the save.
    """
    if _lock_petition(petition.id) is None:
        raise PetitionError("This petition no longer exists.")
    try:
        petition.edit(fields, has_signatures=has_signatures(petition))
    except PetitionError:
        db.session.rollback()  # the fields set before the refused one go too
        raise
    petition.city_slug = city_slug(petition.city)
    db.session.commit()
    _forget_page(petition.id)


def _transition(petition: Petition, action: str, *args: Any) -> None:
    """Apply a state change to the petition as saved, not as loaded: a moderator's hide
    committed meanwhile is seen, and refuses a change it no longer allows."""
    if _lock_petition(petition.id) is None:
        raise PetitionError("This petition no longer exists.")
    try:
        getattr(petition, action)(*args)
    except PetitionError:
        db.session.rollback()  # let the lock go
        raise
    db.session.commit()
    _forget_page(petition.id)


def publish(petition: Petition) -> None:
    """Open a draft for signatures."""
    _transition(petition, "publish")


def close(petition: Petition) -> None:
    """Stop taking signatures."""
    _transition(petition, "close")


def declare_victory(petition: Petition, note: str) -> None:
    """Mark the petition won, with a note on what changed."""
    _transition(petition, "declare_victory", note)


def hide(petition: Petition, reason: str) -> None:
    """Hide a petition from the public (moderators only)."""
    _transition(petition, "hide", reason)


def close_expired_petitions() -> int:
    """Close every open petition whose closing date has passed; returns how many.

    Each is locked and checked again before it closes, so a petition hidden, won or
    given a later date meanwhile stays as it is now.
    """
    expired = db.session.scalars(
        select(Petition.id).where(
            Petition.state == PetitionState.OPEN, Petition.closes_at <= utcnow()
        )
    ).all()
    closed = 0
    for petition_id in expired:
        petition = _lock_petition(petition_id)
        if petition is not None and _has_expired(petition):
            petition.close()
            closed += 1
        db.session.commit()
        _forget_page(petition_id)
    return closed


def _has_expired(petition: Petition) -> bool:
    return petition.state == PetitionState.OPEN and petition.closes_at <= utcnow()


def purge_stale_signatures() -> int:
    """Delete pending signatures nobody confirmed within the allowed days, and withdrawn
    ones as many days after their withdrawal, once the tally has taken them off.

    A pending signature's days run from the last confirmation email, whose link works for
    as long.
    """
    cutoff = utcnow() - timedelta(days=PENDING_SIGNATURE_DAYS)
    last_asked = func.coalesce(Signature.confirmation_sent_at, Signature.created_at)
    unconfirmed = and_(Signature.state == SignatureState.PENDING, last_asked < cutoff)
    withdrawn = and_(Signature.state == SignatureState.WITHDRAWN, Signature.withdrawn_at < cutoff)
    result = db.session.execute(
        delete(Signature).where(Signature.counted.is_(False), or_(unconfirmed, withdrawn))
    )
    db.session.commit()
    return result.rowcount


# --- signing ----------------------------------------------------------------------------


class SignOutcome(StrEnum):
    """What happened when someone signed; each has its own thank-you message."""

    CHECK_EMAIL = "check-email"
    COUNTED = "counted"
    ALREADY_SIGNED = "already-signed"
    RESENT = "resent"
    RECENTLY_SENT = "recently-sent"


class SignatureGone(Exception):
    """The signature was deleted (left unconfirmed too long) while it was being confirmed."""


class SigningRefused(Exception):
    """The signature was refused; ``message`` says why, ``retry_after`` when to try again."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


@dataclass(frozen=True)
class SignerDetails:
    name: str
    email: str
    city: str
    comment: str | None
    show_name: bool
    wants_updates: bool


def _check_limits(email_key: str, address: str) -> None:
    config = current_app.config
    retry_after = ratelimit.hit_all(
        [
            (config["SIGN_LIMIT_PER_ADDRESS"], f"sign:address:{address}"),
            (config["SIGN_LIMIT_PER_EMAIL"], f"sign:email:{email_key}"),
        ]
    )
    if retry_after is not None:
        raise SigningRefused(
            "We have had many signatures from you in a short time. "
            "Please try again a little later.",
            retry_after=retry_after,
        )


def _require_open(petition: Petition) -> None:
    if not petition.takes_signatures:
        raise SigningRefused("This petition is not taking signatures any more.")


def sign(petition: Petition, details: SignerDetails, address: str) -> SignOutcome:
    """Record a guest's signature as pending and email them the confirmation link.

    Signing again with the same address changes nothing; a pending signature gets its
    confirmation re-sent, and a confirmed one a note that it already counts, each at most
    once per ten minutes. The outcome is for the caller's records: what a guest is shown
    must be the same whatever it is, so that it tells nobody whether an address signed.
    """
    _require_open(petition)
    email_key = mail.inbox_key(details.email)
    _check_limits(email_key, address)
    return _sign_as_guest(petition, details, email_key)


def _sign_as_guest(petition: Petition, details: SignerDetails, email_key: str) -> SignOutcome:
    # Most signers are new, so the row is inserted first and read only if it was there.
    signature_id = _add_pending_signature(petition.id, details, email_key)
    if signature_id is not None:
        signer = Recipient(details.email.strip(), None, details.name)
        _queue_confirmation(petition, signature_id, signer)  # one transaction with its email
        return SignOutcome.CHECK_EMAIL
    existing = _signature_by_key(petition.id, email_key)
    if existing is None:  # purged between the two statements: sign afresh
        return _sign_as_guest(petition, details, email_key)
    if existing.state == SignatureState.WITHDRAWN:
        if _renew_withdrawn(existing, details):
            existing.confirmation_sent_at = utcnow()
            _queue_confirmation(petition, existing.id, _signer(existing))
            return SignOutcome.CHECK_EMAIL
        # Renewed by a request at the same time, or purged: start from the row as saved now.
        return _sign_as_guest(petition, details, email_key)
    if existing.state == SignatureState.PENDING and not existing.retake_details(
        _editable(details)  # the confirmation page shows them
    ):
        # Confirmed, withdrawn or purged since it was read: start from the row as saved now.
        return _sign_as_guest(petition, details, email_key)
    # Signed before, or renewed by a request at the same time: as the row is saved now.
    if existing.state == SignatureState.CONFIRMED:
        _tell_already_signed(petition, existing)
        return SignOutcome.ALREADY_SIGNED
    if _resend_confirmation(petition, existing):
        return SignOutcome.RESENT
    if _signature_by_key(petition.id, email_key) is None:  # purged before the resend
        return _sign_as_guest(petition, details, email_key)
    return SignOutcome.RECENTLY_SENT


def _add_pending_signature(petition_id: int, details: SignerDetails, email_key: str) -> int | None:
    """Insert a pending signature and return its id; None if this person signed before.

    A concurrent signature by the same person waits for the other to commit, then
    counts as signed before, so the unique key never raises here.
    """
    row = {
        "petition_id": petition_id,
        "email": details.email.strip(),
        "email_key": email_key,
        "state": SignatureState.PENDING,
        "confirmation_sent_at": utcnow(),
        **_editable(details),
    }
    return db.session.scalar(_new_signature(), row)


@built_once
def _new_signature():
    return (
        dialect_insert(Signature.__table__)
        .on_conflict_do_nothing(index_elements=["petition_id", "email_key"])
        .returning(Signature.id)
    )


def _editable(details: SignerDetails) -> SignerChoices:
    return {
        "name": details.name,
        "city": details.city,
        "city_slug": city_slug(details.city),
        "comment": details.comment or None,
        "show_name": details.show_name,
        "wants_updates": details.wants_updates,
    }


SIGNING_ATTEMPTS = 3


class _ChangedMeanwhile(Exception):
    """Another request changed the signature between this one reading and saving it."""


def sign_as_member(
    petition: Petition,
    member: Member,
    *,
    comment: str | None,
    show_name: bool,
    wants_updates: bool,
    address: str,
) -> SignOutcome:
    """One-click signing for a member whose email is confirmed: it counts at once.

    If the member's signature row changes meanwhile (signed at the same time, confirmed,
    or deleted by the purge of stale signatures), signing starts again from the row as
    it is saved now. The receipt goes only when this request confirmed the signature.
    """
    _require_open(petition)
    if not member.is_confirmed:
        raise SigningRefused("Please confirm your email address first; then one click signs.")
    email_key = mail.inbox_key(member.email)
    _check_limits(email_key, address)
    details = SignerDetails(
        member.display_name, member.email, member.city, comment, show_name, wants_updates
    )
    for _attempt in range(SIGNING_ATTEMPTS):
        try:
            signature = _confirm_for_member(petition, member, email_key, details)
        except (IntegrityError, StaleDataError, _ChangedMeanwhile):
            db.session.rollback()
            continue
        if signature is None:
            return SignOutcome.ALREADY_SIGNED
        request_tally(petition.id)
        receipt_title = f"You signed: {petition.title}"
        _tell_signer(
            "signature_receipt", receipt_title, petition.id, signature.id, _signer(signature)
        )
        return SignOutcome.COUNTED
    raise SigningRefused("Your signature changed while it was being saved. Please sign again.")


def _confirm_for_member(
    petition: Petition, member: Member, email_key: str, details: SignerDetails
) -> Signature | None:
    """Save the member's signature as confirmed; None if it already was.

    Raises _ChangedMeanwhile, IntegrityError or StaleDataError if another request changed
    or deleted the row between reading and saving it.
    """
    # Their own row first: one signed under an address they have since changed counts too.
    signature = _signature_of_member(petition.id, member.id) or _signature_by_key(
        petition.id, email_key
    )
    if signature is not None and signature.state == SignatureState.CONFIRMED:
        return None
    if signature is None:
        signature = Signature(
            petition_id=petition.id,
            email=member.email,
            email_key=email_key,
            state=SignatureState.PENDING,
            **_editable(details),
        )
        db.session.add(signature)
    elif signature.state == SignatureState.WITHDRAWN:
        if not (_settle_withdrawal(signature) and signature.renew(_editable(details))):
            raise _ChangedMeanwhile
    else:
        # Perhaps signed as a guest with this address, perhaps by someone else: what the
        # member signs is what they chose now.
        signature.replace_details(_editable(details))
    signature.email, signature.member_id = member.email, member.id
    if not signature.confirm():
        raise _ChangedMeanwhile
    db.session.commit()
    return signature


def _renew_withdrawn(signature: Signature, details: SignerDetails) -> bool:
    """Sign a withdrawn signature again; False if it changed or went meanwhile."""
    try:
        return _settle_withdrawal(signature) and signature.renew(_editable(details))
    except ObjectDeletedError:  # the purge deleted it after it was read
        return False


def _settle_withdrawal(signature: Signature) -> bool:
    """Take a withdrawn signature out of the counts before it is renewed; False if it is
    no longer withdrawn.

    The tallies subtract a signature by its city and confirmation hour, which renewing
    replaces; so a withdrawal not yet tallied is tallied first, here. Withdrawing and
    signing again is rare enough for this request to take the petition's lock.
    """
    if signature.counted:
        tally(signature.petition_id)  # commits; the row is read afresh below
    return signature.state == SignatureState.WITHDRAWN


def _signature_by_key(petition_id: int, email_key: str) -> Signature | None:
    return db.session.scalar(
        select(Signature).where(
            Signature.petition_id == petition_id, Signature.email_key == email_key
        )
    )


def _signature_of_member(petition_id: int, member_id: int) -> Signature | None:
    return db.session.scalar(
        select(Signature)
        .where(Signature.petition_id == petition_id, Signature.member_id == member_id)
        .order_by(Signature.id)
        .limit(1)
    )


def _signer(signature: Signature) -> Recipient:
    return Recipient(signature.email, signature.member_id, signature.name)


def _tell_signer(
    kind: str, title: str, petition_id: int, signature_id: int, signer: Recipient
) -> None:
    notify(
        kind,
        title=title,
        link=external_url("petitions.show", petition_id=petition_id),
        payload={"signature_id": signature_id},
        recipients=[signer],
    )


def _queue_confirmation(petition: Petition, signature_id: int, signer: Recipient) -> None:
    title = f"Confirm your signature: {petition.title}"
    _tell_signer("confirm_signature", title, petition.id, signature_id, signer)


def _tell_already_signed(petition: Petition, signature: Signature) -> None:
    """Email a confirmed signer who signs again that their signature already counts.

    The page a guest sees is the same whether or not the address had signed; this email
    tells the rest to the address's owner only, at most once per RESEND_AFTER for each
    address and petition, so a burst of attempts sends one. The rate limit keeps to that
    window; the key, of the window the moment falls in, still holds if Redis is down.
    """
    if not ratelimit.hit(
        ALREADY_SIGNED_LIMIT, _already_signed_key(signature), allow_when_down=True
    ):
        return
    window = int(utcnow().timestamp() // RESEND_AFTER.total_seconds())
    notify(
        "already_signed_petition",
        title=f"You have already signed: {petition.title}",
        link=external_url("petitions.show", petition_id=petition.id),
        payload={"signature_id": signature.id},
        recipients=[_signer(signature)],
        key=f"{_already_signed_key(signature)}:{window}",
    )


def _already_signed_key(signature: Signature) -> str:
    return f"petition-already-signed:{signature.id}"


def _resend_confirmation(petition: Petition, signature: Signature) -> bool:
    """Re-send a pending signature's confirmation unless one went out in the last ten minutes."""
    claimed = claim_unless_recent(
        Signature.confirmation_sent_at,
        signature.id,
        RESEND_AFTER,
        Signature.state == SignatureState.PENDING,
    )
    if claimed:
        _queue_confirmation(petition, signature.id, _signer(signature))
    return claimed


# Both links name the signature and its address, so that neither outlives an anonymised
# signature, nor works for another signer's row that reuses a deleted row's id.


def confirmation_token(signature: Signature) -> str:
    return make_token(CONFIRM_PURPOSE, [signature.id, signature.email_key])


def withdrawal_token(signature: Signature) -> str:
    return make_token(WITHDRAW_PURPOSE, [signature.id, signature.email_key])


def signature_for_confirmation(token: str) -> Signature | None:
    """The signature a confirmation link names, while the link is valid."""
    payload = read_token(CONFIRM_PURPOSE, token, max_age=PENDING_SIGNATURE_DAYS * 24 * 3600)
    # Confirming asks the petition whether it still takes signatures: read both at once.
    return _signature_named(payload, options=[joinedload(Signature.petition)])


def signature_for_withdrawal(token: str) -> Signature | None:
    """The signature a withdrawal link names."""
    return _signature_named(read_token(WITHDRAW_PURPOSE, token))


def _signature_named(payload: Any, options: list | None = None) -> Signature | None:
    if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[0], int)):
        return None
    signature = db.session.get(Signature, payload[0], options=options)
    return signature if signature is not None and signature.email_key == payload[1] else None


def confirm_signature(signature: Signature) -> bool:
    """Confirm a pending signature; it then counts. False if it was not pending, as saved:
    a withdrawal that landed first stays a withdrawal.

    Raises SignatureGone if the stale-signature purge deleted it meanwhile.
    """
    if not signature.petition.takes_signatures:
        return False
    signature_id, petition_id = signature.id, signature.petition_id
    if not signature.confirm():
        if not _signature_exists(signature_id):
            db.session.rollback()
            raise SignatureGone
        return False
    address_confirmed(signature.email)  # commits the confirmation with it
    request_tally(petition_id)
    return True


def withdraw_signature(signature: Signature) -> bool:
    """Withdraw a signature; the count goes down at the next tally. False if it was
    withdrawn already (or deleted), as saved."""
    petition_id = signature.petition_id
    if not signature.withdraw():
        db.session.rollback()
        return False
    db.session.commit()
    request_tally(petition_id)
    return True


def _signature_exists(signature_id: int) -> bool:
    return db.session.scalar(select(Signature.id).where(Signature.id == signature_id)) is not None


# --- tallies ----------------------------------------------------------------------------


def _tally_flag_key(petition_id: int) -> str:
    return f"gs:tally-queued:{petition_id}"


def request_tally(petition_id: int) -> None:
    """Queue a tally for the petition unless one is already waiting.

    The tally waits ``TALLY_DELAY_SECONDS`` in RQ's scheduler, so that a surge of
    confirmations shares one tally a second instead of queuing one each. If Redis is
    unreachable the signature is safe in the database, and the periodic sweep counts it.
    """
    from petitions import jobs

    delay = timedelta(seconds=current_app.config["TALLY_DELAY_SECONDS"])
    try:
        if redis_store.connection.set(
            _tally_flag_key(petition_id), 1, nx=True, ex=TALLY_DEBOUNCE_SECONDS
        ):
            # On ``high``: a surge of confirmations must not starve the count it feeds,
            # and the flag keeps this to one queued tally per petition.
            enqueue(
                jobs.tally_petition,
                petition_id,
                queue="high",
                retry=default_retry(),
                delay=delay,
            )
    except RedisError:
        current_app.logger.warning("could not queue a tally for petition %s", petition_id)


def release_tally_flag(petition_id: int) -> None:
    """Called as a tally starts, so that signatures confirmed from now on queue another."""
    redis_store.connection.delete(_tally_flag_key(petition_id))


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _lock_petition(petition_id: int) -> Petition | None:
    """Hold the petition's row until commit and read it afresh: state changes and tallies of
    one petition then queue up on PostgreSQL (SQLite serialises all writers anyway)."""
    return db.session.scalar(
        select(Petition)
        .where(Petition.id == petition_id)
        .with_for_update(of=Petition)
        .execution_options(populate_existing=True)
    )


def tally(petition_id: int) -> list[int]:
    """Add the signatures confirmed or withdrawn since the last run to the petition's counts.

    Claims the changed signatures in one statement (their ``counted`` flag catches up with
    their state), then adds the difference to the petition's count in one statement.
    Returns the milestones newly reached.
    """
    petition = _lock_petition(petition_id)
    if petition is None:
        return []
    confirmed = Signature.state == SignatureState.CONFIRMED
    changed = db.session.execute(
        update(Signature)
        .where(Signature.petition_id == petition_id, Signature.counted != confirmed)
        .values(counted=confirmed)
        .returning(Signature.counted, Signature.city_slug, Signature.city, Signature.confirmed_at)
    ).all()
    if not changed:
        db.session.commit()
        return []
    by_city: Counter[tuple[str, str]] = Counter()
    by_hour: Counter[datetime] = Counter()
    for counted, slug, city, confirmed_at in changed:
        step = 1 if counted else -1
        by_city[(slug, city)] += step
        if confirmed_at is not None:
            by_hour[_hour(confirmed_at)] += step
    delta = sum(by_city.values())
    before = petition.signature_count
    db.session.execute(
        update(Petition)
        .where(Petition.id == petition_id)
        .values(signature_count=Petition.signature_count + delta)
    )
    for (slug, city), step in by_city.items():
        if step:
            add_to_count(
                CityCount, {"petition_id": petition_id, "city_slug": slug}, step, city=city
            )
    for hour, step in by_hour.items():
        if step:
            add_to_count(HourlyCount, {"petition_id": petition_id, "hour": hour}, step)
    reached = _record_milestones(petition, before, before + delta)
    tell_milestones(petition_id, reached)  # committed with the counts, or not at all
    db.session.commit()
    return reached


def milestone_thresholds(goal: int) -> list[int]:
    """The counts worth celebrating for a petition with this goal."""
    return sorted({*MILESTONES, goal})


def _record_milestones(petition: Petition, before: int, after: int) -> list[int]:
    crossed = [t for t in milestone_thresholds(petition.goal) if before < t <= after]
    if not crossed:
        return []
    statement = (
        dialect_insert(Milestone)
        .values(
            [{"petition_id": petition.id, "threshold": t, "reached_at": utcnow()} for t in crossed]
        )
        .on_conflict_do_nothing(index_elements=["petition_id", "threshold"])
        .returning(Milestone.threshold)
    )
    return sorted(db.session.scalars(statement).all())


def petitions_needing_tally() -> list[int]:
    """Petitions with signatures whose counted flag lags their state."""
    confirmed = Signature.state == SignatureState.CONFIRMED
    return list(
        db.session.scalars(
            select(Signature.petition_id).where(Signature.counted != confirmed).distinct()
        )
    )


def reconcile(petition_id: int) -> int:
    """Recount a petition from its signature rows and repair any drift, and tell any
    milestone not yet told; returns the drift.

    The counts are rebuilt from the rows flagged ``counted`` once the flags have caught up
    with the states. Only code holding the petition's lock changes that flag, so every
    statement here sees the same rows, whatever is confirmed or withdrawn meanwhile (that
    is for the next tally).
    """
    petition = _lock_petition(petition_id)
    if petition is None:
        return 0
    confirmed = Signature.state == SignatureState.CONFIRMED
    db.session.execute(
        update(Signature)
        .where(Signature.petition_id == petition_id, Signature.counted != confirmed)
        .values(counted=confirmed)
    )
    mine = and_(Signature.petition_id == petition_id, Signature.counted.is_(True))
    real = db.session.scalar(select(func.count()).where(mine)) or 0
    drift = real - petition.signature_count
    petition.signature_count = real
    db.session.execute(delete(CityCount).where(CityCount.petition_id == petition_id))
    spellings = db.session.execute(
        select(Signature.city_slug, Signature.city, func.count())
        .where(mine)
        .group_by(Signature.city_slug, Signature.city)
    ).all()
    db.session.add_all(
        CityCount(petition_id=petition_id, city_slug=slug, city=label, count=count)
        for slug, (label, count) in _city_labels(spellings).items()
    )
    db.session.execute(delete(HourlyCount).where(HourlyCount.petition_id == petition_id))
    hours = Counter(
        _hour(t)
        for t in db.session.scalars(select(Signature.confirmed_at).where(mine))
        if t is not None
    )
    db.session.add_all(
        HourlyCount(petition_id=petition_id, hour=h, count=n) for h, n in hours.items()
    )
    _record_milestones(petition, 0, real)
    # Every milestone recorded, not only those recorded now: a tally that crashed between
    # two notices saved both milestones but told one. Keys make the others no-ops.
    tell_milestones(petition_id, _recorded_milestones(petition_id))
    db.session.commit()
    return drift


def _recorded_milestones(petition_id: int) -> list[int]:
    return list(
        db.session.scalars(
            select(Milestone.threshold)
            .where(Milestone.petition_id == petition_id)
            .order_by(Milestone.threshold)
        )
    )


def tell_milestones(petition_id: int, thresholds: list[int]) -> None:
    """Notify the organiser of each milestone reached; each is told once, ever."""
    petition = db.session.get(Petition, petition_id)
    if petition is None or petition.organiser is None:
        return
    organiser = petition.organiser
    for threshold in thresholds:
        reached = "its goal of " if threshold == petition.goal else ""
        notify(
            "petition_milestone",
            title=f"{petition.title} reached {reached}{threshold:,} signatures",
            link=external_url("petitions.show", petition_id=petition_id),
            payload={"petition_id": petition_id, "threshold": threshold},
            recipients=[Recipient(organiser.email, organiser.id, organiser.display_name)],
            # Told once, however many tallies or reconciliations cross the same count.
            key=f"petition-milestone:{petition_id}:{threshold}",
        )


# --- reading ----------------------------------------------------------------------------


class Sort(StrEnum):
    TRENDING = "trending"
    NEWEST = "newest"
    MOST_SIGNED = "most-signed"


def _recent_counts(hours: int = 24):
    since = _hour(utcnow()) - timedelta(hours=hours - 1)
    return (
        select(HourlyCount.petition_id, func.sum(HourlyCount.count).label("recent"))
        .where(HourlyCount.hour >= since)
        .group_by(HourlyCount.petition_id)
        .subquery()
    )


def find_petitions(
    *,
    q: str = "",
    city: str = "",
    topic: str = "",
    state: str = PetitionState.OPEN,
    sort: str = Sort.TRENDING,
    page: int = 1,
) -> Page:
    """Public petitions matching the filters, a page at a time."""
    recent = _recent_counts()
    query = select(Petition).outerjoin(recent, recent.c.petition_id == Petition.id)
    public = [PetitionState.OPEN, PetitionState.CLOSED, PetitionState.WON]
    query = query.where(
        Petition.has_status(state) if state in public else Petition.state.in_(public)
    )
    if city:
        query = query.where(Petition.city_slug == city_slug(city))
    if topic:
        query = query.where(Petition.topic == topic)
    if q.strip():
        words = q.strip()
        query = query.where(
            or_(
                Petition.title.icontains(words, autoescape=True),
                Petition.ask.icontains(words, autoescape=True),
            )
        )
    order = {
        Sort.NEWEST: [Petition.opened_at.desc(), Petition.id.desc()],
        Sort.MOST_SIGNED: [Petition.signature_count.desc(), Petition.id.desc()],
    }.get(
        sort,
        [
            func.coalesce(recent.c.recent, 0).desc(),
            Petition.signature_count.desc(),
            Petition.id.desc(),
        ],
    )
    return paginate(query, order, page, PER_PAGE)


def trending_near(city: str | None, limit: int = 6) -> list[Petition]:
    """Open petitions for the home page: the visitor's city first, then the busiest elsewhere."""
    recent = _recent_counts()
    query = (
        select(Petition)
        .outerjoin(recent, recent.c.petition_id == Petition.id)
        .where(Petition.has_status(PetitionState.OPEN))
    )
    order = [
        func.coalesce(recent.c.recent, 0).desc(),
        Petition.signature_count.desc(),
        Petition.id.desc(),
    ]
    if city:
        order.insert(0, (Petition.city_slug == city_slug(city)).desc())
    return list(db.session.scalars(query.order_by(*order).limit(limit)))


def _named_signers(petition: Petition):
    return select(Signature).where(
        Signature.petition_id == petition.id,
        Signature.state == SignatureState.CONFIRMED,
        Signature.show_name.is_(True),
    )


def recent_signers(petition: Petition, limit: int = 10) -> list[Signature]:
    """The latest confirmed signers who chose to be shown, with their comments."""
    query = _named_signers(petition).order_by(Signature.confirmed_at.desc()).limit(limit)
    return list(db.session.scalars(query))


def _city_labels(spellings: list[tuple[str, str, int]]) -> dict[str, tuple[str, int]]:
    """Each place's most used spelling (the first in sort order on a tie) and its count:
    the label is the signers' common choice, not whatever the first one typed."""
    places: dict[str, Counter[str]] = {}
    for slug, city, count in spellings:
        places.setdefault(slug, Counter())[city] += count
    return {
        slug: (min(counts, key=lambda city: (-counts[city], city)), counts.total())
        for slug, counts in places.items()
    }


def city_breakdown(petition: Petition, limit: int = 10) -> list[CityCount]:
    """Where the signatures come from, most first."""
    return list(
        db.session.scalars(
            select(CityCount)
            .where(CityCount.petition_id == petition.id, CityCount.count > 0)
            .order_by(CityCount.count.desc(), CityCount.city)
            .limit(limit)
        )
    )


@dataclass(frozen=True)
class Chart:
    """A cumulative line of signatures over time, scaled to an SVG view box."""

    points: str
    width: int
    height: int
    start: datetime | None
    end: datetime | None
    peak: int


def signature_chart(petition: Petition, width: int = 600, height: int = 160) -> Chart:
    """The petition's signatures over time, by day, as points for a server-rendered SVG."""
    rows = db.session.execute(
        select(HourlyCount.hour, HourlyCount.count)
        .where(HourlyCount.petition_id == petition.id)
        .order_by(HourlyCount.hour)
    ).all()
    if not rows:
        return Chart("", width, height, None, None, 0)
    daily: Counter[datetime] = Counter()
    for hour, count in rows:
        daily[hour.replace(hour=0)] += count
    start, end = min(daily), max(max(daily), _hour(utcnow()).replace(hour=0))
    days = (end - start).days or 1
    total, points = 0, []
    for offset in range(days + 1):
        total += daily.get(start + timedelta(days=offset), 0)
        points.append((offset, total))
    peak = max(total for _, total in points) or 1
    scaled = " ".join(
        f"{round(width * d / days, 1)},{round(height - height * t / peak, 1)}" for d, t in points
    )
    return Chart(scaled, width, height, start, end, peak)


def public_signers(petition: Petition) -> list[Signature]:
    """Every confirmed signer who chose to be shown, for the delivery view."""
    return list(db.session.scalars(_named_signers(petition).order_by(Signature.confirmed_at)))


def signatures_csv(petition: Petition) -> str:
    """Confirmed signatures for the organiser; emails only of those who opted in."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "city", "signed_at", "comment", "email"])
    rows = db.session.scalars(
        select(Signature)
        .where(Signature.petition_id == petition.id, Signature.state == SignatureState.CONFIRMED)
        .order_by(Signature.confirmed_at)
        .execution_options(yield_per=1000)
    )
    for signature in rows:
        writer.writerow(
            [
                _csv_safe(signature.public_name),
                _csv_safe(signature.city),
                signature.confirmed_at.isoformat() if signature.confirmed_at else "",
                _csv_safe(signature.comment or ""),
                _csv_safe(signature.email) if signature.wants_updates else "",
            ]
        )
    return buffer.getvalue()


def _csv_safe(value: str) -> str:
    # Spreadsheets run cells starting with these as formulas.
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def updates_for(petition: Petition) -> list[PetitionUpdate]:
    """The organiser's updates, newest first."""
    return list(
        db.session.scalars(
            select(PetitionUpdate)
            .where(PetitionUpdate.petition_id == petition.id)
            .order_by(PetitionUpdate.id.desc())
        )
    )


def visible_petition(petition_id: int, viewer: Member | None) -> Petition | None:
    """The petition if ``viewer`` may see it: drafts and hidden ones only by their organiser
    (and hidden ones by moderators)."""
    petition = db.session.get(Petition, petition_id)
    if petition is None or petition.is_public:
        return petition
    is_moderator = bool(viewer and viewer.is_authenticated and viewer.is_moderator)
    if petition.is_organised_by(viewer) or (
        petition.state == PetitionState.HIDDEN and is_moderator
    ):
        return petition
    return None


# --- updates to signers -----------------------------------------------------------------


def post_update(petition: Petition, *, title: str, body: str) -> PetitionUpdate:
    """Publish news on the petition and email it to signers who opted in.

    The same title and body sent again within REPOST_WINDOW (a double click, a resent
    form) return the update already posted, so signers get it once.
    """
    _lock_petition(petition.id)  # two posts of one update queue up here
    if not petition.is_public:
        db.session.rollback()
        raise PetitionError("Publish the petition before posting updates.")
    if (posted := _recent_update(petition, title, body)) is not None:
        db.session.commit()
        return posted
    news = PetitionUpdate(petition_id=petition.id, title=title, body=body)
    db.session.add(news)
    db.session.flush()  # the update and its notification are saved together by notify()
    notify(
        "petition_update",
        title=f"{petition.title}: {title}",
        link=external_url("petitions.show", petition_id=petition.id),
        payload={"update_id": news.id},
        audience="petition-update-signers",
        key=f"petition-update:{news.id}",
    )
    _forget_page(petition.id)
    return news


def _recent_update(petition: Petition, title: str, body: str) -> PetitionUpdate | None:
    return first_copy(
        PetitionUpdate,
        PetitionUpdate.petition_id == petition.id,
        PetitionUpdate.title == title,
        PetitionUpdate.body == body,
    )


def update_audience(update_id: int) -> Select:
    """Confirmed signers of the update's petition who asked for updates, for fan-out."""
    petition_id = select(PetitionUpdate.petition_id).where(PetitionUpdate.id == update_id)
    return select(
        Signature.id.label("key"), Signature.email, Signature.member_id, Signature.name
    ).where(
        Signature.petition_id == petition_id.scalar_subquery(),
        Signature.state == SignatureState.CONFIRMED,
        Signature.wants_updates.is_(True),
    )


def still_wanting_updates(petition_id: int, readers: list[Reader]) -> set[Reader]:
    """Of these readers, those who still have a confirmed signature on the petition that
    asks for updates: news held for a digest, or retried, stops once they withdrew. One
    query for a whole batch."""

    def confirmed_and_asking(keys: set[str], member_ids: set[int]) -> Select:
        return select(Signature.email_key, Signature.member_id).where(
            Signature.petition_id == petition_id,
            Signature.state == SignatureState.CONFIRMED,
            Signature.wants_updates.is_(True),
            or_(Signature.email_key.in_(keys), Signature.member_id.in_(member_ids)),
        )

    return readers_found(readers, mail.inbox_key, confirmed_and_asking)


# --- members' profiles, data and deletion ------------------------------------------------


def started_by(member: Member) -> list[Petition]:
    """Public petitions the member started, newest first."""
    public = [PetitionState.OPEN, PetitionState.CLOSED, PetitionState.WON]
    return list(
        db.session.scalars(
            select(Petition)
            .where(Petition.organiser_id == member.id, Petition.state.in_(public))
            .order_by(Petition.id.desc())
        )
    )


def _member_signatures(member: Member):
    # An address counts as the member's only once they have proved they read it.
    mine = Signature.member_id == member.id
    if member.is_confirmed:
        mine = or_(mine, Signature.email_key == mail.inbox_key(member.email))
    return select(Signature).where(mine)


@data_export.connect
def export_member_petitions(sender, member: Member, **extra) -> dict[str, Any]:
    """The member's petitions and signatures, for their data download."""
    started = db.session.scalars(select(Petition).where(Petition.organiser_id == member.id)).all()
    signed = db.session.scalars(_member_signatures(member)).all()
    return {
        "petitions_started": [
            {"id": p.id, "title": p.title, "state": p.status, "signatures": p.signature_count}
            for p in started
        ],
        "signatures": [
            {
                "petition_id": s.petition_id,
                "name": s.name,
                "email": s.email,
                "city": s.city,
                "comment": s.comment,
                "show_name": s.show_name,
                "wants_updates": s.wants_updates,
                "state": s.state,
                "signed_at": s.created_at.isoformat(),
            }
            for s in signed
        ],
    }


@account_deleting.connect
def anonymise_member_signatures(sender, member: Member, **extra) -> None:
    """Signatures stay counted, without the name, email or comment of the deleted member.

    Pending ones go: nobody is left to confirm them, and their links must not count them.
    """
    for signature in db.session.scalars(_member_signatures(member)):
        if signature.state == SignatureState.PENDING:
            db.session.delete(signature)
        else:
            signature.anonymise()


@account_deleting.connect
def delete_member_drafts(sender, member: Member, **extra) -> None:
    """Drafts nobody saw go with their author; petitions already public stay, as their
    signers' record, and close on their date."""
    db.session.execute(
        delete(Petition).where(
            Petition.organiser_id == member.id, Petition.state == PetitionState.DRAFT
        )
    )


@email_confirmed.connect
def follow_members_new_address(sender, member: Member, **extra) -> None:
    """A member's signatures move with their confirmed address, so updates and receipts go
    where they read mail, not to an address that may now be someone else's."""
    key = mail.inbox_key(member.email)
    mine = Signature.member_id == member.id
    db.session.execute(update(Signature).where(mine).values(email=member.email))
    # The new key too, except on a petition where that address signed apart already.
    signed_apart = select(Signature.petition_id).where(Signature.email_key == key)
    db.session.execute(
        update(Signature)
        .where(mine, Signature.petition_id.not_in(signed_apart))
        .values(email_key=key)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


# --- petitions on other features' pages ---------------------------------------------------


@linked_work.connect
def summarise_petitions(
    sender, kind: str, ids: list[int], **extra
) -> dict[int, WorkSummary] | None:
    """Title, link and count of public petitions, for campaign pages."""
    if kind != "petition":
        return None
    public = [PetitionState.OPEN, PetitionState.CLOSED, PetitionState.WON]
    found = db.session.scalars(
        select(Petition).where(Petition.id.in_(ids), Petition.state.in_(public))
    )
    return {
        p.id: WorkSummary(
            title=p.title,
            endpoint="petitions.show",
            values={"petition_id": p.id},
            detail=f"{p.signature_count:,} of {p.goal:,} signatures · {p.status}",
            when=p.opened_at,
        )
        for p in found
    }


@work_organised_by.connect
def organises_petition(sender, kind: str, target_id: int, member: Member, **extra) -> bool | None:
    """Whether ``member`` organises the petition, so may attach it to a campaign."""
    if kind != "petition":
        return None
    petition = db.session.get(Petition, target_id)
    return petition is not None and petition.organiser_id == member.id
