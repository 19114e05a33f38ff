"""Chapter decisions: proposals, one vote per member, quorum and outcomes through the
scheduled closing job, permissions, bad input, and who is told what by email."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, insert, select, text, update

from chapters import jobs as chapter_jobs
from chapters import services
from chapters.models import Chapter, Choice, Outcome, Proposal, ProposalState, Vote
from core.db import utcnow
from core.extensions import db
from core.queue import all_queues, make_worker
from members.services import delete_account
from notifications import jobs as notification_jobs
from notifications import services as notification_services
from notifications.models import Category, Delivery, DeliveryState, Frequency, Notification
from notifications.services import send_daily_digests, set_preferences, subscriber_of
from tests.factories import PASSWORD, make_chapter, make_member, member_by_email
from tests.helpers import csrf_token, once_a_statement_runs, scheduled_jobs, submit

ORGANISER = "olga@example.org"
SLUG = "lisbon-hosts-and-riders"
TITLE = "Ask the council for a courier rest stop"
DETAILS = "A covered place near Cais do Sodré where couriers can wait, charge and rest."
VOTE_LENGTH = timedelta(hours=1, minutes=5)  # just over the shortest vote allowed

NEW_PROPOSAL = "New proposal in"
CLOSING_SOON = "Closing soon:"
DECIDED = "Decided:"


# --- helpers ----------------------------------------------------------------------------


def chapter_with(
    app: Flask, count: int = 4, *, quorum: tuple[int, int] | None = None
) -> tuple[int, list[str]]:
    """A chapter founded by Olga and joined by ``count - 1`` others (active from three).

    Returns the chapter's id and every member's address, Olga's first. ``quorum`` is
    (percent, minimum), set directly on the chapter.
    """
    with app.app_context():
        founder = make_member(ORGANISER, "Olga Organiser")
        others = [make_member(f"m{n}@example.org", f"Member {n}") for n in range(1, count)]
        chapter = make_chapter(founder, *others)
        assert chapter.slug == SLUG
        if quorum is not None:
            chapter.quorum_percent, chapter.quorum_minimum = quorum
            db.session.commit()
        return chapter.id, [ORGANISER, *(m.email for m in others)]


def add_members(app: Flask, chapter_id: int, emails: list[str]) -> None:
    with app.app_context():
        chapter = db.session.get(Chapter, chapter_id)
        for email in emails:
            services.join(chapter, make_member(email, email.split("@")[0].capitalize()))


def open_proposal(
    app: Flask, chapter_id: int, author: str = ORGANISER, closes_in: timedelta = VOTE_LENGTH
) -> int:
    """A proposal opened through the service; returns its id."""
    with app.app_context():
        chapter = db.session.get(Chapter, chapter_id)
        proposal = services.open_proposal(
            chapter,
            member_by_email(author),
            title=TITLE,
            details=DETAILS,
            closes_at=utcnow() + closes_in,
        )
        return proposal.id


def cast(app: Flask, proposal_id: int, *votes: tuple[str, Choice]) -> None:
    """Record (email, choice) votes through the service."""
    with app.app_context():
        proposal = db.session.get(Proposal, proposal_id)
        for email, choice in votes:
            services.cast_vote(proposal, member_by_email(email), choice, None)


def make_due(app: Flask, proposal_id: int) -> None:
    """Move the closing time into the past, as if the vote had run its course."""
    with app.app_context():
        db.session.execute(
            update(Proposal)
            .where(Proposal.id == proposal_id)
            .values(closes_at=utcnow() - timedelta(minutes=1))
        )
        db.session.commit()


def close_through_job(app: Flask, run_jobs, proposal_id: int) -> None:
    """Let the scheduled closing job fall due and run it, with the mail it sends."""
    make_due(app, proposal_id)
    assert release_scheduled(app, [f"proposal-{proposal_id}-close"]) == 1
    run_jobs()


def release_scheduled(app: Flask, job_ids: list[str]) -> int:
    """Put scheduled jobs on their queues now, as RQ's scheduler does when they fall due.

    Goes through the registry's own ``requeue``, which takes a job id and keeps the app's
    job class (``tests.helpers.release_scheduled`` hands ``registry.remove`` a plain
    ``Job`` under RQ 3, which Redis refuses).
    """
    released = 0
    with app.app_context():
        for queue in all_queues():
            registry = queue.scheduled_job_registry
            for job_id in registry.get_job_ids():
                if job_id in job_ids:
                    registry.requeue(job_id)
                    released += 1
    return released


def proposal_row(app: Flask, proposal_id: int) -> Proposal:
    with app.app_context():
        proposal = db.session.get(Proposal, proposal_id)
        db.session.expunge(proposal)
        return proposal


def count(app: Flask, model, *where) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


def sent(outbox, subject_start: str) -> list[str]:
    """Addresses of the mail whose subject starts with ``subject_start``, sorted."""
    return sorted(m["To"] for m in outbox.messages() if m["Subject"].startswith(subject_start))


def log_in(app: Flask, email: str):
    """A fresh test client logged in as ``email`` through the login page."""
    client = app.test_client()
    response = submit(client, "/login", {"email": email, "password": PASSWORD})
    assert response.status_code == 302, response.status_code
    return client


def post(client, url: str, data: dict | None = None):
    """POST with the session's CSRF token, taken from the login page."""
    token = csrf_token(client.get("/login").text)
    return client.post(url, data={"csrf_token": token, **(data or {})})


def vote_on_page(client, proposal_id: int, choice: str, reason: str = ""):
    url = f"/proposals/{proposal_id}"
    return submit(client, url, {"choice": choice, "reason": reason}, f"{url}/vote")


def text_of(response) -> str:
    """A page's text, tags stripped and whitespace collapsed."""
    without_tags = re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))
    text = " ".join(html.unescape(without_tags).split())
    return re.sub(r" ([.,:;!?])", r"\1", text)


def shown_tally(response) -> dict[str, int]:
    """The results table of a proposal page."""
    rows = re.findall(r'<th scope="row">(\w+)</th><td>(\d+)</td>', response.get_data(as_text=True))
    return {label.lower(): int(number) for label, number in rows}


def field_error(response, field_id: str) -> str:
    page = response.get_data(as_text=True)
    assert f'id="{field_id}-error"' in page, f"no error beside {field_id}"
    return html.unescape(page.split(f'id="{field_id}-error">', 1)[1].split("</p>", 1)[0])


def closes_input(response) -> str:
    """The closing time's input element."""
    page = response.get_data(as_text=True)
    return re.search(r'<input[^>]*id="closes"[^>]*>', page).group(0)


def local_input(moment_from_now: timedelta, zone: str = "Europe/Lisbon") -> str:
    """A closing time as a person in ``zone`` types it into the form."""
    return (utcnow() + moment_from_now).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M")


