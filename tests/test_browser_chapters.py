"""Joining a chapter and answering a meetup through the real pages, in headless Chromium."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from chapters import services
from chapters.models import Rsvp, RsvpStatus
from core.db import utcnow
from core.extensions import db
from tests.factories import PASSWORD, make_chapter, make_meetup, make_member

pytestmark = pytest.mark.browser

CHAPTER = "Lisbon Hosts and Riders"


def chapter_with_a_small_meetup(app) -> tuple[str, int]:
    """A forming chapter with only its organiser, and a meetup with one place."""
    with app.app_context():
        organiser = make_member("olga@example.org", "Olga Organiser")
        chapter = make_chapter(organiser)
        meetup = make_meetup(chapter, organiser, capacity=1)
        make_member("ana@example.org", "Ana Rider")
        make_member("bea@example.org", "Bea Host")
        return chapter.slug, meetup.id


def log_in(page: Page, email: str, name: str) -> None:
    page.goto("/")
    page.get_by_role("link", name="Log in", exact=True).click()
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_text(f"Welcome back, {name}.")).to_be_visible()


def join_and_open_meetup(page: Page, slug: str, welcome: str) -> None:
    page.goto(f"/chapters/{slug}")
    expect(page.get_by_role("heading", name=CHAPTER, level=1)).to_be_visible()
    page.get_by_role("button", name="Join this chapter").click()
    expect(page.get_by_text(welcome)).to_be_visible()
    expect(page.get_by_text("You are a member of this chapter.")).to_be_visible()
    page.get_by_role("link", name="Planning night").click()
    expect(page.get_by_role("heading", name="Planning night", level=1)).to_be_visible()


def votes_for(region, choice: str):
    """The count cell of the results table's row for one choice."""
    row = region.get_by_role("row").filter(
        has=region.page.get_by_role("rowheader", name=choice, exact=True)
    )
    return row.get_by_role("cell")


def rsvps(app, meetup_id: int) -> dict[str, str]:
    with app.app_context():
        rows = db.session.scalars(select(Rsvp).where(Rsvp.meetup_id == meetup_id)).all()
        return {rsvp.member.email: rsvp.status for rsvp in rows}


def test_members_join_a_chapter_and_take_the_last_place_or_the_waitlist(
    app, page, browser, live_server, outbox, run_jobs
):
    """Two members join through the chapter page; the first takes the place, the second waits."""
    slug, meetup_id = chapter_with_a_small_meetup(app)

    # Ana joins the forming chapter and takes the meetup's only place.
    log_in(page, "ana@example.org", "Ana Rider")
    join_and_open_meetup(page, slug, f"Welcome to {CHAPTER}.")
    page.get_by_role("button", name="I'm going", exact=True).click()
    expect(page.get_by_text("You are going. See you there!")).to_be_visible()
    expect(page.get_by_text("You are going.", exact=True)).to_be_visible()
    expect(page.get_by_text("1 going of 1")).to_be_visible()
    expect(page.get_by_role("button", name="I'm going", exact=True)).to_have_count(0)

    # Bea joins too, which makes the chapter active, and finds the meetup full.
    other = browser.new_context(base_url=live_server)
    try:
        bea = other.new_page()
        log_in(bea, "bea@example.org", "Bea Host")
        join_and_open_meetup(bea, slug, f"Welcome! With you, {CHAPTER} is now an active chapter.")
        expect(bea.get_by_text("1 going of 1")).to_be_visible()
        bea.get_by_role("button", name="I'm going", exact=True).click()
        expect(bea.get_by_text("The meetup is full, so you are on the waitlist.")).to_be_visible()
        expect(bea.get_by_text("You are on the waitlist, number 1.")).to_be_visible()
        expect(bea.get_by_text("1 going of 1, 1 on the waitlist")).to_be_visible()
        assert rsvps(app, meetup_id) == {
            "ana@example.org": RsvpStatus.GOING,
            "bea@example.org": RsvpStatus.WAITLISTED,
        }

        # Ana gives up her place: Bea has it at once and is told by email.
        page.get_by_role("button", name="I'm not going").click()
        expect(page.get_by_text("You said you are not going.")).to_be_visible()
        bea.reload()
        expect(bea.get_by_text("You are going.", exact=True)).to_be_visible()
    finally:
        other.close()
    assert rsvps(app, meetup_id) == {
        "ana@example.org": RsvpStatus.NOT_GOING,
        "bea@example.org": RsvpStatus.GOING,
    }
    run_jobs()
    subjects = [message["Subject"] for message in outbox.to("bea@example.org")]
    assert subjects.count("You have a place at Planning night") == 1


