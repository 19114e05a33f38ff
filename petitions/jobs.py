"""RQ jobs for petitions. Each takes ids, runs in an app context, and is safe to run twice."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import delete, select

from core import mail
from core.db import dialect_insert, utcnow
from core.extensions import db
from core.queue import default_retry, enqueue, periodic
from core.urls import external_url
from petitions import services
from petitions.models import (
    Petition,
    PetitionUpdate,
    Signature,
    SignatureState,
    UpdateDelivery,
)


def _signature_links(signature: Signature) -> dict[str, str]:
    return {
        "petition_link": external_url("petitions.show", petition_id=signature.petition_id),
        "withdraw_link": external_url(
            "petitions.withdraw", token=services.withdrawal_token(signature)
        ),
    }


def send_signature_confirmation(signature_id: int) -> bool:
    """Email the link that confirms a pending signature."""
    signature = db.session.get(Signature, signature_id)
    if signature is None or signature.state != SignatureState.PENDING:
        return False
    return mail.deliver(
        "confirm_signature",
        signature.email,
        signature=signature,
        petition=signature.petition,
        confirm_link=external_url(
            "petitions.confirm", token=services.confirmation_token(signature)
        ),
        **_signature_links(signature),
    )


def send_signature_receipt(signature_id: int) -> bool:
    """Thank a member whose one-click signature counted, with a way to withdraw it."""
    signature = db.session.get(Signature, signature_id)
    if signature is None or signature.state != SignatureState.CONFIRMED:
        return False
    return mail.deliver(
        "signature_receipt",
        signature.email,
        signature=signature,
        petition=signature.petition,
        **_signature_links(signature),
    )


def tally_petition(petition_id: int) -> int:
    """Bring one petition's counts up to date; returns how many milestones it reached."""
    services.release_tally_flag(petition_id)
    reached = services.tally(petition_id)
    services.after_tally(petition_id, reached)
    return len(reached)


@periodic(interval=60)
def tally_stragglers() -> int:
    """Tally petitions whose signatures changed without a tally being queued (Redis was down)."""
    petition_ids = services.petitions_needing_tally()
    for petition_id in petition_ids:
        services.after_tally(petition_id, services.tally(petition_id))
    return len(petition_ids)


@periodic(cron="17 3 * * *")
def reconcile_counts() -> int:
    """Nightly: recount every petition from its rows; returns the total drift repaired."""
    petition_ids = db.session.scalars(select(Petition.id)).all()
    return sum(abs(services.reconcile(petition_id)) for petition_id in petition_ids)


@periodic(interval=300)
def close_expired_petitions() -> int:
    """Close open petitions whose closing date has passed."""
    return services.close_expired_petitions()


@periodic(interval=3600)
def purge_stale_signatures() -> int:
    """Delete signatures left unconfirmed for a week."""
    return services.purge_stale_signatures()


def notify_milestone(petition_id: int, threshold: int) -> bool:
    """Tell the organiser the petition reached ``threshold`` signatures, exactly once."""
    petition = db.session.get(Petition, petition_id)
    if petition is None or petition.organiser is None:
        return False
    if not services.claim_milestone_notice(petition_id, threshold):
        return False
    try:
        return mail.deliver(
            "petition_milestone",
            petition.organiser.email,
            petition=petition,
            threshold=threshold,
            is_goal=threshold == petition.goal,
            petition_link=external_url("petitions.show", petition_id=petition_id),
        )
    except mail.TemporaryMailError:
        services.release_milestone_notice(petition_id, threshold)
        raise


def fan_out_update(update_id: int) -> int:
    """Split an update's recipients into batches on the bulk queue; returns the batch count."""
    batches = services.update_recipient_batches(update_id)
    for batch in batches:
        enqueue(send_update_batch, update_id, batch, queue="bulk", retry=default_retry())
    return len(batches)


def _claim_delivery(update_id: int, signature_id: int) -> bool:
    statement = (
        dialect_insert(UpdateDelivery)
        .values(update_id=update_id, signature_id=signature_id)
        .on_conflict_do_nothing(index_elements=["update_id", "signature_id"])
        .returning(UpdateDelivery.signature_id)
    )
    claimed = db.session.scalar(statement) is not None
    db.session.commit()
    return claimed


def send_update_batch(update_id: int, signature_ids: list[int]) -> int:
    """Email one batch of an update over one connection; never twice to the same signer."""
    news = db.session.get(PetitionUpdate, update_id)
    if news is None:
        return 0
    petition = db.session.get(Petition, news.petition_id)
    sent = 0
    with mail.connection() as connection:
        for signature_id in signature_ids:
            signature = db.session.get(Signature, signature_id)
            if signature is None or not signature.wants_updates:
                continue
            if not _claim_delivery(update_id, signature_id):
                continue
            message = mail.render(
                "petition_update",
                signature.email,
                update=news,
                petition=petition,
                signature=signature,
                **_signature_links(signature),
            )
            try:
                connection.send(message)
            except mail.TemporaryMailError:
                _release_delivery(update_id, signature_id)
                raise
            except mail.PermanentMailError as error:
                current_app.logger.warning(
                    "update %s to %s refused: %s", update_id, signature_id, error
                )
                continue
            _mark_sent(update_id, signature_id)
            sent += 1
    return sent


def _release_delivery(update_id: int, signature_id: int) -> None:
    db.session.execute(
        delete(UpdateDelivery).where(
            UpdateDelivery.update_id == update_id, UpdateDelivery.signature_id == signature_id
        )
    )
    db.session.commit()


def _mark_sent(update_id: int, signature_id: int) -> None:
    delivery = db.session.get(UpdateDelivery, (update_id, signature_id))
    delivery.sent_at = utcnow()
    db.session.commit()