def proposal_form(**overrides) -> dict:
    return {
        "title": TITLE,
        "details": DETAILS,
        "closes": local_input(timedelta(days=3)),
        **overrides,
    }


# --- outcomes through the scheduled closing job -------------------------------------------


OUTCOME_CASES = {
    "passed": (
        [Choice.AGREE, Choice.AGREE, Choice.DISAGREE],
        Outcome.PASSED,
    ),
    "rejected-on-a-tie": (
        [Choice.AGREE, Choice.DISAGREE, Choice.ABSTAIN],
        Outcome.REJECTED,
    ),
    "rejected-by-more-disagree": (
        [Choice.AGREE, Choice.DISAGREE, Choice.DISAGREE],
        Outcome.REJECTED,
    ),
    "blocked-despite-an-agree-majority": (
        [Choice.AGREE, Choice.AGREE, Choice.AGREE, Choice.BLOCK],
        Outcome.BLOCKED,
    ),
    "no-quorum": (
        [Choice.AGREE, Choice.AGREE],
        Outcome.NO_QUORUM,
    ),
}


@pytest.mark.parametrize("case", OUTCOME_CASES, ids=list(OUTCOME_CASES))
def test_the_scheduled_closing_job_records_each_outcome_once(app, outbox, run_jobs, case):
    """The close job records the outcome with the quorum, mails it once, and is safe to rerun."""
    choices, expected = OUTCOME_CASES[case]
    chapter_id, members = chapter_with(app, 4)  # quorum: max(3, ceil(4 * 20%)) = 3
    before = utcnow()
    proposal_id = open_proposal(app, chapter_id)

    due = scheduled_jobs(app)
    proposal = proposal_row(app, proposal_id)
    assert before + VOTE_LENGTH <= proposal.closes_at <= utcnow() + VOTE_LENGTH
    close_job, soon_job = f"proposal-{proposal_id}-close", f"proposal-{proposal_id}-closing-soon"
    assert abs(due[close_job] - proposal.closes_at) < timedelta(seconds=1)
    expected_soon = services.closing_soon_at(proposal.created_at, proposal.closes_at)
    assert abs(due[soon_job] - expected_soon) < timedelta(seconds=2)
    assert proposal.created_at < due[soon_job] < due[close_job]

    cast(app, proposal_id, *zip(members, choices, strict=False))
    close_through_job(app, run_jobs, proposal_id)

    closed = proposal_row(app, proposal_id)
    assert closed.state == ProposalState.CLOSED
    assert closed.outcome == expected
    assert closed.votes_needed == 3
    assert closed.members_at_close == 4
    assert closed.closed_at is not None
    assert sent(outbox, DECIDED) == sorted(members)
    body = outbox.last_to(ORGANISER).get_body(("plain",)).get_content()
    assert f"Outcome: {expected.value.replace('-', ' ')}." in body
    assert "(3 votes were needed for a quorum)" in body

    # Again: the job run twice, and the closing-soon job falling due after the close.
    with app.app_context():
        assert chapter_jobs.close_proposal(proposal_id) is None
    assert release_scheduled(app, [soon_job]) == 1
    run_jobs()
    again = proposal_row(app, proposal_id)
    assert (again.outcome, again.closed_at, again.votes_needed) == (
        closed.outcome,
        closed.closed_at,
        closed.votes_needed,
    )
    assert sent(outbox, DECIDED) == sorted(members)
    assert sent(outbox, CLOSING_SOON) == []
    assert count(app, Notification, Notification.kind == "proposal_outcome") == 1


def test_a_long_vote_is_reminded_a_day_before_it_closes(app):
    """For a ten-day vote the closing-soon job is due 24 hours before the close job."""
    chapter_id, _ = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id, closes_in=timedelta(days=10))
    due = scheduled_jobs(app)
    close_at = due[f"proposal-{proposal_id}-close"]
    assert abs(close_at - proposal_row(app, proposal_id).closes_at) < timedelta(seconds=1)
    gap = close_at - due[f"proposal-{proposal_id}-closing-soon"]
    assert timedelta(hours=24) - timedelta(seconds=1) <= gap <= timedelta(hours=24, seconds=1)


def test_the_closing_job_leaves_a_proposal_open_until_its_time(app, outbox, run_jobs):
    """A close job that runs early (say a clock is off) closes nothing and tells no one."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    cast(app, proposal_id, *((email, Choice.AGREE) for email in members))
    assert release_scheduled(app, [f"proposal-{proposal_id}-close"]) == 1
    run_jobs()
    assert proposal_row(app, proposal_id).state == ProposalState.OPEN
    assert sent(outbox, DECIDED) == []


@pytest.mark.parametrize(
    ("members", "percent", "minimum", "needed"),
    [
        (4, 20, 3, 3),  # the minimum wins in a small chapter
        (20, 20, 3, 4),
        (21, 20, 3, 5),  # a share of a person rounds up
        (20, 50, 2, 10),
        (20, 0, 1, 1),
        (10, 100, 3, 10),
        (0, 20, 3, 3),
    ],
)
def test_votes_needed_is_the_larger_of_the_share_and_the_minimum(members, percent, minimum, needed):
    """The quorum is max(minimum, ceil(members * percent / 100))."""
    chapter = Chapter(quorum_percent=percent, quorum_minimum=minimum)
    assert Proposal(**chapter.quorum_rules()).quorum_for(members) == needed


def test_a_twenty_member_chapter_needs_four_votes_at_twenty_percent(app, outbox, run_jobs):
    """Three votes of twenty members is no quorum; four is enough."""
    chapter_id, members = chapter_with(app, 20)
    short = open_proposal(app, chapter_id)
    enough = open_proposal(app, chapter_id)
    cast(app, short, *((email, Choice.AGREE) for email in members[:3]))
    cast(app, enough, *((email, Choice.AGREE) for email in members[:4]))

    page = app.test_client().get(f"/proposals/{short}")
    assert "It needs 4 votes to reach quorum." in text_of(page)

    close_through_job(app, run_jobs, short)
    close_through_job(app, run_jobs, enough)
    for proposal_id, outcome in ((short, Outcome.NO_QUORUM), (enough, Outcome.PASSED)):
        proposal = proposal_row(app, proposal_id)
        assert (proposal.outcome, proposal.votes_needed, proposal.members_at_close) == (
            outcome,
            4,
            20,
        )
    assert len(sent(outbox, DECIDED)) == 40  # each of two outcomes to each member, once


def test_quorum_settings_saved_by_an_organiser_decide_the_outcome(app, outbox, run_jobs):
    """An organiser's quorum (50%, at least 2) applies: 5 of 10 pass, 4 of 10 do not."""
    chapter_id, members = chapter_with(app, 10)
    organiser = log_in(app, ORGANISER)
    response = post(
        organiser,
        f"/chapters/{SLUG}/settings",
        {
            "description": "Hosts, drivers and couriers in Lisbon who want fair, local rules.",
            "time_zone": "Europe/Lisbon",
            "quorum_percent": "50",
            "quorum_minimum": "2",
        },
    )
    assert response.status_code == 302, response.status_code
    with app.app_context():
        chapter = db.session.get(Chapter, chapter_id)
        assert (chapter.quorum_percent, chapter.quorum_minimum) == (50, 2)

    half = open_proposal(app, chapter_id)
    fewer = open_proposal(app, chapter_id)
    cast(app, half, *((email, Choice.AGREE) for email in members[:5]))
    cast(app, fewer, *((email, Choice.AGREE) for email in members[:4]))
    close_through_job(app, run_jobs, half)
    close_through_job(app, run_jobs, fewer)
    assert proposal_row(app, half).outcome == Outcome.PASSED
    assert proposal_row(app, fewer).outcome == Outcome.NO_QUORUM
    assert proposal_row(app, fewer).votes_needed == 5


