"""RQ jobs for petitions. Each takes ids, runs in an app context, and is safe to run twice."""

from __future__ import annotations

from sqlalchemy import select

from core.extensions import db
from core.queue import periodic
from core.urls import external_url
from notifications.services import Category, Delivery, Reader, audience, message
from petitions import services
from petitions.models import Petition, PetitionUpdate, Signature, SignatureState


def tally_petition(petition_id: int) -> int:
    """Bring one petition's counts up to date; returns how many milestones it reached."""
    services.release_tally_flag(petition_id)
    return len(services.tally(petition_id))


@periodic(interval=60)
def tally_stragglers() -> int:
    """Tally petitions whose signatures changed without a tally being queued (Redis was down)."""
    petition_ids = services.petitions_needing_tally()
    for petition_id in petition_ids:
        services.tally(petition_id)
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


# --- messages: what each email says, built in the worker from stored ids ---------------


def _signature_context(payload: dict, *, state: SignatureState) -> dict | None:
    signature = db.session.get(Signature, payload["signature_id"])
    if signature is None or signature.state != state:
        return None  # confirmed, withdrawn or deleted since: nothing to say
    return {
        "signature": signature,
        "petition": signature.petition,
        "petition_link": external_url("petitions.show", petition_id=signature.petition_id),
        "withdraw_link": external_url(
            "petitions.withdraw", token=services.withdrawal_token(signature)
        ),
        "confirm_link": external_url(
            "petitions.confirm", token=services.confirmation_token(signature)
        ),
    }


@message("confirm_signature", transactional=True)
def confirm_signature_message(payload: dict, delivery: Delivery) -> dict | None:
    """The link that confirms a pending signature."""
    return _signature_context(payload, state=SignatureState.PENDING)


@message("signature_receipt", transactional=True)
def signature_receipt_message(payload: dict, delivery: Delivery) -> dict | None:
    """Thanks to a member whose one-click signature counted, with a way to withdraw."""
    return _signature_context(payload, state=SignatureState.CONFIRMED)


@message("already_signed_petition", transactional=True)
def already_signed_message(payload: dict, delivery: Delivery) -> dict | None:
    """To a signer who signed again: their signature already counts."""
    return _signature_context(payload, state=SignatureState.CONFIRMED)


@message("petition_milestone", category=Category.PETITIONS)
def milestone_message(payload: dict, delivery: Delivery) -> dict | None:
    """To the organiser: the petition reached a milestone."""
    petition = db.session.get(Petition, payload["petition_id"])
    if petition is None:
        return None
    return {
        "petition": petition,
        "threshold": payload["threshold"],
        "is_goal": payload["threshold"] == petition.goal,
        "petition_link": external_url("petitions.show", petition_id=petition.id),
    }


def signers_still_asking(payload: dict, readers: list[Reader]) -> set[Reader]:
    """The readers of an update who still ask for the petition's updates."""
    news = db.session.get(PetitionUpdate, payload["update_id"])
    return services.still_wanting_updates(news.petition_id, readers) if news else set()


@message("petition_update", category=Category.PETITIONS, still_in_audience=signers_still_asking)
def update_message(payload: dict, delivery: Delivery) -> dict | None:
    """The organiser's news, to a signer who asked for updates, while the petition is still
    public (moderators may hide it after the news was written)."""
    news = db.session.get(PetitionUpdate, payload["update_id"])
    if news is None:
        return None
    petition = db.session.get(Petition, news.petition_id)
    if petition is None or not petition.is_public:
        return None
    return {
        "update": news,
        "petition": petition,
        "petition_link": external_url("petitions.show", petition_id=news.petition_id),
    }


@audience("petition-update-signers")
def update_signers(payload: dict):
    """Who receives an update: confirmed signers who opted in."""
    return services.update_audience(payload["update_id"])
