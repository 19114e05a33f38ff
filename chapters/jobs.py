"""RQ jobs for chapters, and the messages and audiences of chapter notifications.

Jobs take ids, run in an app context and are safe to run twice: every notification they
send carries a key, so a second run finds it already sent.
"""

from __future__ import annotations

from sqlalchemy import select

from chapters import services
from chapters.models import Chapter, Meetup, Proposal, Rsvp, RsvpStatus
from core.extensions import db
from core.queue import periodic
from core.urls import external_url
from notifications.services import Category, Delivery, audience, message


def send_reminder(meetup_id: int, lead: str) -> bool:
    """Scheduled 24 hours and 1 hour before a meetup; checks it is still due."""
    return services.send_reminder(meetup_id, lead)


def closing_soon(proposal_id: int) -> bool:
    """Scheduled shortly before a proposal closes; reminds those who have not voted."""
    return services.send_closing_soon(proposal_id)


def close_proposal(proposal_id: int) -> str | None:
    """Scheduled at a proposal's closing time; records and announces the outcome."""
    outcome = services.close_proposal(proposal_id)
    return outcome.value if outcome else None


@periodic(interval=300)
def send_due_reminders() -> int:
    """Send meetup reminders whose scheduled job was lost while Redis was away."""
    return services.send_due_reminders()


@periodic(interval=60)
def settle_due_proposals() -> int:
    """Close proposals and send closing-soon reminders that no scheduled job covered."""
    return services.settle_due_proposals()


# --- who hears about what ------------------------------------------------------------------


@audience("chapter-members")
def chapter_members(payload: dict):
    return services.member_audience(payload["chapter_id"])


@audience("meetup-attendees")
def meetup_attendees(payload: dict):
    """Those going or on the waitlist: they hear about changes and cancellations."""
    return services.attendee_audience(
        payload["meetup_id"], (RsvpStatus.GOING, RsvpStatus.WAITLISTED)
    )


@audience("meetup-going")
def meetup_going(payload: dict):
    return services.attendee_audience(payload["meetup_id"], (RsvpStatus.GOING,))


@audience("proposal-non-voters")
def proposal_non_voters(payload: dict):
    return services.non_voter_audience(payload["proposal_id"])


# --- what each message says ------------------------------------------------------------------


def _meetup_context(payload: dict) -> dict | None:
    meetup = db.session.get(Meetup, payload["meetup_id"])
    if meetup is None:
        return None
    return {
        "meetup": meetup,
        "chapter": meetup.chapter,
        "when": services.when_text(meetup),
        "meetup_link": external_url("chapters.meetup", meetup_id=meetup.id),
    }


def _proposal_context(payload: dict) -> dict | None:
    proposal = db.session.get(Proposal, payload["proposal_id"])
    if proposal is None:
        return None
    return {
        "proposal": proposal,
        "chapter": proposal.chapter,
        "closes": services.local_time(proposal.closes_at, proposal.chapter.zone),
        "proposal_link": external_url("chapters.proposal", proposal_id=proposal.id),
    }


def _still_in_chapter(chapter_id: int, delivery: Delivery) -> bool:
    """Whether the reader is still a member: news of a chapter they have left, sent late or
    held for a digest, is no longer theirs."""
    return services.is_member(chapter_id, delivery.member_id)


@message("chapter_active", category=Category.MEETUPS)
def chapter_active_message(payload: dict, delivery: Delivery) -> dict | None:
    chapter = db.session.get(Chapter, payload["chapter_id"])
    if chapter is None or not _still_in_chapter(chapter.id, delivery):
        return None
    return {
        "chapter": chapter,
        "members": services.member_count(chapter),
        "chapter_link": external_url("chapters.show", slug=chapter.slug),
    }


@message("meetup_new", category=Category.MEETUPS)
def new_meetup_message(payload: dict, delivery: Delivery) -> dict | None:
    return _current_meetup_news(payload, delivery)


@message("meetup_changed", category=Category.MEETUPS, timely=True)
def changed_meetup_message(payload: dict, delivery: Delivery) -> dict | None:
    return _current_meetup_news(payload, delivery)


def _current_meetup_news(payload: dict, delivery: Delivery) -> dict | None:
    """News of a meetup still on, for a reader still in its chapter."""
    context = _meetup_context(payload)
    if context is None or context["meetup"].is_cancelled:
        return None
    if not _still_in_chapter(context["chapter"].id, delivery):
        return None
    return context


@message("meetup_cancelled", category=Category.MEETUPS, timely=True)
def cancelled_meetup_message(payload: dict, delivery: Delivery) -> dict | None:
    context = _meetup_context(payload)
    if context is None or not _still_in_chapter(context["chapter"].id, delivery):
        return None
    return context


@message("meetup_reminder", category=Category.MEETUPS, timely=True)
def reminder_message(payload: dict, delivery: Delivery) -> dict | None:
    """Only for someone still going to a meetup that still happens at the time reminded of."""
    context = _meetup_context(payload)
    if context is None or context["meetup"].is_cancelled or context["meetup"].has_started:
        return None
    # A meetup moved since: the change was told, and the new time has reminders of its own.
    starts = payload.get("starts")
    if starts is not None and starts != int(context["meetup"].starts_at.timestamp()):
        return None
    rsvp = db.session.scalar(
        select(Rsvp).where(
            Rsvp.meetup_id == payload["meetup_id"], Rsvp.member_id == delivery.member_id
        )
    )
    if rsvp is None or rsvp.status != RsvpStatus.GOING:
        return None
    return {**context, "lead": services.reminder_lead(context["meetup"], payload["lead"])}


@message("meetup_promoted", transactional=True)
def promoted_message(payload: dict, delivery: Delivery) -> dict | None:
    """Told at once: a place opened and the first on the waitlist has it. Once the meetup
    has begun or been called off the news is wrong, and places are no longer given."""
    context = _meetup_context(payload)
    if context is None or context["meetup"].is_cancelled or context["meetup"].has_started:
        return None
    return context if _still_going(payload, delivery) else None


def _still_going(payload: dict, delivery: Delivery) -> bool:
    """Whether the recipient still has the place they were promoted to."""
    # Notifications recorded before one covered everyone promoted name a single RSVP.
    rsvp_ids = payload.get("rsvp_ids") or [payload["rsvp_id"]]
    rsvp = db.session.scalar(
        select(Rsvp).where(Rsvp.id.in_(rsvp_ids), Rsvp.member_id == delivery.member_id)
    )
    return rsvp is not None and rsvp.status == RsvpStatus.GOING


@message("proposal_new", category=Category.DECISIONS)
def new_proposal_message(payload: dict, delivery: Delivery) -> dict | None:
    context = _proposal_context(payload)
    if context is None or not context["proposal"].is_open:
        return None
    if not _still_in_chapter(context["chapter"].id, delivery):
        return None
    return context


@message("proposal_closing", category=Category.DECISIONS)
def closing_soon_message(payload: dict, delivery: Delivery) -> dict | None:
    """Only for members who still have not voted when the message is sent."""
    context = _proposal_context(payload)
    if context is None or not context["proposal"].is_open:
        return None
    if services.has_voted(payload["proposal_id"], delivery.member_id):
        return None
    if not _still_in_chapter(context["chapter"].id, delivery):  # they can no longer vote
        return None
    return context


@message("proposal_outcome", category=Category.DECISIONS)
def outcome_message(payload: dict, delivery: Delivery) -> dict | None:
    context = _proposal_context(payload)
    if context is None or not _still_in_chapter(context["chapter"].id, delivery):
        return None
    proposal = context["proposal"]
    return {**context, "tally": services.tally(proposal)}