def test_a_vote_keeps_the_quorum_it_opened_with(app, run_jobs):
    """An organiser raises the quorum while a vote is open: that vote is decided by the
    rules it opened with, and the next one by the new rules."""
    chapter_id, members = chapter_with(app, 4)  # at least 3 votes
    under_way = open_proposal(app, chapter_id)
    cast(app, under_way, *((email, Choice.AGREE) for email in members[:3]))
    response = post(
        log_in(app, ORGANISER),
        f"/chapters/{SLUG}/settings",
        {
            "description": "Hosts, drivers and couriers in Lisbon who want fair, local rules.",
            "time_zone": "Europe/Lisbon",
            "quorum_percent": "100",
            "quorum_minimum": "4",
        },
    )
    assert response.status_code == 302, response.status_code
    page = app.test_client().get(f"/proposals/{under_way}")
    assert "It needs 3 votes to reach quorum." in text_of(page)
    later = open_proposal(app, chapter_id)
    cast(app, later, *((email, Choice.AGREE) for email in members[:3]))
    close_through_job(app, run_jobs, under_way)
    close_through_job(app, run_jobs, later)
    assert (proposal_row(app, under_way).outcome, proposal_row(app, under_way).votes_needed) == (
        Outcome.PASSED,
        3,
    )
    assert (proposal_row(app, later).outcome, proposal_row(app, later).votes_needed) == (
        Outcome.NO_QUORUM,
        4,
    )


def test_a_low_quorum_minimum_lets_a_single_vote_decide(app, run_jobs):
    """With 0% and a minimum of one, one agree vote passes a proposal."""
    chapter_id, members = chapter_with(app, 5, quorum=(0, 1))
    proposal_id = open_proposal(app, chapter_id)
    cast(app, proposal_id, (members[1], Choice.AGREE))
    close_through_job(app, run_jobs, proposal_id)
    proposal = proposal_row(app, proposal_id)
    assert (proposal.outcome, proposal.votes_needed) == (Outcome.PASSED, 1)


def test_members_who_join_while_the_vote_is_open_count_toward_the_quorum(app, run_jobs):
    """The quorum is counted from the members at closing time, not at opening."""
    chapter_id, members = chapter_with(app, 4, quorum=(50, 1))
    proposal_id = open_proposal(app, chapter_id)
    cast(app, proposal_id, (members[0], Choice.AGREE), (members[1], Choice.AGREE))
    client = app.test_client()
    assert "It needs 2 votes to reach quorum." in text_of(client.get(f"/proposals/{proposal_id}"))

    add_members(app, chapter_id, [f"late{n}@example.org" for n in range(4)])
    assert "It needs 4 votes to reach quorum." in text_of(client.get(f"/proposals/{proposal_id}"))

    close_through_job(app, run_jobs, proposal_id)
    proposal = proposal_row(app, proposal_id)
    assert (proposal.outcome, proposal.members_at_close, proposal.votes_needed) == (
        Outcome.NO_QUORUM,
        8,
        4,
    )


# --- only members decide -----------------------------------------------------------------


def leave(app: Flask, chapter_id: int, email: str) -> None:
    with app.app_context():
        services.leave(db.session.get(Chapter, chapter_id), member_by_email(email))


def two_agree_and_one_blocks(app: Flask) -> tuple[int, list[str], int]:
    chapter_id, members = chapter_with(app, 3, quorum=(20, 2))
    proposal_id = open_proposal(app, chapter_id)
    votes = zip(members, (Choice.AGREE, Choice.AGREE, Choice.BLOCK), strict=True)
    cast(app, proposal_id, *votes)
    return chapter_id, members, proposal_id


def test_a_block_by_someone_who_left_before_the_close_does_not_count(app, run_jobs):
    """Two agree and one blocks, then the blocker leaves: the proposal passes on the two
    votes of those still members, and the block is no longer shown."""
    chapter_id, members, proposal_id = two_agree_and_one_blocks(app)
    leave(app, chapter_id, members[2])
    page = app.test_client().get(f"/proposals/{proposal_id}")
    assert shown_tally(page) == {"agree": 2, "abstain": 0, "disagree": 0, "block": 0}

    close_through_job(app, run_jobs, proposal_id)
    proposal = proposal_row(app, proposal_id)
    assert (proposal.outcome, proposal.members_at_close) == (Outcome.PASSED, 2)
    assert count(app, Vote, Vote.proposal_id == proposal_id) == 2


def test_leaving_after_the_close_keeps_the_recorded_result_and_its_votes(app, run_jobs):
    """A decided proposal stays as it was decided when a voter leaves afterwards."""
    chapter_id, members = chapter_with(app, 3, quorum=(20, 2))
    proposal_id = open_proposal(app, chapter_id)
    cast(app, proposal_id, (members[1], Choice.AGREE), (members[2], Choice.BLOCK))
    close_through_job(app, run_jobs, proposal_id)
    leave(app, chapter_id, members[2])
    assert proposal_row(app, proposal_id).outcome == Outcome.BLOCKED
    page = app.test_client().get(f"/proposals/{proposal_id}")
    assert shown_tally(page) == {"agree": 1, "abstain": 0, "disagree": 0, "block": 1}


def test_a_deleted_accounts_vote_on_an_open_proposal_does_not_count(app, run_jobs):
    """Deleting an account withdraws its votes on open proposals; the rest decide."""
    _, members, proposal_id = two_agree_and_one_blocks(app)
    with app.app_context():
        delete_account(member_by_email(members[2]))
    close_through_job(app, run_jobs, proposal_id)
    proposal = proposal_row(app, proposal_id)
    assert (proposal.outcome, proposal.members_at_close) == (Outcome.PASSED, 2)