def test_a_member_votes_on_a_proposal_and_changes_the_vote(app, page):
    """A member votes with a reason, sees the count move, then changes the vote."""
    with app.app_context():
        olga = make_member("olga@example.org", "Olga Organiser")
        ana = make_member("ana@example.org", "Ana Rider")
        chapter = make_chapter(olga, ana, make_member("rui@example.org", "Rui Courier"))
        proposal = services.open_proposal(
            chapter,
            olga,
            title="Ask the council for a courier rest stop",
            details="A covered place near Cais do Sodré where couriers can wait and rest.",
            closes_at=utcnow() + timedelta(days=3),
        )
        proposal_id = proposal.id

    log_in(page, "ana@example.org", "Ana Rider")
    page.goto(f"/proposals/{proposal_id}")
    results = page.get_by_role("region", name="Results so far")
    expect(votes_for(results, "Agree")).to_have_text("0")
    page.get_by_label("Agree", exact=True).check()
    page.get_by_label("Reason (optional)").fill("Couriers need somewhere dry")
    page.get_by_role("button", name="Cast my vote").click()
    expect(page.get_by_text("Your vote is recorded.")).to_be_visible()
    expect(page.get_by_text("You voted Agree.")).to_be_visible()
    expect(votes_for(results, "Agree")).to_have_text("1")
    votes = page.get_by_role("region", name="Votes and reasons")
    expect(votes).to_contain_text("Ana Rider: Agree. “Couriers need somewhere dry”")

    # The form shows the vote as cast; changing it replaces it.
    expect(page.get_by_label("Agree", exact=True)).to_be_checked()
    page.get_by_label("Abstain", exact=True).check()
    page.get_by_label("Reason (optional)").fill("")
    page.get_by_role("button", name="Cast my vote").click()
    expect(page.get_by_text("You voted Abstain.")).to_be_visible()
    expect(votes_for(results, "Agree")).to_have_text("0")
    expect(votes_for(results, "Abstain")).to_have_text("1")
    expect(votes).to_have_text("Votes and reasons Ana Rider: Abstain")


def test_the_error_summary_link_takes_the_voter_to_the_choices(app, page):
    """A vote sent without a choice: the summary's link moves focus to the first choice."""
    with app.app_context():
        olga = make_member("olga@example.org", "Olga Organiser")
        ana = make_member("ana@example.org", "Ana Rider")
        chapter = make_chapter(olga, ana, make_member("rui@example.org", "Rui Courier"))
        proposal_id = services.open_proposal(
            chapter,
            olga,
            title="Ask the council for a courier rest stop",
            details="A covered place near Cais do Sodré where couriers can wait and rest.",
            closes_at=utcnow() + timedelta(days=3),
        ).id

    log_in(page, "ana@example.org", "Ana Rider")
    page.goto(f"/proposals/{proposal_id}")
    page.get_by_role("button", name="Cast my vote").click()
    summary = page.get_by_role("alert").filter(has_text="Please check the form")
    summary.get_by_role("link", name="Your vote: Please choose agree").click()
    expect(page.get_by_label("Agree", exact=True)).to_be_focused()