def test_a_vote_left_by_someone_no_longer_a_member_is_ignored_at_the_close(app, run_jobs):
    """Should a vote outlive its voter's membership (a vote and a leave at the same
    moment), the close counts only members' votes and keeps only those."""
    chapter_id, members = chapter_with(app, 3, quorum=(20, 2))
    proposal_id = open_proposal(app, chapter_id)
    cast(app, proposal_id, (members[0], Choice.AGREE), (members[1], Choice.AGREE))
    with app.app_context():
        former = make_member("former@example.org", "Former Member")
        db.session.add(Vote(proposal_id=proposal_id, member_id=former.id, choice=Choice.BLOCK))
        db.session.commit()
    close_through_job(app, run_jobs, proposal_id)
    assert proposal_row(app, proposal_id).outcome == Outcome.PASSED
    assert count(app, Vote, Vote.proposal_id == proposal_id) == 2


# --- one vote per member ---------------------------------------------------------------


def test_voting_again_changes_the_members_one_vote(app):
    """A second vote replaces the first: one row, the latest choice and reason, one counted."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    client = log_in(app, members[1])

    first = vote_on_page(client, proposal_id, "agree", "Couriers need somewhere dry")
    assert first.status_code == 302
    assert first.headers["Location"].endswith(f"/proposals/{proposal_id}")
    second = vote_on_page(client, proposal_id, "disagree", "The council will say no")
    assert second.status_code == 302

    with app.app_context():
        votes = db.session.scalars(select(Vote).where(Vote.proposal_id == proposal_id)).all()
        assert [(v.choice, v.reason) for v in votes] == [
            (Choice.DISAGREE, "The council will say no")
        ]
        assert services.tally(db.session.get(Proposal, proposal_id)) == {
            "agree": 0,
            "abstain": 0,
            "disagree": 1,
            "block": 0,
        }
    page = client.get(f"/proposals/{proposal_id}")
    assert "Your vote is recorded. You can change it until voting closes." in text_of(page)
    assert "You voted Disagree." in text_of(page)
    assert shown_tally(page) == {"agree": 0, "abstain": 0, "disagree": 1, "block": 0}
    assert "Couriers need somewhere dry" not in text_of(page)


def test_an_empty_reason_clears_the_previous_one(app):
    """Changing a vote without a reason leaves no stale reason behind."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    client = log_in(app, members[2])
    vote_on_page(client, proposal_id, "block", "It takes space from the market")
    vote_on_page(client, proposal_id, "abstain", "")
    with app.app_context():
        vote = db.session.scalar(select(Vote).where(Vote.proposal_id == proposal_id))
        assert (vote.choice, vote.reason) == (Choice.ABSTAIN, None)


def closed_with_three_votes(app: Flask, run_jobs) -> tuple[int, list[str], dict]:
    """A proposal three members voted on through the page, then closed by its job."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    voters = {email: log_in(app, email) for email in members}
    vote_on_page(voters[members[0]], proposal_id, "agree", "We asked for this last year")
    vote_on_page(voters[members[1]], proposal_id, "agree")
    vote_on_page(voters[members[2]], proposal_id, "disagree", "Too close to the tram stop")
    close_through_job(app, run_jobs, proposal_id)
    return proposal_id, members, voters


def test_a_vote_on_a_closed_proposal_is_refused_with_a_message(app, run_jobs):
    """After closing, a member's vote gets 409, the vote stays as it was, and the page says why."""
    proposal_id, members, voters = closed_with_three_votes(app, run_jobs)
    refused = vote_on_page(voters[members[2]], proposal_id, "agree", "Changed my mind")
    assert refused.status_code == 409
    with app.app_context():
        vote = db.session.scalar(
            select(Vote).where(Vote.member_id == member_by_email(members[2]).id)
        )
        assert (vote.choice, vote.reason) == (Choice.DISAGREE, "Too close to the tram stop")
    assert "Voting on this proposal has closed." in text_of(refused)


def test_a_closed_proposal_still_shows_its_votes_and_reasons_to_members(app, run_jobs):
    """The closed page shows everyone the outcome, the quorum and the count, and the
    chapter's members every vote with its reason."""
    proposal_id, members, voters = closed_with_three_votes(app, run_jobs)
    with app.app_context():
        make_member("rui@example.org", "Rui Outsider")
    outsiders = (app.test_client(), log_in(app, "rui@example.org"))
    for viewer in (voters[members[1]], *outsiders):
        page = viewer.get(f"/proposals/{proposal_id}")
        shown = text_of(page)
        assert "Outcome: Passed" in shown
        assert "with 3 votes of 3 needed (3 members)" in shown
        assert shown_tally(page) == {"agree": 2, "abstain": 0, "disagree": 1, "block": 0}
        assert "Cast my vote" not in shown
        names_and_reasons = [
            "Olga Organiser: Agree. “We asked for this last year”",
            "Member 1: Agree",
            "Member 2: Disagree. “Too close to the tram stop”",
        ]
        if viewer in outsiders:
            assert not any(line in shown for line in names_and_reasons)
            assert "Too close" not in page.text
            assert "Only members of" in shown
        else:
            assert all(line in shown for line in names_and_reasons)


def test_a_vote_after_the_closing_time_is_refused_before_the_job_runs(app):
    """Once closes_at has passed, a vote is refused even if the proposal is not closed yet."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    client = log_in(app, members[1])
    make_due(app, proposal_id)
    refused = vote_on_page(client, proposal_id, "agree")
    assert refused.status_code == 409
    assert "Voting on this proposal has closed." in text_of(refused)
    assert count(app, Vote) == 0


def test_a_vote_without_a_choice_on_a_proposal_closed_meanwhile_says_voting_closed(app, run_jobs):
    """The page no longer holds the vote form, so it says why the vote was not recorded."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    client = log_in(app, members[1])
    form = client.get(f"/proposals/{proposal_id}").text  # as the voter saw it, open
    close_through_job(app, run_jobs, proposal_id)
    refused = client.post(f"/proposals/{proposal_id}/vote", data={"csrf_token": csrf_token(form)})
    assert refused.status_code == 422
    page = refused.get_data(as_text=True)
    summary = page.split('class="error-summary"', 1)[1].split("</div>", 1)[0]
    assert "Your vote was not recorded" in summary
    assert "Voting on this proposal has closed." in summary
    assert count(app, Vote) == 0


def test_a_proposal_closed_after_the_sweep_listed_it_is_not_closed_again(app, outbox, run_jobs):
    """The sweep has read a due proposal when its scheduled job closes it: the sweep reads
    it again under its lock and leaves the recorded result alone."""
    chapter_id, members = chapter_with(app, 4)
    proposal_id = open_proposal(app, chapter_id)
    cast(app, proposal_id, *((email, Choice.AGREE) for email in members[:3]))
    make_due(app, proposal_id)
    with app.app_context():
        listed = db.session.get(Proposal, proposal_id)  # as the sweep's list reads it
        assert listed.is_open
        with app.app_context():  # the scheduled job, in a session of its own
            assert services.close_proposal(proposal_id) == Outcome.PASSED
        assert services.close_proposal(proposal_id) is None
    closed = proposal_row(app, proposal_id)
    assert (closed.outcome, closed.members_at_close) == (Outcome.PASSED, 4)
    assert count(app, Notification, Notification.kind == "proposal_outcome") == 1


def test_a_vote_that_meets_the_members_other_vote_is_checked_again_before_it_is_saved(app):
    """Ana's vote from another tab is saved, and the vote closes, while this one is being
    saved: this one is refused, and the vote recorded before the close stays as it was."""
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            pytest.skip("the proposal's row lock keeps the other vote waiting for this one")
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    with app.app_context():
        ana_id = member_by_email(members[1]).id

    def voted_and_closed_elsewhere() -> None:
        with app.app_context(), db.engine.begin() as connection:
            connection.execute(
                insert(Vote).values(proposal_id=proposal_id, member_id=ana_id, choice="agree")
            )
            connection.execute(
                update(Proposal)
                .where(Proposal.id == proposal_id)
                .values(state=ProposalState.CLOSED, outcome=Outcome.NO_QUORUM, closed_at=utcnow())
            )

    with app.app_context():
        proposal = db.session.get(Proposal, proposal_id)
        ana = member_by_email(members[1])
        other_tab = once_a_statement_runs(
            "^INSERT INTO proposal_votes", "before", voted_and_closed_elsewhere
        )
        with other_tab, pytest.raises(services.ChapterError, match="has closed"):
            services.cast_vote(proposal, ana, Choice.BLOCK, "Not like this")
    with app.app_context():
        votes = db.session.execute(select(Vote.member_id, Vote.choice, Vote.reason)).all()
        assert votes == [(ana_id, Choice.AGREE, None)]


def test_migrating_down_and_up_keeps_every_vote_and_answer(app, run_jobs):
    """On SQLite a migration may copy a table; the rows pointing at it stay."""
    chapter_id, members = chapter_with(app, 4)
    proposal_id = open_proposal(app, chapter_id)
    cast(app, proposal_id, *((email, Choice.AGREE) for email in members))
    with app.app_context():
        chapter = db.session.get(Chapter, chapter_id)
        starts = utcnow() + timedelta(days=3)
        details = services.MeetupDetails(
            title="Planning night",
            description="We plan the next month.",
            starts_at=starts,
            ends_at=starts + timedelta(hours=2),
            venue="Café Lua",
            address=None,
            online_link=None,
            capacity=None,
        )
        meetup = services.schedule_meetup(chapter, member_by_email(ORGANISER), details)
        for email in members[1:]:
            services.respond(meetup, member_by_email(email), True)

        def rows() -> tuple[int, int]:
            votes = db.session.scalar(select(func.count()).select_from(Vote))
            answers = db.session.execute(text("SELECT COUNT(*) FROM meetup_rsvps")).scalar()
            db.session.remove()
            return votes, answers

        assert rows() == (4, 3)
        downgrade(revision="0016_campaign_owner_hand_over")
        assert rows() == (4, 3)
        upgrade()
        assert rows() == (4, 3)
        db.engine.dispose()


# --- who may do what ---------------------------------------------------------------------


def test_a_non_member_can_neither_vote_nor_open_a_proposal(app):
    """Someone outside the chapter gets 403 on voting and on the proposal form."""
    chapter_id, _ = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    with app.app_context():
        make_member("rui@example.org", "Rui Outsider")
    outsider = log_in(app, "rui@example.org")

    assert post(outsider, f"/proposals/{proposal_id}/vote", {"choice": "agree"}).status_code == 403
    assert outsider.get(f"/chapters/{SLUG}/proposals/new").status_code == 403
    assert post(outsider, f"/chapters/{SLUG}/proposals/new", proposal_form()).status_code == 403
    assert count(app, Vote) == 0
    assert count(app, Proposal) == 1


def test_a_guest_is_sent_to_log_in(app):
    """Voting and opening a proposal need an account: guests are redirected to log in."""
    chapter_id, _ = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    guest = app.test_client()
    for response in (
        guest.post(f"/proposals/{proposal_id}/vote", data={"choice": "agree"}),
        guest.get(f"/chapters/{SLUG}/proposals/new"),
        guest.post(f"/chapters/{SLUG}/proposals/new", data=proposal_form()),
    ):
        assert response.status_code == 302
        assert "/login?next=" in response.headers["Location"]
    page = guest.get(f"/proposals/{proposal_id}")
    assert page.status_code == 200
    assert "Log in to vote if you are a member of Lisbon Hosts and Riders." in text_of(page)
    assert "Cast my vote" not in text_of(page)
    assert count(app, Vote) == 0


def test_a_member_of_a_forming_chapter_cannot_open_a_proposal(app, outbox, run_jobs):
    """A forming chapter takes no proposals: the form says why and nothing is saved."""
    with app.app_context():
        founder = make_member(ORGANISER, "Olga Organiser")
        make_chapter(founder, make_member("m1@example.org", "Member 1"))
    client = log_in(app, "m1@example.org")
    chapter_page = text_of(client.get(f"/chapters/{SLUG}"))
    assert "This chapter is forming" in chapter_page
    assert "Open a proposal" not in chapter_page

    response = post(client, f"/chapters/{SLUG}/proposals/new", proposal_form())
    assert 400 <= response.status_code < 500
    assert "Proposals open once the chapter is active." in text_of(response)
    assert count(app, Proposal) == 0
    assert scheduled_jobs(app) == {}
    run_jobs()
    assert sent(outbox, NEW_PROPOSAL) == []


def test_only_members_see_the_vote_form(app):
    """Members get the vote form; an outsider and a guest see the results only."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    with app.app_context():
        make_member("rui@example.org", "Rui Outsider")
    url = f"/proposals/{proposal_id}"

    member_page = log_in(app, members[1]).get(url)
    assert "Cast my vote" in text_of(member_page)
    assert 'name="choice"' in member_page.get_data(as_text=True)
    for viewer in (log_in(app, "rui@example.org"), app.test_client()):
        page = viewer.get(url)
        assert page.status_code == 200
        assert "Cast my vote" not in text_of(page)
        assert 'name="choice"' not in page.get_data(as_text=True)
        assert "Results so far" in text_of(page)


def test_a_member_opens_a_proposal_through_the_form(app, outbox, run_jobs):
    """The form's closing time is read in the chapter's zone and the jobs are scheduled."""
    chapter_id, members = chapter_with(app, 3)
    client = log_in(app, members[1])
    assert "Open a proposal" in text_of(client.get(f"/chapters/{SLUG}"))
    closes = local_input(timedelta(days=2))
    response = submit(client, f"/chapters/{SLUG}/proposals/new", proposal_form(closes=closes))
    assert response.status_code == 302
    with app.app_context():
        proposal = db.session.scalar(select(Proposal))
        assert proposal.author.email == members[1]
        assert proposal.chapter_id == chapter_id
        local = proposal.closes_at.astimezone(ZoneInfo("Europe/Lisbon"))
        assert local.strftime("%Y-%m-%dT%H:%M") == closes
        proposal_id = proposal.id
    assert response.headers["Location"].endswith(f"/proposals/{proposal_id}")
    assert {f"proposal-{proposal_id}-close", f"proposal-{proposal_id}-closing-soon"} <= set(
        scheduled_jobs(app)
    )
    page = client.get(f"/proposals/{proposal_id}")
    assert "Your proposal is open and the chapter's members have been told." in text_of(page)
    assert TITLE in text_of(client.get(f"/chapters/{SLUG}"))


def test_a_proposal_form_sent_twice_opens_one_proposal_told_once(app, outbox, run_jobs):
    """A double submit of the new-proposal form gives the same proposal, announced once."""
    _, members = chapter_with(app, 3)
    client = log_in(app, ORGANISER)
    url = f"/chapters/{SLUG}/proposals/new"
    form = {"csrf_token": csrf_token(client.get(url).text), **proposal_form()}
    first, second = client.post(url, data=form), client.post(url, data=form)
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == second.headers["Location"]
    assert count(app, Proposal) == 1
    run_jobs()
    assert sent(outbox, NEW_PROPOSAL) == sorted(members)  # each once


# --- bad input ---------------------------------------------------------------------------


PROPOSAL_FORM_ERRORS = {
    "missing-title": ({"title": ""}, "title", "Please fill in proposal."),
    "short-title": ({"title": "Yes"}, "title", "Proposal must be 5 to 150 characters long."),
    "short-details": (
        {"details": "Please"},
        "details",
        "Details must be 10 to 5000 characters long.",
    ),
    "missing-closing-time": ({"closes": ""}, "closes", "Please give the closing date and time."),
    "malformed-closing-time": (
        {"closes": "next tuesday"},
        "closes",
        "Please give a date and time, like 2026-05-14 18:30.",
    ),
    "closing-at-the-calendars-end": (
        {"closes": "9999-12-31T23:59"},
        "closes",
        "Please give a date between the years 1900 and 9000.",
    ),
}

PROPOSAL_TIME_ERRORS = {
    "in-the-past": (-timedelta(hours=2), "Give members at least an hour to vote."),
    "under-an-hour": (timedelta(minutes=30), "Give members at least an hour to vote."),
    "over-ninety-days": (timedelta(days=91), "A vote can last at most 90 days."),
}


@pytest.mark.parametrize("case", PROPOSAL_FORM_ERRORS, ids=list(PROPOSAL_FORM_ERRORS))
def test_a_proposal_form_with_a_bad_field_is_refused_beside_the_field(app, case):
    """Each bad field comes back with its message beside it; nothing is saved."""
    overrides, field, message = PROPOSAL_FORM_ERRORS[case]
    _, members = chapter_with(app, 3)
    client = log_in(app, members[1])
    response = submit(client, f"/chapters/{SLUG}/proposals/new", proposal_form(**overrides))
    assert response.status_code == 422
    assert field_error(response, field) == message
    assert 'aria-invalid="true"' in response.get_data(as_text=True)
    assert count(app, Proposal) == 0
    assert count(app, Notification, Notification.kind == "proposal_new") == 0


@pytest.mark.parametrize("case", PROPOSAL_TIME_ERRORS, ids=list(PROPOSAL_TIME_ERRORS))
def test_a_closing_time_outside_the_allowed_range_is_refused(app, case):
    """A vote must last from an hour to 90 days; the form says so beside the closing time
    and nothing is saved."""
    from_now, message = PROPOSAL_TIME_ERRORS[case]
    _, members = chapter_with(app, 3)
    client = log_in(app, members[1])
    response = submit(
        client, f"/chapters/{SLUG}/proposals/new", proposal_form(closes=local_input(from_now))
    )
    assert response.status_code == 422
    assert "Please check the form" in text_of(response)
    assert field_error(response, "closes") == message
    assert 'aria-invalid="true"' in closes_input(response)
    assert count(app, Proposal) == 0
    assert count(app, Notification, Notification.kind == "proposal_new") == 0
    assert scheduled_jobs(app) == {}


def next_spring_forward(zone: ZoneInfo) -> datetime:
    """A local wall-clock time that does not exist in ``zone``: inside the next spring gap."""
    moment = utcnow().replace(minute=30, second=0, microsecond=0)
    while True:
        moment += timedelta(hours=1)
        before, after = moment.astimezone(zone), (moment + timedelta(hours=1)).astimezone(zone)
        if after.utcoffset() > before.utcoffset():
            return (before + timedelta(hours=1)).replace(tzinfo=None)


def test_a_closing_time_the_clocks_skip_is_refused(app):
    """A local time skipped when the clocks go forward is refused with an explanation."""
    _, members = chapter_with(app, 3)
    client = log_in(app, members[1])
    skipped = next_spring_forward(ZoneInfo("Europe/Lisbon"))
    response = submit(
        client,
        f"/chapters/{SLUG}/proposals/new",
        proposal_form(closes=skipped.strftime("%Y-%m-%dT%H:%M")),
    )
    assert response.status_code == 422
    assert "does not exist in Europe/Lisbon: the clocks go forward then." in field_error(
        response, "closes"
    )
    assert 'aria-invalid="true"' in closes_input(response)
    assert count(app, Proposal) == 0


def test_the_service_refuses_a_vote_shorter_than_an_hour(app):
    """open_proposal itself refuses an under-an-hour closing time."""
    chapter_id, _ = chapter_with(app, 3)
    with app.app_context(), pytest.raises(services.ChapterError, match="at least an hour"):
        services.open_proposal(
            db.session.get(Chapter, chapter_id),
            member_by_email(ORGANISER),
            title=TITLE,
            details=DETAILS,
            closes_at=utcnow() + timedelta(minutes=59),
        )


def test_a_vote_closing_an_hour_from_now_to_the_minute_opens(app):
    """The form has no seconds: the minute an hour from now is long enough."""
    chapter_id, _ = chapter_with(app, 3)
    with app.app_context():
        an_hour_on = (utcnow() + timedelta(hours=1)).replace(second=0, microsecond=0)
        proposal = services.open_proposal(
            db.session.get(Chapter, chapter_id),
            member_by_email(ORGANISER),
            title=TITLE,
            details=DETAILS,
            closes_at=an_hour_on,
        )
        assert proposal.closes_at == an_hour_on


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ("maybe", "Not a valid choice."),
        ("", "Please choose agree, abstain, disagree or block."),
    ],
    ids=["junk-choice", "no-choice"],
)
def test_a_vote_without_a_valid_choice_is_refused(app, choice, message):
    """A junk or missing choice comes back as 422 with the message; no vote is saved."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    client = log_in(app, members[1])
    response = vote_on_page(client, proposal_id, choice, "A reason")
    assert response.status_code == 422
    assert field_error(response, "choice") == message
    assert count(app, Vote) == 0


def test_the_error_summary_links_to_the_first_choice_of_the_vote(app):
    """The summary's link for the choice leads to an element on the page: its first radio."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    response = vote_on_page(log_in(app, members[1]), proposal_id, "")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    summary = page.split('class="error-summary"', 1)[1].split("</div>", 1)[0]
    targets = re.findall(r'href="#([^"]+)"', summary)
    assert targets == ["choice-0"]
    assert 'id="choice-0"' in page
    # Each radio of the group says it is in error, and which message explains why.
    radios = re.findall(r'<input [^>]*type="radio"[^>]*>', page)
    assert len(radios) == 4
    assert all(
        'aria-invalid="true"' in r and 'aria-describedby="choice-error"' in r for r in radios
    )


def test_a_reason_over_a_thousand_characters_is_refused(app):
    """Reasons are bounded at 1000 characters."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    client = log_in(app, members[1])
    response = vote_on_page(client, proposal_id, "agree", "x" * 1001)
    assert response.status_code == 422
    assert field_error(response, "reason") == "Reason can be at most 1000 characters."
    assert count(app, Vote) == 0


# --- notifications ---------------------------------------------------------------------


def test_a_new_proposal_is_emailed_to_each_member_once(app, outbox, run_jobs):
    """Every member hears of a new proposal once, in the decisions category."""
    chapter_id, members = chapter_with(app, 4)
    proposal_id = open_proposal(app, chapter_id, author=members[2])
    run_jobs()
    with app.app_context():
        notification = db.session.scalar(
            select(Notification).where(Notification.kind == "proposal_new")
        )
        assert notification.category == Category.DECISIONS
        notification_jobs.fan_out(notification.id)  # a repeated fan-out
    run_jobs()
    assert sent(outbox, NEW_PROPOSAL) == sorted(members)
    message = outbox.last_to(members[0])
    assert message["Subject"] == f"New proposal in Lisbon Hosts and Riders: {TITLE}"
    body = message.get_body(("plain",)).get_content()
    assert DETAILS in body
    assert f"http://localhost/proposals/{proposal_id}" in body
    assert message["List-Unsubscribe"] is not None


def test_closing_soon_goes_only_to_members_who_have_not_voted(app, outbox, run_jobs):
    """The closing-soon job reminds the two who have not voted, not the two who have."""
    chapter_id, members = chapter_with(app, 4)
    proposal_id = open_proposal(app, chapter_id)
    cast(app, proposal_id, (members[0], Choice.AGREE), (members[2], Choice.DISAGREE))
    run_jobs()
    assert release_scheduled(app, [f"proposal-{proposal_id}-closing-soon"]) == 1
    run_jobs()
    assert sent(outbox, CLOSING_SOON) == sorted([members[1], members[3]])
    body = outbox.last_to(members[1]).get_body(("plain",)).get_content()
    assert "you have not voted yet" in body
    with app.app_context():
        audience = db.session.execute(services.non_voter_audience(proposal_id)).all()
        assert sorted(row.email for row in audience) == sorted([members[1], members[3]])


def test_a_member_who_votes_after_the_fan_out_gets_no_closing_soon_mail(app, outbox, run_jobs):
    """Someone who votes between the fan-out and the delivery is skipped at delivery."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    run_jobs()  # the chapter and the new proposal announced
    with app.app_context():
        assert services.send_closing_soon(proposal_id) is True
        assert make_worker(simple=True).work(burst=True, max_jobs=1)  # the fan-out only
        recorded = db.session.scalars(
            select(Delivery.email).join(Notification).where(Notification.kind == "proposal_closing")
        ).all()
        assert sorted(recorded) == sorted(members)
    cast(app, proposal_id, (members[1], Choice.ABSTAIN))
    run_jobs()
    assert sent(outbox, CLOSING_SOON) == sorted([members[0], members[2]])
    with app.app_context():
        skipped = db.session.scalar(
            select(Delivery)
            .join(Notification)
            .where(Notification.kind == "proposal_closing", Delivery.email == members[1])
        )
        assert (skipped.state, skipped.error) == (DeliveryState.SKIPPED, "no longer applies")


def test_closing_soon_sent_twice_reaches_each_member_once(app, outbox, run_jobs):
    """A second closing-soon call (job and sweep both firing) sends nothing more."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    with app.app_context():
        assert services.send_closing_soon(proposal_id) is True
        assert services.send_closing_soon(proposal_id) is False
    release_scheduled(app, [f"proposal-{proposal_id}-closing-soon"])
    run_jobs()
    assert sent(outbox, CLOSING_SOON) == sorted(members)


def test_no_closing_soon_mail_once_the_vote_is_over(app, outbox, run_jobs):
    """send_closing_soon does nothing for a proposal past its closing time."""
    chapter_id, _ = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    make_due(app, proposal_id)
    with app.app_context():
        assert services.send_closing_soon(proposal_id) is False
    run_jobs()
    assert sent(outbox, CLOSING_SOON) == []


def test_decision_preferences_off_and_daily_are_honoured(app, outbox, run_jobs):
    """Decisions off: no mail at all; daily: none at once, the open proposal in that day's
    digest, and after the member voted and the vote closed, only the outcome the next day."""
    chapter_id, members = chapter_with(app, 4)
    off, daily = members[1], members[2]
    with app.app_context():
        for email, frequency in ((off, Frequency.OFF), (daily, Frequency.DAILY)):
            member = member_by_email(email)
            set_preferences(subscriber_of(member.id, member.email), {Category.DECISIONS: frequency})
    proposal_id = open_proposal(app, chapter_id)
    run_jobs()
    with app.app_context():
        assert services.send_closing_soon(proposal_id) is True
    run_jobs()
    with app.app_context():
        states = dict(
            db.session.execute(
                select(Delivery.email, Delivery.state)
                .join(Notification)
                .where(Notification.kind == "proposal_new")
            ).all()
        )
        assert states[off] == DeliveryState.SKIPPED
        assert states[daily] == DeliveryState.DIGEST
        assert send_daily_digests() == 1
    run_jobs()
    first = outbox.last_to(daily)
    assert first["Subject"].startswith("Your Groundswell digest")
    first_body = first.get_body(("plain",)).get_content()
    assert f"New proposal in Lisbon Hosts and Riders: {TITLE}" in first_body
    assert CLOSING_SOON in first_body

    cast(app, proposal_id, *((email, Choice.AGREE) for email in members))
    close_through_job(app, run_jobs, proposal_id)
    everyone_else = sorted([members[0], members[3]])
    for subject in (NEW_PROPOSAL, CLOSING_SOON, DECIDED):
        assert sent(outbox, subject) == everyone_else, subject
    with app.app_context():
        assert send_daily_digests(today=utcnow().date() + timedelta(days=1)) == 1
    run_jobs()
    second = outbox.last_to(daily).get_body(("plain",)).get_content()
    assert f"- {TITLE}: " in second  # the outcome
    assert "New proposal" not in second and CLOSING_SOON not in second


def test_a_closing_soon_reminder_held_for_a_digest_is_left_out_once_the_vote_closed(
    app, outbox, run_jobs, monkeypatch
):
    """A daily-digest member's closing-soon reminder is not in the next morning's digest
    after the vote closed, nor is the news of the proposal opening: the outcome tells it."""
    chapter_id, members = chapter_with(app, 3)
    daily = members[2]
    with app.app_context():
        member = member_by_email(daily)
        set_preferences(subscriber_of(member.id, daily), {Category.DECISIONS: Frequency.DAILY})
    proposal_id = open_proposal(app, chapter_id)
    run_jobs()
    assert release_scheduled(app, [f"proposal-{proposal_id}-closing-soon"]) == 1
    run_jobs()
    close_through_job(app, run_jobs, proposal_id)
    assert sent(outbox, CLOSING_SOON) == sorted(members[:2])
    with app.app_context():
        held = db.session.scalars(
            select(Notification.kind)
            .join(Delivery)
            .where(Delivery.email == daily, Delivery.state == DeliveryState.DIGEST)
        ).all()
        assert sorted(held) == ["proposal_closing", "proposal_new", "proposal_outcome"]

    next_morning = (utcnow() + timedelta(days=1)).replace(hour=7, minute=0)
    monkeypatch.setattr(notification_services, "utcnow", lambda: next_morning)
    with app.app_context():
        assert send_daily_digests() == 1
    run_jobs()
    digest = outbox.last_to(daily).get_body(("plain",)).get_content()
    assert f"- {TITLE}: " in digest  # the outcome
    assert "New proposal" not in digest and CLOSING_SOON not in digest


@pytest.mark.parametrize("news", ["new proposal", "closing soon", "outcome"])
def test_decision_news_held_for_a_digest_is_left_out_once_the_reader_left(
    app, outbox, run_jobs, news
):
    """A daily-digest member leaves the chapter before the digest goes: the chapter's
    decisions are no longer theirs to vote on or hear of, so no digest goes."""
    chapter_id, members = chapter_with(app, 4)
    daily = members[2]
    with app.app_context():
        member = member_by_email(daily)
        set_preferences(subscriber_of(member.id, daily), {Category.DECISIONS: Frequency.DAILY})
    proposal_id = open_proposal(app, chapter_id, closes_in=timedelta(hours=30))
    run_jobs()
    if news == "closing soon":
        with app.app_context():
            assert services.send_closing_soon(proposal_id) is True
        run_jobs()
    elif news == "outcome":
        close_through_job(app, run_jobs, proposal_id)
    with app.app_context():
        held = select(Notification.kind).join(Delivery)
        held = held.where(Delivery.email == daily, Delivery.state == DeliveryState.DIGEST)
        assert db.session.scalars(held).all()
    outbox.clear()
    leave(app, chapter_id, daily)
    with app.app_context():
        assert send_daily_digests() == 0
    run_jobs()
    assert outbox.to(daily) == []


def test_the_sweep_closes_a_proposal_whose_job_was_lost(app, redis, outbox, run_jobs):
    """With Redis emptied, settle_due_proposals closes a due proposal and mails the outcome."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    cast(app, proposal_id, *((email, Choice.AGREE) for email in members))
    run_jobs()
    redis.flushdb()
    assert scheduled_jobs(app) == {}
    make_due(app, proposal_id)

    with app.app_context():
        assert chapter_jobs.settle_due_proposals() == 1
        assert chapter_jobs.settle_due_proposals() == 0
    run_jobs()
    proposal = proposal_row(app, proposal_id)
    assert (proposal.state, proposal.outcome, proposal.members_at_close) == (
        ProposalState.CLOSED,
        Outcome.PASSED,
        3,
    )
    assert sent(outbox, DECIDED) == sorted(members)


def test_the_sweep_sends_a_lost_closing_soon_reminder_once(app, redis, outbox, run_jobs):
    """A proposal near its close whose reminder job was lost is reminded by the sweep, once."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    cast(app, proposal_id, (members[0], Choice.AGREE))
    redis.flushdb()
    with app.app_context():
        db.session.execute(
            update(Proposal)
            .where(Proposal.id == proposal_id)
            .values(
                created_at=utcnow() - timedelta(days=2), closes_at=utcnow() + timedelta(hours=2)
            )
        )
        db.session.commit()
        assert chapter_jobs.settle_due_proposals() == 0  # nothing to close yet
        chapter_jobs.settle_due_proposals()
    run_jobs()
    assert sent(outbox, CLOSING_SOON) == sorted(members[1:])
    assert proposal_row(app, proposal_id).state == ProposalState.OPEN


# --- results while open ------------------------------------------------------------------


def test_results_are_shown_while_the_vote_is_open(app):
    """Anyone can follow the count while voting is open; the chapter page lists the vote."""
    chapter_id, members = chapter_with(app, 5)
    proposal_id = open_proposal(app, chapter_id)
    cast(
        app,
        proposal_id,
        (members[0], Choice.AGREE),
        (members[1], Choice.AGREE),
        (members[2], Choice.ABSTAIN),
        (members[3], Choice.BLOCK),
    )
    page = app.test_client().get(f"/proposals/{proposal_id}")
    assert "Results so far" in text_of(page)
    assert "It needs 3 votes to reach quorum." in text_of(page)
    assert shown_tally(page) == {"agree": 2, "abstain": 1, "disagree": 0, "block": 1}
    chapter_page = text_of(app.test_client().get(f"/chapters/{SLUG}"))
    open_part = chapter_page.split("Open for votes", 1)[1].split("Decided", 1)[0]
    assert TITLE in open_part


def test_a_decided_proposal_moves_to_the_decided_list(app, run_jobs):
    """After closing, the chapter page lists the proposal with its outcome."""
    chapter_id, members = chapter_with(app, 3)
    proposal_id = open_proposal(app, chapter_id)
    cast(app, proposal_id, *((email, Choice.AGREE) for email in members))
    close_through_job(app, run_jobs, proposal_id)
    chapter_page = text_of(app.test_client().get(f"/chapters/{SLUG}"))
    open_part, decided_part = chapter_page.split("Open for votes", 1)[1].split("Decided", 1)
    assert "No open proposals." in open_part
    assert f"{TITLE}: Passed" in decided_part
