"""Chapters: the activation threshold, founding, membership and roles, RSVPs and the
waitlist (also under concurrent changes), capacity changes, reminders, time zones across a
clock change, calendars, attendance, notifications of changes, bad input, campaigns,
importing a chapter, invitations to an imported chapter and the city page."""

from __future__ import annotations

import html
import io
import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask_migrate import downgrade, upgrade
from icalendar import Calendar
from sqlalchemy import func, select, update

from campaigns import services as campaign_services
from campaigns.models import CampaignError
from chapters import jobs as chapter_jobs
from chapters import services
from chapters.models import (
    CalendarKey,
    Chapter,
    ChapterError,
    ChapterInvitation,
    ChapterState,
    InvitationState,
    Meetup,
    MeetupState,
    Membership,
    Outcome,
    Proposal,
    ProposalState,
    Role,
    Rsvp,
    RsvpStatus,
    Vote,
)
from core.api import TOKEN_HEADER
from core.db import utcnow
from core.extensions import db
from core.queue import enqueue
from members.models import Member
from members.services import change_password, create_api_token, delete_account
from members.signals import account_deleting
from notifications import services as notification_services
from notifications.models import Category, Delivery, DeliveryState, Frequency, Notification
from notifications.services import set_preferences, subscriber_of
from tests.factories import (
    PASSWORD,
    make_campaign,
    make_chapter,
    make_meetup,
    make_member,
    make_petition,
    member_by_email,
)
from tests.helpers import (
    csrf_token,
    once_a_statement_runs,
    redis_down,
    release_scheduled,
    scheduled_jobs,
    submit,
    text_body,
)

SLUG = "lisbon-hosts-and-riders"
LISBON = ZoneInfo("Europe/Lisbon")
LATER = (utcnow() + timedelta(days=20)).astimezone(LISBON).strftime("%Y-%m-%d")  # a date well ahead
ACTIVE_SUBJECT = "Your chapter Lisbon Hosts and Riders is now active"
PROMOTED_SUBJECT = "You have a place at Planning night"


# --- helpers ----------------------------------------------------------------------------


def email(name: str) -> str:
    return f"{name.lower()}@example.org"


def people(*names: str) -> list[Member]:
    """Confirmed members named ``names``, with addresses like olga@example.org."""
    return [make_member(email(name), name, "Lisbon") for name in names]


def chapter_of(*names: str, **fields) -> tuple[Chapter, dict[str, Member]]:
    """Olga's chapter in Lisbon, joined by ``names`` in that order; Olga is its organiser."""
    members = dict(zip(("Olga", *names), people("Olga", *names), strict=True))
    chapter = make_chapter(members["Olga"], *(members[name] for name in names), **fields)
    return chapter, members


def log_in(app: Flask, name: str, password: str = PASSWORD):
    """A fresh test client logged in as ``name``."""
    client = app.test_client()
    response = submit(client, "/login", {"email": email(name), "password": password})
    assert response.status_code == 302, response.status_code
    return client


def post_with_token(client, url: str, data: dict | None = None):
    """Post a button or form with the session's CSRF token, taken from the account page."""
    token = csrf_token(client.get("/account").text)
    return client.post(url, data={"csrf_token": token, **(data or {})})


def flashes(client, response) -> list[str]:
    """The messages shown on the page a response redirects to."""
    assert response.status_code == 302, response.status_code
    page = client.get(response.headers["Location"]).text
    return [html.unescape(m) for m in re.findall(r'<p class="flash flash-\w+">(.*?)</p>', page)]


def field_error(page_html: str, field_id: str) -> str:
    """The message shown beside a field."""
    assert f'id="{field_id}-error"' in page_html, f"no error beside {field_id}"
    return html.unescape(page_html.split(f'id="{field_id}-error">', 1)[1].split("</p>", 1)[0])


def field_input(page_html: str, field_id: str) -> str:
    """The input element of a field."""
    return re.search(rf'<input[^>]*id="{field_id}"[^>]*>', page_html).group(0)


def error_summary(page_html: str) -> str:
    assert 'class="error-summary"' in page_html, "no error summary"
    return html.unescape(page_html.split('class="error-summary"', 1)[1].split("</div>", 1)[0])


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", fragment))).strip()


def mail(outbox) -> dict[str, list[str]]:
    """Subjects of the messages in the outbox, by recipient."""
    found: dict[str, list[str]] = {}
    for message in outbox.messages():
        found.setdefault(message["To"], []).append(message["Subject"])
    return found


def each(addresses, subjects: list[str]) -> dict[str, list[str]]:
    """The same subjects for each of ``addresses``, to compare with mail()."""
    return {address: list(subjects) for address in addresses}


def names(meetup: Meetup, status: RsvpStatus) -> list[str]:
    """Who has ``status``; the waitlist in its order."""
    db.session.expire_all()
    return [rsvp.member.display_name for rsvp in services.attendees(meetup, status)]


def answer(meetup: Meetup, members: dict[str, Member], going: bool, *who: str) -> list:
    return [services.respond(meetup, members[name], going) for name in who]


def details_of(meetup: Meetup, **changes) -> services.MeetupDetails:
    fields = (
        "title",
        "description",
        "starts_at",
        "ends_at",
        "venue",
        "address",
        "online_link",
        "capacity",
    )
    return services.MeetupDetails(**{**{f: getattr(meetup, f) for f in fields}, **changes})


def set_times(meetup_id: int, starts_at: datetime, ends_at: datetime | None = None) -> None:
    """Change when a meetup is, straight in the database, as if time had passed: it was
    scheduled three days before it starts."""
    db.session.execute(
        update(Meetup)
        .where(Meetup.id == meetup_id)
        .values(
            starts_at=starts_at,
            ends_at=ends_at or starts_at + timedelta(hours=2),
            created_at=starts_at - timedelta(days=3),
        )
    )
    db.session.commit()
    db.session.expire_all()


def meetup_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Meetup))


def local_input(moment: datetime) -> str:
    """A time as the form's datetime-local input sends it, in Lisbon."""
    return moment.astimezone(LISBON).strftime("%Y-%m-%dT%H:%M")


def meetup_form(**changes) -> dict:
    starts = (utcnow() + timedelta(days=10)).replace(hour=18, minute=30)
    return {
        "title": "Planning night",
        "description": "We plan the next month of the campaign.",
        "starts": local_input(starts),
        "ends": local_input(starts + timedelta(hours=2)),
        "venue": "Café Lua",
        "address": "Rua dos Remédios 12, Lisbon",
        "online_link": "",
        "capacity": "",
        **changes,
    }


def chapter_form(**changes) -> dict:
    return {
        "name": "Lisbon Hosts and Riders",
        "city": "Lisbon",
        "time_zone": "Europe/Lisbon",
        "description": "Hosts, drivers and couriers in Lisbon who want fair, local rules.",
        **changes,
    }


def meetup_id_of(response) -> int:
    assert response.status_code == 302, response.status_code
    match = re.fullmatch(r"/meetups/(\d+)", response.headers["Location"])
    assert match, response.headers["Location"]
    return int(match.group(1))


def reminder_jobs(meetup_id: int) -> dict[str, str]:
    return {lead: f"meetup-{meetup_id}-reminder-{lead}" for lead in ("24h", "1h")}


def assert_due(due: datetime, expected: datetime) -> None:
    assert abs((due - expected).total_seconds()) <= 1, (due, expected)


def events_in(response) -> list:
    assert response.status_code == 200, response.status_code
    assert response.mimetype == "text/calendar"
    return Calendar.from_ical(response.data).walk("VEVENT")


# --- 1. forming and active ------------------------------------------------------------------


def test_the_third_member_makes_a_chapter_active_and_everyone_hears_once(ctx, outbox, run_jobs):
    """A founder and one member leave a chapter forming; the third activates it, told once."""
    chapter, _ = chapter_of("Ana")
    assert chapter.state == ChapterState.FORMING and chapter.activated_at is None
    run_jobs()
    assert outbox.messages() == []

    ben, dan = people("Ben", "Dan")
    assert services.join(chapter, ben)
    assert chapter.state == ChapterState.ACTIVE and chapter.activated_at is not None
    assert not services.join(chapter, ben)  # already in
    run_jobs()
    assert services.join(chapter, dan)  # a fourth member is no news
    run_jobs()
    run_jobs()

    assert mail(outbox) == {email(n): [ACTIVE_SUBJECT] for n in ("Olga", "Ana", "Ben")}
    assert "has 3 members and is now an active chapter" in text_body(outbox.last_to(email("Ana")))


def test_the_activation_threshold_follows_the_configuration(app, ctx, monkeypatch):
    """CHAPTER_ACTIVE_AT moves the threshold both ways."""
    monkeypatch.setitem(app.config, "CHAPTER_ACTIVE_AT", 4)
    chapter, members = chapter_of("Ana", "Ben")
    assert chapter.state == ChapterState.FORMING
    services.join(chapter, people("Cara")[0])
    assert chapter.state == ChapterState.ACTIVE

    monkeypatch.setitem(app.config, "CHAPTER_ACTIVE_AT", 2)
    porto = make_chapter(members["Ana"], name="Porto Riders", city="Porto")
    assert porto.state == ChapterState.FORMING
    services.join(porto, members["Ben"])
    assert porto.state == ChapterState.ACTIVE

    monkeypatch.setitem(app.config, "CHAPTER_ACTIVE_AT", 1)
    alone = make_chapter(members["Ben"], name="Faro Hosts", city="Faro")
    assert alone.state == ChapterState.ACTIVE


# --- 2. founding through the form -------------------------------------------------------------


def test_founding_a_chapter_through_the_form_leads_to_its_page(app):
    """A valid form founds the chapter with its founder as organiser and shows its page."""
    with app.app_context():
        people("Olga")
    olga = log_in(app, "Olga")
    response = submit(olga, "/chapters/new", chapter_form())
    assert response.status_code == 302
    assert response.headers["Location"] == f"/chapters/{SLUG}"
    assert "Your chapter is founded. Invite people to join it." in flashes(olga, response)
    page = olga.get(f"/chapters/{SLUG}").text
    assert "This chapter is forming: 1 of 3 members have joined." in page
    assert "You are an organiser of this chapter." in page
    with app.app_context():
        chapter = services.chapter_by_slug(SLUG)
        assert (chapter.name, chapter.city_slug, chapter.time_zone) == (
            "Lisbon Hosts and Riders",
            "lisbon",
            "Europe/Lisbon",
        )
        assert [(m.member.email, m.role) for m in chapter.memberships] == [
            (email("Olga"), Role.ORGANISER)
        ]


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        (
            {"name": "", "city": "", "time_zone": "", "description": ""},
            {
                "name": "Please fill in chapter name.",
                "city": "Please fill in city.",
                "time_zone": "Please choose a time zone.",
                "description": "Please fill in what the chapter is for.",
            },
        ),
        ({"time_zone": "Mars/Olympus_Mons"}, {"time_zone": "Not a valid choice."}),
        ({"description": "Too short."}, {"description": "must be 20 to 5000 characters long"}),
    ],
    ids=["missing fields", "unknown time zone", "short description"],
)
def test_the_founding_form_refuses_bad_input_beside_each_field(app, data, errors):
    """Missing fields or an unknown time zone answer 422 with a message per field."""
    with app.app_context():
        people("Olga")
    olga = log_in(app, "Olga")
    response = submit(olga, "/chapters/new", chapter_form(**data))
    assert response.status_code == 422
    for field, message in errors.items():
        assert message in field_error(response.text, field), field
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Chapter)) == 0


def test_a_second_chapter_in_a_city_points_to_the_first_until_confirmed(app):
    """A second chapter in the same city first answers 409 with a link to the existing one."""
    with app.app_context():
        chapter_of()
        people("Ana")
    ana = log_in(app, "Ana")
    form = chapter_form(name="Lisbon Couriers United", city="lisbon")

    first = submit(ana, "/chapters/new", form)
    assert first.status_code == 409
    assert f'href="/chapters/{SLUG}"' in first.text
    assert "There is already a chapter in lisbon" in first.text
    assert 'name="second_chapter" value="yes"' in first.text
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Chapter)) == 1

    second = submit(ana, "/chapters/new", {**form, "second_chapter": "yes"})
    assert second.status_code == 302
    assert second.headers["Location"] == "/chapters/lisbon-couriers-united"
    with app.app_context():
        assert [c.name for c in services.chapters_in_city("Lisbon")] == [
            "Lisbon Hosts and Riders",
            "Lisbon Couriers United",
        ]


def test_a_chapter_form_sent_twice_founds_one_chapter(app):
    """The founder's second submit of the same form lands on the chapter just founded."""
    with app.app_context():
        people("Olga")
    olga = log_in(app, "Olga")
    form = {"csrf_token": csrf_token(olga.get("/chapters/new").text), **chapter_form()}
    first, second = olga.post("/chapters/new", data=form), olga.post("/chapters/new", data=form)
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == second.headers["Location"] == f"/chapters/{SLUG}"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Chapter)) == 1


def test_a_chapter_form_sent_again_with_changes_is_not_taken_for_the_first(app):
    """The founder who changes a detail and sends again is shown the chapter already in the
    city, with the new details still in the form, not told the first one was founded."""
    with app.app_context():
        people("Olga")
    olga = log_in(app, "Olga")
    token = csrf_token(olga.get("/chapters/new").text)
    assert (
        olga.post("/chapters/new", data={"csrf_token": token, **chapter_form()}).status_code == 302
    )
    changed = chapter_form(time_zone="Atlantic/Azores", description="Hosts of the islands.")
    again = olga.post("/chapters/new", data={"csrf_token": token, **changed})
    assert again.status_code == 409
    assert "Hosts of the islands." in again.text
    assert '<option selected value="Atlantic/Azores">' in again.text
    with app.app_context():
        assert db.session.scalars(select(Chapter.time_zone)).all() == ["Europe/Lisbon"]


@pytest.mark.parametrize("name", ["New", "Import"])
def test_a_chapter_named_like_a_page_of_chapters_gets_an_address_of_its_own(app, name):
    with app.app_context():
        people("Olga")
    olga = log_in(app, "Olga")
    founded = submit(olga, "/chapters/new", chapter_form(name=name))
    assert founded.headers["Location"] == f"/chapters/{name.lower()}-2"
    assert f"<h1>{name}</h1>" in olga.get(founded.headers["Location"]).text


def test_every_fixed_page_under_chapters_is_a_reserved_address(app):
    fixed = {
        rule.rule.split("/")[2]
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/chapters/") and "<" not in rule.rule.split("/")[2]
    }
    assert fixed == services.RESERVED_SLUGS


def found_meanwhile(app: Flask, monkeypatch, founder_email: str) -> None:
    """Once the next founding has picked its address, ``founder_email`` founds the same
    chapter and commits first, as the other of two requests at once would."""
    pick_slug = services.unique_slug

    def slug_then_the_other_request(name: str, city: str) -> str:
        slug = pick_slug(name, city)
        monkeypatch.setattr(services, "unique_slug", pick_slug)
        with app.app_context():
            founder = member_by_email(founder_email)
            services.create_chapter(founder, **chapter_form())
        return slug

    monkeypatch.setattr(services, "unique_slug", slug_then_the_other_request)


def test_a_chapter_founded_twice_at_once_by_its_founder_is_founded_once(app, ctx, monkeypatch):
    """Both requests of a double submit pick the same address: the second gets the first's
    chapter instead of an error."""
    (olga,) = people("Olga")
    found_meanwhile(app, monkeypatch, email("Olga"))

    chapter = services.create_chapter(olga, **chapter_form())
    assert chapter.slug == SLUG
    assert db.session.scalar(select(func.count()).select_from(Chapter)) == 1


def test_a_name_another_founder_takes_at_the_same_moment_gets_the_next_address(
    app, ctx, monkeypatch
):
    olga, ana = people("Olga", "Ana")
    found_meanwhile(app, monkeypatch, email("Ana"))

    chapter = services.create_chapter(olga, **chapter_form())
    assert chapter.slug == f"{SLUG}-2"
    assert chapter.is_organised_by(olga)
    assert services.chapter_by_slug(SLUG).is_organised_by(ana)


def chapters_found(client, query: str) -> str:
    page = client.get("/chapters", query_string={"q": query}).text
    return re.search(r"([\d,]+) chapters? found", page).group(0)


def test_a_search_for_a_percent_sign_or_underscore_looks_for_that_character(app, client):
    """ "%" and "_" are no wildcards: they find the chapters whose name has them."""
    with app.app_context():
        olga, ana = people("Olga", "Ana")
        make_chapter(olga)
        make_chapter(ana, name="Porto 100% Riders", city="Porto")
    assert chapters_found(client, "%") == "1 chapter found"
    assert chapters_found(client, "100%") == "1 chapter found"
    assert chapters_found(client, "_") == "0 chapters found"
    assert chapters_found(client, "riders") == "2 chapters found"


# --- 3. membership, roles and permissions ------------------------------------------------------


def roles(app: Flask) -> dict[str, str]:
    with app.app_context():
        chapter = services.chapter_by_slug(SLUG)
        return {m.member.display_name: m.role for m in chapter.memberships}


def test_members_join_and_leave_through_the_chapter_page(app):
    """Joining and leaving are buttons on the chapter page."""
    with app.app_context():
        chapter_of("Ana")
        people("Ben")
    ben = log_in(app, "Ben")
    assert "Join this chapter" in ben.get(f"/chapters/{SLUG}").text

    joined = post_with_token(ben, f"/chapters/{SLUG}/join")
    assert joined.headers["Location"] == f"/chapters/{SLUG}"
    assert flashes(ben, joined) == [
        "Welcome! With you, Lisbon Hosts and Riders is now an active chapter."
    ]
    assert roles(app) == {"Olga": "organiser", "Ana": "member", "Ben": "member"}
    assert "You are a member of this chapter." in ben.get(f"/chapters/{SLUG}").text
    again = post_with_token(ben, f"/chapters/{SLUG}/join")
    assert flashes(ben, again) == ["You are already a member."]

    left = post_with_token(ben, f"/chapters/{SLUG}/leave")
    assert flashes(ben, left) == ["You have left Lisbon Hosts and Riders."]
    assert roles(app) == {"Olga": "organiser", "Ana": "member"}
    assert "Join this chapter" in ben.get(f"/chapters/{SLUG}").text


def test_leaving_a_chapter_gives_up_places_at_its_meetups(ctx, outbox, run_jobs):
    """A member who leaves loses their RSVPs, and the first waiting takes the freed place."""
    chapter, members = chapter_of("Ana", "Ben", "Cara")
    meetup = make_meetup(chapter, members["Olga"], capacity=1)
    other = make_meetup(chapter, members["Olga"], title="Picnic day", capacity=1)
    answer(meetup, members, True, "Ana", "Ben", "Cara")
    answer(other, members, True, "Cara", "Ana")
    run_jobs()
    outbox.clear()

    services.leave(chapter, members["Ana"])
    assert chapter.membership_of(members["Ana"]) is None
    assert names(meetup, RsvpStatus.GOING) == ["Ben"]
    assert names(meetup, RsvpStatus.WAITLISTED) == ["Cara"]
    assert names(other, RsvpStatus.GOING) == ["Cara"]
    assert names(other, RsvpStatus.WAITLISTED) == []
    run_jobs()
    assert mail(outbox) == {email("Ben"): [PROMOTED_SUBJECT]}
    with pytest.raises(ChapterError, match="Join the chapter"):
        services.respond(meetup, members["Ana"], True)


def test_the_only_organiser_cannot_leave_while_others_remain(app):
    """The sole organiser must hand over before leaving a chapter with other members."""
    with app.app_context():
        _, members = chapter_of("Ana")
        ana_id = members["Ana"].id
    olga = log_in(app, "Olga")

    refused = post_with_token(olga, f"/chapters/{SLUG}/leave")
    assert flashes(olga, refused) == [
        "You are the only organiser. Make someone else an organiser first."
    ]
    assert roles(app) == {"Olga": "organiser", "Ana": "member"}

    promoted = post_with_token(olga, f"/chapters/{SLUG}/members/{ana_id}/organiser")
    assert promoted.headers["Location"] == f"/chapters/{SLUG}/manage"
    left = post_with_token(olga, f"/chapters/{SLUG}/leave")
    assert flashes(olga, left) == ["You have left Lisbon Hosts and Riders."]
    assert roles(app) == {"Ana": "organiser"}


def test_organisers_promote_and_demote_but_keep_one_organiser(app):
    """Organisers change roles on the manage page; the last organiser cannot step back."""
    with app.app_context():
        _, members = chapter_of("Ana")
        olga_id, ana_id = members["Olga"].id, members["Ana"].id
        outsider_id = people("Rui")[0].id
    olga = log_in(app, "Olga")
    base = f"/chapters/{SLUG}/members"

    manage = olga.get(f"/chapters/{SLUG}/manage")
    assert manage.status_code == 200
    assert f'action="{base}/{ana_id}/organiser"' in manage.text

    assert flashes(olga, post_with_token(olga, f"{base}/{ana_id}/organiser")) == [
        "Ana is now an organiser."
    ]
    assert roles(app) == {"Olga": "organiser", "Ana": "organiser"}
    assert flashes(olga, post_with_token(olga, f"{base}/{ana_id}/member")) == [
        "Ana is now a member."
    ]
    assert roles(app) == {"Olga": "organiser", "Ana": "member"}

    assert flashes(olga, post_with_token(olga, f"{base}/{olga_id}/member")) == [
        "A chapter needs at least one organiser."
    ]
    assert flashes(olga, post_with_token(olga, f"{base}/{outsider_id}/organiser")) == [
        "That person is not a member of this chapter."
    ]
    assert roles(app) == {"Olga": "organiser", "Ana": "member"}


def test_the_next_to_join_a_chapter_its_last_member_left_becomes_its_organiser(app):
    """The founder may leave a chapter they are alone in; whoever joins next runs it."""
    with app.app_context():
        chapter_of()
        people("Ana", "Ben")
    olga = log_in(app, "Olga")
    assert flashes(olga, post_with_token(olga, f"/chapters/{SLUG}/leave")) == [
        "You have left Lisbon Hosts and Riders."
    ]
    assert roles(app) == {}

    for name in ("Ana", "Ben"):
        member = log_in(app, name)
        assert post_with_token(member, f"/chapters/{SLUG}/join").status_code == 302
    assert roles(app) == {"Ana": "organiser", "Ben": "member"}
    assert log_in(app, "Ana").get(f"/chapters/{SLUG}/manage").status_code == 200


def test_the_next_to_join_after_the_only_member_deleted_their_account_organises(ctx):
    """An organiser alone in a chapter deletes their account; the next joiner organises."""
    chapter, members = chapter_of()
    delete_account(members["Olga"])
    ana = people("Ana")[0]
    assert services.join(chapter, ana)
    assert chapter.is_organised_by(ana)


def test_the_longest_standing_member_takes_over_from_a_deleted_sole_organiser(ctx):
    """When the only organiser deletes their account, the member who joined first organises."""
    chapter, members = chapter_of("Ana", "Ben")
    delete_account(members["Olga"])
    db.session.expire_all()
    assert {m.member.display_name: m.role for m in chapter.memberships} == {
        "Ana": Role.ORGANISER,
        "Ben": Role.MEMBER,
    }


def a_later_deletion_step_fails(sender, member: Member, **extra) -> None:
    raise RuntimeError("the deletion failed after the chapters' part")


def test_a_failed_account_deletion_gives_up_no_place(ctx, outbox, run_jobs):
    """The chapters' part of a deletion commits nothing of its own: when a later step
    fails, the member keeps their place and no one is told of one."""
    chapter, members = chapter_of("Ana", "Cara")
    meetup = make_meetup(chapter, members["Olga"], capacity=1)
    answer(meetup, members, True, "Ana", "Cara")
    run_jobs()
    outbox.clear()
    account_deleting.connect(a_later_deletion_step_fails)
    try:
        with pytest.raises(RuntimeError):
            delete_account(members["Ana"])
    finally:
        account_deleting.disconnect(a_later_deletion_step_fails)
    db.session.rollback()

    assert names(meetup, RsvpStatus.GOING) == ["Ana"]
    assert names(meetup, RsvpStatus.WAITLISTED) == ["Cara"]
    run_jobs()
    assert outbox.messages() == []


def test_places_freed_by_a_deleted_account_are_told_once_after_it_is_saved(ctx, outbox, run_jobs):
    """Each place a deleted member held goes to the first waiting, who is told once."""
    chapter, members = chapter_of("Ana", "Cara", "Dan")
    first = make_meetup(chapter, members["Olga"], capacity=1)
    second = make_meetup(chapter, members["Olga"], capacity=1, title="Picnic day")
    answer(first, members, True, "Ana", "Cara")
    answer(second, members, True, "Ana", "Dan")
    run_jobs()
    outbox.clear()

    delete_account(members["Ana"])
    run_jobs()
    run_jobs()
    assert names(first, RsvpStatus.GOING) == ["Cara"]
    assert names(second, RsvpStatus.GOING) == ["Dan"]
    assert mail(outbox) == {
        email("Cara"): [PROMOTED_SUBJECT],
        email("Dan"): ["You have a place at Picnic day"],
    }


@pytest.mark.parametrize("gives_up", ["deletion", "leaving"])
def test_places_given_while_redis_is_down_are_told_by_the_sweep(
    app, ctx, outbox, run_jobs, gives_up
):
    """The news of a place goes with the change that gave it: if Redis is away when the
    change commits, the periodic sweep sends it once Redis is back, exactly once."""
    meetup, members = full_meetup_with_cara_waiting(outbox, run_jobs)
    with redis_down(app):
        if gives_up == "deletion":
            delete_account(members["Ana"])
        else:
            services.leave(meetup.chapter, members["Ana"])
    assert names(meetup, RsvpStatus.GOING) == ["Cara"]
    run_jobs()
    assert outbox.messages() == []  # nothing was queued while Redis was away

    assert notification_services.requeue_stalled(older_than=timedelta(0)) == 1
    run_jobs()
    assert notification_services.requeue_stalled(older_than=timedelta(0)) == 0
    run_jobs()
    assert mail(outbox) == {email("Cara"): [PROMOTED_SUBJECT]}


def test_an_answer_saved_while_a_member_leaves_gives_its_place_up_too(app, ctx):
    """Ana says she is going just after her leave listed her places: the leave gives that
    place up as well, and once she has left she can no longer answer."""
    chapter, members = chapter_of("Ana")
    meetup = make_meetup(chapter, members["Olga"])
    answered = answered_elsewhere(app, meetup.id, members["Ana"].id)
    # Just after the leave lists Ana's places:
    with once_a_statement_runs("FROM meetups JOIN meetup_rsvps", "after", answered):
        services.leave(chapter, members["Ana"])
    assert names(meetup, RsvpStatus.GOING) == []
    assert chapter.membership_of(members["Ana"]) is None
    with pytest.raises(ChapterError, match="Join the chapter"):
        services.respond(meetup, members["Ana"], True)
    assert names(meetup, RsvpStatus.GOING) == []


def answered_elsewhere(app: Flask, meetup_id: int, member_id: int) -> Callable[[], None]:
    """The member's "going", saved in a session of its own, as a second browser tab would."""

    def answer_going() -> None:
        with app.app_context():
            meetup = db.session.get(Meetup, meetup_id)
            services.respond(meetup, db.session.get(Member, member_id), True)

    return answer_going


def test_a_meetup_cancelled_while_a_member_leaves_promotes_nobody(app, ctx, outbox, run_jobs):
    """The meetup is cancelled between listing Ana's places and locking the meetup: she
    still gives up her place, but Cara is not told of a place at a cancelled meetup."""
    meetup, members = full_meetup_with_cara_waiting(outbox, run_jobs)
    cancel = partial(cancel_elsewhere, app, meetup.id)
    with once_a_statement_runs("^UPDATE meetups SET rsvp_version", "before", cancel):
        services.leave(meetup.chapter, members["Ana"])
    db.session.rollback()
    assert db.session.get(Meetup, meetup.id).state == MeetupState.CANCELLED
    assert names(meetup, RsvpStatus.GOING) == []
    assert names(meetup, RsvpStatus.WAITLISTED) == ["Cara"]
    run_jobs()
    assert email("Cara") not in mail(outbox)


def test_a_chapter_left_without_organisers_is_run_by_its_longest_standing_member(ctx):
    """A chapter that lost its organisers gets one back as soon as its membership changes."""
    chapter, _ = chapter_of("Ana", "Ben")
    db.session.execute(update(Membership).values(role=Role.MEMBER))
    db.session.commit()
    assert services.join(chapter, people("Cara")[0])
    assert [m.member.display_name for m in chapter.organisers] == ["Olga"]


def demote_elsewhere(app: Flask, member_id: int) -> None:
    """Another organiser's change, committed through a connection of its own."""
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(
            update(Membership).where(Membership.member_id == member_id).values(role=Role.MEMBER)
        )


def test_the_organiser_count_is_read_afresh_before_stepping_down(app, ctx):
    """Two organisers stepping down at once: the second sees the first's change and stays."""
    chapter, members = chapter_of("Ana")
    services.set_role(chapter, members["Ana"].id, Role.ORGANISER)
    assert len(chapter.organisers) == 2  # loaded before Ana steps down elsewhere
    demote_elsewhere(app, members["Ana"].id)

    with pytest.raises(ChapterError, match="A chapter needs at least one organiser"):
        services.set_role(chapter, members["Olga"].id, Role.MEMBER)
    assert [m.member.display_name for m in chapter.organisers] == ["Olga"]


def test_the_organiser_count_is_read_afresh_before_leaving(app, ctx):
    """An organiser cannot leave on the strength of a co-organiser who just stepped down."""
    chapter, members = chapter_of("Ana")
    services.set_role(chapter, members["Ana"].id, Role.ORGANISER)
    assert len(chapter.organisers) == 2
    demote_elsewhere(app, members["Ana"].id)

    with pytest.raises(ChapterError, match="You are the only organiser"):
        services.leave(chapter, members["Olga"])
    assert [m.member.display_name for m in chapter.organisers] == ["Olga"]


def join_together(app: Flask, chapter_id: int, member_ids: list[int]) -> None:
    """Each member joins from a thread and session of their own, released at once."""
    barrier = threading.Barrier(len(member_ids))
    errors: list[BaseException] = []

    def run(member_id: int) -> None:
        try:
            with app.app_context():
                chapter = db.session.get(Chapter, chapter_id)
                member = db.session.get(Member, member_id)
                chapter.memberships  # noqa: B018 - loaded before the others join
                barrier.wait(timeout=10)
                assert services.join(chapter, member)
        except BaseException as error:  # reported in the test's own thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(member_id,)) for member_id in member_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors


def test_two_members_joining_at_once_activate_the_chapter_at_the_threshold(app):
    """The second and third members join at the same moment: the chapter becomes active."""
    for round_ in range(3):  # several rounds, for different interleavings
        with app.app_context():
            founder = make_member(f"founder{round_}@example.org", "Founder")
            chapter = make_chapter(founder, name=f"Riders {round_}")
            joiners = [make_member(f"j{round_}{n}@example.org", f"J{n}").id for n in range(2)]
            chapter_id = chapter.id
        join_together(app, chapter_id, joiners)
        with app.app_context():
            chapter = db.session.get(Chapter, chapter_id)
            assert (services.member_count(chapter), chapter.state) == (3, ChapterState.ACTIVE)


def chapter_snapshot(app: Flask) -> dict:
    """Everything an organiser route could change."""
    with app.app_context():
        chapter = services.chapter_by_slug(SLUG)
        return {
            "settings": (
                chapter.description,
                chapter.time_zone,
                chapter.members_can_schedule,
                chapter.quorum_percent,
                chapter.quorum_minimum,
            ),
            "roles": {m.member_id: m.role for m in chapter.memberships},
            "meetups": db.session.execute(
                select(Meetup.id, Meetup.title, Meetup.state, Meetup.starts_at).order_by(Meetup.id)
            ).all(),
            "attended": db.session.scalars(select(Rsvp.attended).order_by(Rsvp.id)).all(),
        }


def settings_form(**changes) -> dict:
    return {
        "description": "Hosts, drivers and couriers in Lisbon who want fair, local rules.",
        "time_zone": "Europe/Lisbon",
        "quorum_percent": "20",
        "quorum_minimum": "3",
        **changes,
    }


def page_title(page_html: str) -> str:
    return text_of(page_html.split("<title>", 1)[1].split("</title>", 1)[0])


def test_refused_settings_say_so_in_the_title(app, monkeypatch):
    """Settings refused by the form or by the service answer 422 with an "Error: " title."""
    with app.app_context():
        chapter_of("Ana")
    olga = log_in(app, "Olga")
    url = f"/chapters/{SLUG}/settings"

    invalid = post_with_token(olga, url, settings_form(quorum_percent="500"))
    assert invalid.status_code == 422
    assert page_title(invalid.text).startswith("Error: ")
    assert "Please give a percentage from 0 to 100." in invalid.text

    def refuse(chapter, **settings):
        raise ChapterError("Please choose a time zone from the list.")

    monkeypatch.setattr(services, "update_settings", refuse)
    refused = post_with_token(olga, url, settings_form())
    assert refused.status_code == 422
    assert page_title(refused.text).startswith("Error: ")
    assert "Please choose a time zone from the list." in refused.text
    assert not page_title(olga.get(f"/chapters/{SLUG}/manage").text).startswith("Error")


def test_a_member_who_does_not_organise_gets_403_on_every_organiser_route(app, outbox, run_jobs):
    """Managing, settings, roles, scheduling, editing, cancelling and attendance are refused."""
    with app.app_context():
        chapter, members = chapter_of("Ana", "Ben")
        meetup = make_meetup(chapter, members["Olga"])
        services.respond(meetup, members["Ana"], True)
        meetup_id, ana_id = meetup.id, members["Ana"].id
    run_jobs()
    outbox.clear()
    before = chapter_snapshot(app)
    ana = log_in(app, "Ana")

    gets = [
        f"/chapters/{SLUG}/manage",
        f"/chapters/{SLUG}/meetups/new",
        f"/meetups/{meetup_id}/edit",
        f"/meetups/{meetup_id}/attendance",
    ]
    for url in gets:
        assert ana.get(url).status_code == 403, url
    posts = {
        f"/chapters/{SLUG}/settings": settings_form(members_can_schedule="y"),
        f"/chapters/{SLUG}/members/{ana_id}/organiser": {},
        f"/chapters/{SLUG}/meetups/new": meetup_form(),
        f"/meetups/{meetup_id}/edit": meetup_form(title="Hijacked night"),
        f"/meetups/{meetup_id}/cancel": {},
        f"/meetups/{meetup_id}/attendance": {"attended": str(ana_id)},
    }
    for url, data in posts.items():
        assert post_with_token(ana, url, data).status_code == 403, url
    assert chapter_snapshot(app) == before
    run_jobs()
    assert outbox.messages() == []
    page = ana.get(f"/chapters/{SLUG}").text
    assert "Manage the chapter" not in page and "Schedule a meetup" not in page


def test_members_may_schedule_once_the_chapter_allows_it_and_run_what_they_scheduled(app):
    """With members_can_schedule on, a member schedules a meetup, then edits and cancels
    it; other members who do not organise still cannot."""
    with app.app_context():
        chapter_of("Ana", "Ben")
    ana = log_in(app, "Ana")
    assert ana.get(f"/chapters/{SLUG}/meetups/new").status_code == 403

    olga = log_in(app, "Olga")
    saved = post_with_token(
        olga, f"/chapters/{SLUG}/settings", settings_form(members_can_schedule="y")
    )
    assert saved.headers["Location"] == f"/chapters/{SLUG}/manage"
    assert "Schedule a meetup" in ana.get(f"/chapters/{SLUG}").text

    meetup_id = meetup_id_of(submit(ana, f"/chapters/{SLUG}/meetups/new", meetup_form()))
    with app.app_context():
        meetup = db.session.get(Meetup, meetup_id)
        assert meetup.title == "Planning night"
        assert meetup.created_by_id == member_by_email(email("Ana")).id
    ben = log_in(app, "Ben")
    assert ben.get(f"/meetups/{meetup_id}/edit").status_code == 403
    assert post_with_token(ben, f"/meetups/{meetup_id}/cancel").status_code == 403
    assert "Edit the meetup" not in ben.get(f"/meetups/{meetup_id}").text

    assert "Edit the meetup" in ana.get(f"/meetups/{meetup_id}").text
    edited = submit(ana, f"/meetups/{meetup_id}/edit", meetup_form(title="Planning night, again"))
    assert flashes(ana, edited) == ["Saved."]
    cancelled = post_with_token(ana, f"/meetups/{meetup_id}/cancel")
    assert flashes(ana, cancelled) == [
        "The meetup is cancelled and everyone who planned to come has been told."
    ]
    with app.app_context():
        meetup = db.session.get(Meetup, meetup_id)
        assert (meetup.title, meetup.state) == ("Planning night, again", MeetupState.CANCELLED)

    # Turned off again, members lose the right.
    post_with_token(olga, f"/chapters/{SLUG}/settings", settings_form())
    assert ana.get(f"/chapters/{SLUG}/meetups/new").status_code == 403


def test_guests_are_sent_to_log_in(app, client):
    """Every page and button that needs an account redirects a guest to the login page."""
    with app.app_context():
        chapter, members = chapter_of("Ana")
        meetup_id = make_meetup(chapter, members["Olga"]).id
        ana_id = members["Ana"].id
    gets = [
        "/chapters/new",
        f"/chapters/{SLUG}/manage",
        f"/chapters/{SLUG}/meetups/new",
        f"/meetups/{meetup_id}/edit",
        f"/meetups/{meetup_id}/attendance",
        "/calendar",
    ]
    posts = [
        "/chapters/new",
        f"/chapters/{SLUG}/join",
        f"/chapters/{SLUG}/leave",
        f"/chapters/{SLUG}/settings",
        f"/chapters/{SLUG}/members/{ana_id}/member",
        f"/meetups/{meetup_id}/going",
        f"/meetups/{meetup_id}/not-going",
        f"/meetups/{meetup_id}/cancel",
        "/calendar/reset",
    ]
    for method, urls in (("get", gets), ("post", posts)):
        for url in urls:
            response = getattr(client, method)(url)
            assert response.status_code == 302, (method, url)
            assert response.headers["Location"].startswith("/login"), (method, url)
    assert client.get(f"/chapters/{SLUG}").status_code == 200
    assert "Log in to RSVP" in client.get(f"/meetups/{meetup_id}").text
    assert roles(app) == {"Olga": "organiser", "Ana": "member"}


def unconfirmed(name: str) -> Member:
    """An account whose address was never confirmed: anyone can register with any address."""
    member = Member(display_name=name, email=email(name), password=PASSWORD, city="Lisbon")
    db.session.add(member)
    db.session.commit()
    return member


def test_an_account_yet_to_confirm_its_address_cannot_join_found_or_import_a_chapter(app):
    """Each is refused with a message that asks to confirm the address first, so such an
    account never makes a forming chapter active."""
    with app.app_context():
        chapter_of("Ana")  # the next to join would make it active
        unconfirmed("Sock")
    sock = log_in(app, "Sock")
    page = sock.get(f"/chapters/{SLUG}").text
    assert "Join this chapter" not in page
    assert "Confirm your email address</a> to join this chapter." in page

    joined = post_with_token(sock, f"/chapters/{SLUG}/join")
    assert flashes(sock, joined) == [services.NOT_CONFIRMED]
    founded = submit(sock, "/chapters/new", chapter_form(name="Porto Sock Riders", city="Porto"))
    assert founded.status_code == 422
    assert services.NOT_CONFIRMED in error_summary(founded.text)
    imported = upload(sock, export_file())
    assert imported.status_code == 422
    assert services.NOT_CONFIRMED in error_summary(imported.text)
    with app.app_context():
        [chapter] = db.session.scalars(select(Chapter)).all()
        assert (services.member_count(chapter), chapter.state) == (2, ChapterState.FORMING)


def test_a_member_yet_to_confirm_their_address_cannot_take_a_place_vote_propose_or_schedule(app):
    """A member whose address is not confirmed (one who joined before confirming was
    needed) is refused each with a message, and nothing is saved; they may still say they
    are not going."""
    with app.app_context():
        chapter, members = chapter_of("Ana", "Ben")
        chapter.members_can_schedule = True
        meetup_id = make_meetup(chapter, members["Olga"]).id
        proposal_id = services.open_proposal(
            chapter,
            members["Olga"],
            title="Meet every second week",
            details="Planning nights every other Tuesday.",
            closes_at=utcnow() + timedelta(days=2),
        ).id
        members["Ana"].email_confirmed_at = None
        db.session.commit()
    ana = log_in(app, "Ana")
    page = ana.get(f"/meetups/{meetup_id}").text
    assert f'action="/meetups/{meetup_id}/going"' not in page
    assert "Confirm your email address</a> to take a place." in page

    going = post_with_token(ana, f"/meetups/{meetup_id}/going")
    assert flashes(ana, going) == [services.NOT_CONFIRMED]
    voted = submit(
        ana, f"/proposals/{proposal_id}", {"choice": "agree"}, f"/proposals/{proposal_id}/vote"
    )
    assert voted.status_code == 409 and services.NOT_CONFIRMED in error_summary(voted.text)
    proposed = submit(
        ana,
        f"/chapters/{SLUG}/proposals/new",
        {
            "title": "Meet every week",
            "details": "Planning nights every Tuesday.",
            "closes": local_input(utcnow() + timedelta(days=3)),
        },
    )
    assert proposed.status_code == 422
    assert services.NOT_CONFIRMED in error_summary(proposed.text)
    scheduled = submit(ana, f"/chapters/{SLUG}/meetups/new", meetup_form(title="Sock night"))
    assert scheduled.status_code == 422
    assert services.NOT_CONFIRMED in error_summary(scheduled.text)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Rsvp)) == 0
        assert db.session.scalar(select(func.count()).select_from(Vote)) == 0
        assert db.session.scalar(select(func.count()).select_from(Proposal)) == 1
        assert meetup_count() == 1
    not_going = post_with_token(ana, f"/meetups/{meetup_id}/not-going")
    assert flashes(ana, not_going) == ["You are not going."]


def test_each_role_button_names_the_member_it_is_for(app):
    """Buttons read "Make Ana an organiser", not a column of identical "Make an organiser"."""
    with app.app_context():
        chapter_of("Ana", "Ben")
    page = log_in(app, "Olga").get(f"/chapters/{SLUG}/manage").text
    buttons = re.findall(r'<button type="submit" class="link-button">([^<]+)</button>', page)
    assert [b for b in buttons if b.startswith("Make")] == [
        "Make Olga a member",
        "Make Ana an organiser",
        "Make Ben an organiser",
    ]


# --- 4. the waitlist ---------------------------------------------------------------------------


def test_a_freed_place_goes_to_the_first_on_the_waitlist_who_is_told_once(app, outbox, run_jobs):
    """Capacity 2: the third is waitlisted, and gets the place when someone cancels."""
    with app.app_context():
        chapter, _ = chapter_of("Ana", "Ben", "Cara", "Dan")
        meetup_id = make_meetup(chapter, chapter.organisers[0].member, capacity=2).id
    clients = {name: log_in(app, name) for name in ("Ana", "Ben", "Cara", "Dan")}
    said = {
        name: flashes(c, post_with_token(c, f"/meetups/{meetup_id}/going"))
        for name, c in clients.items()
    }
    assert said["Ana"] == said["Ben"] == ["You are going. See you there!"]
    assert (
        said["Cara"]
        == said["Dan"]
        == ["The meetup is full, so you are on the waitlist. We will email you if a place opens."]
    )
    assert "You are on the waitlist, number 2." in clients["Dan"].get(f"/meetups/{meetup_id}").text
    run_jobs()
    outbox.clear()

    cancelled = post_with_token(clients["Ana"], f"/meetups/{meetup_id}/not-going")
    assert flashes(clients["Ana"], cancelled) == ["You are not going."]
    with app.app_context():
        meetup = db.session.get(Meetup, meetup_id)
        assert names(meetup, RsvpStatus.GOING) == ["Ben", "Cara"]
        assert names(meetup, RsvpStatus.WAITLISTED) == ["Dan"]
        assert names(meetup, RsvpStatus.NOT_GOING) == ["Ana"]
    run_jobs()
    run_jobs()
    assert mail(outbox) == {email("Cara"): [PROMOTED_SUBJECT]}
    body = text_body(outbox.last_to(email("Cara")))
    assert "you are now going to" in body and f"/meetups/{meetup_id}" in body
    page = clients["Dan"].get(f"/meetups/{meetup_id}").text
    assert "You are on the waitlist, number 1." in page


def test_leaving_the_waitlist_or_saying_no_twice_promotes_no_one(ctx, outbox, run_jobs):
    """Only a place given up by someone going promotes the next in line."""
    chapter, members = chapter_of("Ana", "Ben", "Cara", "Dan")
    meetup = make_meetup(chapter, members["Olga"], capacity=1)
    assert answer(meetup, members, True, "Ana", "Ben", "Cara") == [
        RsvpStatus.GOING,
        RsvpStatus.WAITLISTED,
        RsvpStatus.WAITLISTED,
    ]
    assert answer(meetup, members, True, "Ben") == [RsvpStatus.WAITLISTED]  # keeps its place
    run_jobs()
    outbox.clear()

    assert answer(meetup, members, False, "Ben", "Dan", "Dan") == [RsvpStatus.NOT_GOING] * 3
    assert names(meetup, RsvpStatus.GOING) == ["Ana"]
    assert names(meetup, RsvpStatus.WAITLISTED) == ["Cara"]
    run_jobs()
    assert outbox.messages() == []

    services.respond(meetup, members["Ana"], False)
    assert names(meetup, RsvpStatus.GOING) == ["Cara"]
    run_jobs()
    assert mail(outbox) == {email("Cara"): [PROMOTED_SUBJECT]}


def test_a_place_given_just_before_the_meetup_is_cancelled_is_not_announced(ctx, outbox, run_jobs):
    """The news of a place waits for a worker; a cancellation landing first wins."""
    chapter, members = chapter_of("Ana", "Ben", "Cara")
    meetup = make_meetup(chapter, members["Olga"], capacity=2)
    answer(meetup, members, True, "Ana", "Ben", "Cara")
    run_jobs()
    outbox.clear()

    answer(meetup, members, False, "Ana")
    assert names(meetup, RsvpStatus.GOING) == ["Ben", "Cara"]
    services.cancel_meetup(meetup)
    run_jobs()
    assert mail(outbox)[email("Cara")] == [f"Cancelled: {meetup.title}"]


# --- 5. concurrent changes ----------------------------------------------------------------------


def respond_together(app: Flask, meetup_id: int, answers: list[tuple[int, bool]]) -> list:
    """Each (member id, going) answered by its own thread and session, released at once."""
    barrier = threading.Barrier(len(answers))
    results: list = [None] * len(answers)
    errors: list[BaseException] = []

    def run(index: int, member_id: int, going: bool) -> None:
        try:
            with app.app_context():
                meetup = db.session.get(Meetup, meetup_id)
                member = db.session.get(Member, member_id)
                barrier.wait(timeout=10)
                results[index] = services.respond(meetup, member, going)
        except BaseException as error:  # reported in the test's own thread
            errors.append(error)
            barrier.abort()

    threads = [
        threading.Thread(target=run, args=(i, member_id, going))
        for i, (member_id, going) in enumerate(answers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    return results


def test_two_cancellations_at_once_promote_exactly_two_in_waitlist_order(app, outbox, run_jobs):
    """Two places given up at the same moment go to the first two waiting, no more."""
    for _ in range(3):  # several rounds, for different interleavings
        with app.app_context():
            if services.chapter_by_slug(SLUG) is None:
                chapter_of("Ana", "Ben", "Wes", "Wil", "Wyn")
            chapter = services.chapter_by_slug(SLUG)
            members = {m.member.display_name: m.member for m in chapter.memberships}
            meetup = make_meetup(chapter, members["Olga"], capacity=2)
            answer(meetup, members, True, "Ana", "Ben", "Wes", "Wil", "Wyn")
            assert names(meetup, RsvpStatus.WAITLISTED) == ["Wes", "Wil", "Wyn"]
            meetup_id, ids = meetup.id, {name: m.id for name, m in members.items()}
        run_jobs()
        outbox.clear()

        results = respond_together(app, meetup_id, [(ids["Ana"], False), (ids["Ben"], False)])

        assert results == [RsvpStatus.NOT_GOING, RsvpStatus.NOT_GOING]
        with app.app_context():
            meetup = db.session.get(Meetup, meetup_id)
            assert names(meetup, RsvpStatus.GOING) == ["Wes", "Wil"]
            assert names(meetup, RsvpStatus.WAITLISTED) == ["Wyn"]
        run_jobs()
        assert mail(outbox) == {email("Wes"): [PROMOTED_SUBJECT], email("Wil"): [PROMOTED_SUBJECT]}


def test_a_cancellation_and_a_new_rsvp_at_once_never_overfill(app):
    """A place given up while someone new says going goes to the waitlist first; never 3."""
    for _ in range(3):
        with app.app_context():
            if services.chapter_by_slug(SLUG) is None:
                chapter_of("Ana", "Ben", "Wes", "Cal", "Cid")
            chapter = services.chapter_by_slug(SLUG)
            members = {m.member.display_name: m.member for m in chapter.memberships}
            full = make_meetup(chapter, members["Olga"], capacity=2)
            answer(full, members, True, "Ana", "Ben", "Wes")
            no_queue = make_meetup(chapter, members["Olga"], capacity=2, title="Picnic day")
            answer(no_queue, members, True, "Ana", "Ben")
            ids = {name: m.id for name, m in members.items()}
            full_id, no_queue_id = full.id, no_queue.id

        respond_together(app, full_id, [(ids["Ana"], False), (ids["Cal"], True)])
        respond_together(app, no_queue_id, [(ids["Ana"], False), (ids["Cid"], True)])

        with app.app_context():
            full = db.session.get(Meetup, full_id)
            assert names(full, RsvpStatus.GOING) == ["Ben", "Wes"]
            assert names(full, RsvpStatus.WAITLISTED) == ["Cal"]
            no_queue = db.session.get(Meetup, no_queue_id)
            assert sorted(names(no_queue, RsvpStatus.GOING)) == ["Ben", "Cid"]
            assert names(no_queue, RsvpStatus.WAITLISTED) == []


def cancel_elsewhere(app: Flask, meetup_id: int) -> None:
    """An organiser's cancellation, committed through a connection of its own."""
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(
            update(Meetup)
            .where(Meetup.id == meetup_id)
            .values(state=MeetupState.CANCELLED, cancelled_at=utcnow())
        )


def test_an_rsvp_to_a_meetup_cancelled_while_it_waited_is_refused(app, ctx):
    """The meetup is read as scheduled, then cancelled before the RSVP takes its lock."""
    chapter, members = chapter_of("Ana")
    meetup = make_meetup(chapter, members["Olga"])
    assert meetup.is_open_for_rsvp  # read before the cancellation
    cancel_elsewhere(app, meetup.id)

    with pytest.raises(ChapterError, match="no longer takes RSVPs"):
        services.respond(meetup, members["Ana"], True)
    assert db.session.scalar(select(func.count()).select_from(Rsvp)) == 0


def test_an_edit_of_a_meetup_cancelled_while_it_waited_is_refused(app, ctx):
    """An edit read before a cancellation changes nothing once the cancellation is in."""
    chapter, members = chapter_of("Ana")
    meetup = make_meetup(chapter, members["Olga"])
    assert not meetup.is_cancelled
    cancel_elsewhere(app, meetup.id)

    with pytest.raises(ChapterError, match="cannot be changed"):
        services.edit_meetup(meetup, details_of(meetup, title="Moved planning night"))
    db.session.expire_all()
    assert (meetup.title, meetup.state) == ("Planning night", MeetupState.CANCELLED)


def test_a_meetup_is_not_moved_into_the_past(app, ctx):
    chapter, members = chapter_of("Ana")
    meetup = make_meetup(chapter, members["Olga"])
    starts = meetup.starts_at
    past = utcnow() - timedelta(days=1)
    with pytest.raises(ChapterError, match="moved to a time in the future"):
        services.edit_meetup(
            meetup, details_of(meetup, starts_at=past, ends_at=past + timedelta(hours=2))
        )
    db.session.expire_all()
    assert meetup.starts_at == starts
    assert services.edit_meetup(meetup, details_of(meetup, title="Planning night, again")) is False


def test_an_unchanged_time_in_an_hour_the_clocks_repeat_keeps_its_instant(app, outbox, run_jobs):
    """01:30 on the night Lisbon's clocks go back happens twice; a meetup at the second
    01:30, saved with only a new title, stays at the second and tells no one of a move."""
    second = datetime(2027, 10, 31, 1, 30, tzinfo=UTC)  # 01:30 WET, after 01:30 WEST
    with app.app_context():
        chapter, members = chapter_of("Ana")
        meetup = make_meetup(chapter, members["Olga"])
        meetup.set_times(second, second + timedelta(hours=2))
        db.session.commit()
        services.respond(meetup, members["Ana"], True)
        meetup_id = meetup.id
    run_jobs()
    outbox.clear()
    olga = log_in(app, "Olga")
    form = meetup_form(title="Planning night, renamed", starts="2027-10-31T01:30")
    form["ends"] = "2027-10-31T03:30"
    assert 'value="2027-10-31T01:30"' in olga.get(f"/meetups/{meetup_id}/edit").text
    saved = submit(olga, f"/meetups/{meetup_id}/edit", form)
    assert saved.status_code == 302
    run_jobs()
    with app.app_context():
        meetup = db.session.get(Meetup, meetup_id)
        assert (meetup.title, meetup.starts_at) == ("Planning night, renamed", second)
    assert outbox.messages() == []


def test_the_meetup_page_shows_a_waiting_members_place_in_the_queue(app):
    with app.app_context():
        chapter, members = chapter_of("Ana", "Ben", "Cara")
        meetup = make_meetup(chapter, members["Olga"], capacity=1)
        answer(meetup, members, True, "Ana", "Ben", "Cara")
        meetup_id = meetup.id
    page = log_in(app, "Cara").get(f"/meetups/{meetup_id}")
    assert "You are on the waitlist, number 2." in text_of(page.text)


def going_section(page_html: str) -> str:
    return page_html.split('id="going-heading"', 1)[1].split("</section>", 1)[0]


def test_only_the_chapters_members_see_who_is_going(app):
    """Members and organisers see the names going and waiting; a guest or an outsider
    sees how many."""
    with app.app_context():
        chapter, members = chapter_of("Ana", "Ben", "Cara")
        people("Rui")
        meetup = make_meetup(chapter, members["Olga"], capacity=2)
        answer(meetup, members, True, "Ana", "Ben", "Cara")
        meetup_id = meetup.id
    url = f"/meetups/{meetup_id}"

    for name in ("Olga", "Cara"):
        shown = going_section(log_in(app, name).get(url).text)
        assert re.findall(r"<li>(\w+)</li>", shown) == ["Ana", "Ben", "Cara"]
    for viewer in (app.test_client(), log_in(app, "Rui")):
        shown = going_section(viewer.get(url).text)
        assert "<li>" not in shown
        assert text_of(shown) == ">Going 2 going, 1 on the waitlist."


def test_the_meetup_page_survives_a_promotion_between_its_reads(app, monkeypatch):
    """Promoted after the page read the RSVP but before it read the waitlist, the member
    still gets the page, not an error."""
    with app.app_context():
        chapter, members = chapter_of("Ana", "Ben")
        meetup = make_meetup(chapter, members["Olga"], capacity=1)
        answer(meetup, members, True, "Ana", "Ben")
        meetup_id = meetup.id
    read_rsvp = services.rsvp_of

    def rsvp_then_promotion(meetup, member):
        rsvp = read_rsvp(meetup, member)
        with db.engine.begin() as connection:  # a place given up elsewhere, meanwhile
            connection.execute(
                update(Rsvp).where(Rsvp.id == rsvp.id).values(status=RsvpStatus.GOING)
            )
        return rsvp

    ben = log_in(app, "Ben")
    monkeypatch.setattr(services, "rsvp_of", rsvp_then_promotion)
    page = ben.get(f"/meetups/{meetup_id}")
    assert page.status_code == 200
    assert "You are on the waitlist." in text_of(page.text)


def test_a_stored_start_with_seconds_left_as_the_form_shows_it_keeps_its_instant(
    app, outbox, run_jobs
):
    """The form shows 18:30 for a start stored as 18:30:30; saved with only a new
    description, the meetup stays where it was and no one is told of a move."""
    with app.app_context():
        chapter, members = chapter_of("Ana")
        meetup = make_meetup(chapter, members["Olga"])
        starts = whole_minutes(6) + timedelta(seconds=30)
        set_times(meetup.id, starts)
        services.respond(meetup, members["Ana"], True)
        meetup_id = meetup.id
    run_jobs()
    outbox.clear()
    olga = log_in(app, "Olga")
    form = meetup_form(
        starts=local_input(starts),
        ends=local_input(starts + timedelta(hours=2)),
        description="We plan the next month, and eat.",
    )
    saved = submit(olga, f"/meetups/{meetup_id}/edit", form)
    assert flashes(olga, saved) == ["Saved."]
    run_jobs()
    with app.app_context():
        assert db.session.get(Meetup, meetup_id).starts_at == starts
    assert outbox.messages() == []


# --- 6. capacity changes -------------------------------------------------------------------------


def test_raising_the_capacity_promotes_from_the_waitlist_in_order(ctx, outbox, run_jobs):
    """Two more places go to the first two waiting, who are told; no one else hears."""
    chapter, members = chapter_of("Ana", "Ben", "Wes", "Wil", "Wyn")
    meetup = make_meetup(chapter, members["Olga"], capacity=2)
    answer(meetup, members, True, "Ana", "Ben", "Wes", "Wil", "Wyn")
    run_jobs()
    outbox.clear()

    assert services.edit_meetup(meetup, details_of(meetup, capacity=4)) is False
    assert names(meetup, RsvpStatus.GOING) == ["Ana", "Ben", "Wes", "Wil"]
    assert names(meetup, RsvpStatus.WAITLISTED) == ["Wyn"]
    run_jobs()
    assert mail(outbox) == {email("Wes"): [PROMOTED_SUBJECT], email("Wil"): [PROMOTED_SUBJECT]}

    services.edit_meetup(meetup, details_of(meetup, capacity=None))  # no limit any more
    assert names(meetup, RsvpStatus.WAITLISTED) == []
    assert "Wyn" in names(meetup, RsvpStatus.GOING)


def test_lowering_the_capacity_removes_no_one_but_waitlists_newcomers(ctx, outbox, run_jobs):
    """Below the number going, everyone keeps their place and new RSVPs wait."""
    chapter, members = chapter_of("Ana", "Ben", "Cara", "Dan", "Eva")
    meetup = make_meetup(chapter, members["Olga"], capacity=4)
    answer(meetup, members, True, "Ana", "Ben", "Cara")
    run_jobs()
    outbox.clear()

    services.edit_meetup(meetup, details_of(meetup, capacity=2))
    assert meetup.capacity == 2
    assert names(meetup, RsvpStatus.GOING) == ["Ana", "Ben", "Cara"]
    assert answer(meetup, members, True, "Dan") == [RsvpStatus.WAITLISTED]

    services.respond(meetup, members["Cara"], False)  # 2 going: still no free place
    assert names(meetup, RsvpStatus.GOING) == ["Ana", "Ben"]
    assert names(meetup, RsvpStatus.WAITLISTED) == ["Dan"]
    services.respond(meetup, members["Ben"], False)
    assert names(meetup, RsvpStatus.GOING) == ["Ana", "Dan"]
    run_jobs()
    assert mail(outbox) == {email("Dan"): [PROMOTED_SUBJECT]}


def failing_promotion_notices(monkeypatch) -> None:
    """Recording the news of a promotion fails, as a database error would."""
    real_notify = services.notify

    def notify(kind: str, **fields):
        if kind == "meetup_promoted":
            raise RuntimeError("the database went away")
        return real_notify(kind, **fields)

    monkeypatch.setattr(services, "notify", notify)


def full_meetup_with_cara_waiting(outbox, run_jobs) -> tuple[Meetup, dict]:
    """A meetup with one place: Ana has it, Cara waits; the mail so far is sent and cleared."""
    chapter, members = chapter_of("Ana", "Cara")
    meetup = make_meetup(chapter, members["Olga"], capacity=1)
    answer(meetup, members, True, "Ana", "Cara")
    run_jobs()
    outbox.clear()
    return meetup, members


def test_a_place_is_never_given_without_its_email(ctx, outbox, run_jobs, monkeypatch):
    """When the news of a promotion cannot be recorded, the cancellation that freed the
    place is not saved either, so nobody has a place they were never told of."""
    meetup, members = full_meetup_with_cara_waiting(outbox, run_jobs)
    failing_promotion_notices(monkeypatch)

    with pytest.raises(RuntimeError):
        services.respond(meetup, members["Ana"], False)
    db.session.rollback()
    assert names(meetup, RsvpStatus.GOING) == ["Ana"]
    assert names(meetup, RsvpStatus.WAITLISTED) == ["Cara"]

    monkeypatch.undo()
    services.respond(meetup, members["Ana"], False)
    run_jobs()
    assert names(meetup, RsvpStatus.GOING) == ["Cara"]
    assert mail(outbox) == {email("Cara"): [PROMOTED_SUBJECT]}


def test_leaving_a_chapter_gives_no_place_without_its_email(ctx, outbox, run_jobs, monkeypatch):
    """A member's place freed as they leave goes with the email to whoever gets it, and
    a leave that fails keeps both the membership and the place."""
    meetup, members = full_meetup_with_cara_waiting(outbox, run_jobs)
    failing_promotion_notices(monkeypatch)

    with pytest.raises(RuntimeError):
        services.leave(meetup.chapter, members["Ana"])
    db.session.rollback()
    assert meetup.chapter.membership_of(members["Ana"]) is not None
    assert names(meetup, RsvpStatus.GOING) == ["Ana"]
    assert names(meetup, RsvpStatus.WAITLISTED) == ["Cara"]

    monkeypatch.undo()
    services.leave(meetup.chapter, members["Ana"])
    run_jobs()
    assert names(meetup, RsvpStatus.GOING) == ["Cara"]
    assert mail(outbox) == {email("Cara"): [PROMOTED_SUBJECT]}


def test_places_a_larger_capacity_frees_are_given_with_their_email(
    ctx, outbox, run_jobs, monkeypatch
):
    """The edit is saved; the places it frees are given only with the news of them."""
    chapter, members = chapter_of("Ana", "Wes", "Wil")
    meetup = make_meetup(chapter, members["Olga"], capacity=1)
    answer(meetup, members, True, "Ana", "Wes", "Wil")
    run_jobs()
    outbox.clear()
    failing_promotion_notices(monkeypatch)

    with pytest.raises(RuntimeError):
        services.edit_meetup(meetup, details_of(meetup, capacity=3))
    db.session.rollback()
    assert meetup.capacity == 3
    assert names(meetup, RsvpStatus.WAITLISTED) == ["Wes", "Wil"]

    monkeypatch.undo()
    services.edit_meetup(meetup, details_of(meetup))
    run_jobs()
    assert names(meetup, RsvpStatus.GOING) == ["Ana", "Wes", "Wil"]
    assert mail(outbox) == each([email("Wes"), email("Wil")], [PROMOTED_SUBJECT])


def test_answers_and_the_waitlist_close_when_the_meetup_starts(app, ctx, outbox, run_jobs):
    """Half an hour in, no one can say they are going or not, no place goes to the waitlist
    (not even a larger room's), and the page says so; who came can still be marked, and
    stays on record when they leave the chapter."""
    chapter, members = chapter_of("Ana", "Bea", "Cara")
    meetup = make_meetup(chapter, members["Olga"], capacity=1)
    answer(meetup, members, True, "Ana", "Bea")  # Bea waits
    set_times(meetup.id, utcnow() - timedelta(minutes=30))
    run_jobs()
    outbox.clear()
    for name, going in (("Ana", False), ("Bea", False), ("Cara", True)):
        with pytest.raises(ChapterError, match="no longer takes RSVPs"):
            services.respond(meetup, members[name], going)
    services.edit_meetup(meetup, details_of(meetup, capacity=5))
    assert names(meetup, RsvpStatus.GOING) == ["Ana"]
    assert names(meetup, RsvpStatus.WAITLISTED) == ["Bea"]
    page = log_in(app, "Cara").get(f"/meetups/{meetup.id}").text
    assert "This meetup has begun, so answers are closed." in page
    assert f'action="/meetups/{meetup.id}/going"' not in page

    assert services.mark_attendance(meetup, {members["Ana"].id}) == 1
    services.leave(chapter, members["Ana"])
    ana = db.session.scalar(select(Rsvp).where(Rsvp.member_id == members["Ana"].id))
    assert (ana.status, ana.attended) == (RsvpStatus.GOING, True)
    run_jobs()
    assert outbox.messages() == []


def test_someone_marked_present_cannot_then_say_they_were_not_going(ctx):
    """Even when the meetup is moved to a later time after it began, reopening answers."""
    chapter, members = chapter_of("Ana")
    meetup = make_meetup(chapter, members["Olga"])
    answer(meetup, members, True, "Ana")
    set_times(meetup.id, utcnow() - timedelta(minutes=30))
    services.mark_attendance(meetup, {members["Ana"].id})
    later = utcnow() + timedelta(days=1)
    services.edit_meetup(
        meetup, details_of(meetup, starts_at=later, ends_at=later + timedelta(hours=2))
    )
    with pytest.raises(ChapterError, match="marked as present"):
        services.respond(meetup, members["Ana"], False)
    assert names(meetup, RsvpStatus.GOING) == ["Ana"]


def test_news_of_a_place_not_sent_before_the_meetup_began_is_dropped(ctx, outbox, run_jobs):
    """Cara was given Ana's place just before the start, but the email had not gone by
    then: a place at a meetup already under way is no news worth sending."""
    meetup, members = full_meetup_with_cara_waiting(outbox, run_jobs)
    services.respond(meetup, members["Ana"], False)
    assert names(meetup, RsvpStatus.GOING) == ["Cara"]
    set_times(meetup.id, utcnow() - timedelta(minutes=1))
    run_jobs()
    assert outbox.messages() == []


def test_meetup_mail_goes_only_to_addresses_that_are_confirmed(ctx, outbox, run_jobs):
    """Sam's address is not confirmed: the place freed for him is his in turn, but he is
    emailed neither about it nor about a change or a cancellation."""
    chapter, members = chapter_of("Ana", "Sam")
    meetup = make_meetup(chapter, members["Olga"], capacity=2)
    answer(meetup, members, True, "Olga", "Ana", "Sam")  # Sam waits
    members["Sam"].email_confirmed_at = None
    db.session.commit()
    run_jobs()
    outbox.clear()
    services.respond(meetup, members["Ana"], False)
    assert names(meetup, RsvpStatus.GOING) == ["Olga", "Sam"]
    services.edit_meetup(meetup, details_of(meetup, venue="Biblioteca de Alfama"))
    run_jobs()
    services.cancel_meetup(meetup)
    run_jobs()
    assert mail(outbox) == {email("Olga"): ["Changed: Planning night", "Cancelled: Planning night"]}


# --- 7. reminders -----------------------------------------------------------------------------


def test_reminders_are_scheduled_before_the_meetup_and_follow_it(app, ctx):
    """Jobs wait for a day and an hour before; moving the meetup moves them, cancelling drops."""
    chapter, members = chapter_of("Ana")
    meetup = make_meetup(chapter, members["Olga"], starts_in=timedelta(days=3))
    ids = reminder_jobs(meetup.id)
    due = scheduled_jobs(app)
    assert_due(due[ids["24h"]], meetup.starts_at - timedelta(hours=24))
    assert_due(due[ids["1h"]], meetup.starts_at - timedelta(hours=1))

    later = meetup.starts_at + timedelta(days=2, hours=3)
    services.edit_meetup(
        meetup, details_of(meetup, starts_at=later, ends_at=later + timedelta(hours=2))
    )
    due = scheduled_jobs(app)
    assert_due(due[ids["24h"]], later - timedelta(hours=24))
    assert_due(due[ids["1h"]], later - timedelta(hours=1))

    services.edit_meetup(meetup, details_of(meetup, title="Planning night, moved"))
    assert_due(scheduled_jobs(app)[ids["24h"]], later - timedelta(hours=24))

    services.cancel_meetup(meetup)
    assert set(ids.values()).isdisjoint(scheduled_jobs(app))

    soon = make_meetup(chapter, members["Olga"], starts_in=timedelta(minutes=30))
    assert set(reminder_jobs(soon.id).values()).isdisjoint(scheduled_jobs(app))
    today = make_meetup(chapter, members["Olga"], starts_in=timedelta(hours=5))
    today_ids = reminder_jobs(today.id)
    assert today_ids["24h"] not in scheduled_jobs(app)
    assert_due(scheduled_jobs(app)[today_ids["1h"]], today.starts_at - timedelta(hours=1))


def test_those_going_get_each_reminder_once(app, ctx, outbox, run_jobs):
    """The day-before reminder reaches only those going, once, however often it runs."""
    chapter, members = chapter_of("Ana", "Ben", "Cara", "Dan")
    meetup = make_meetup(chapter, members["Olga"], capacity=2)
    answer(meetup, members, True, "Ana", "Ben", "Cara")
    answer(meetup, members, False, "Dan")
    ids = reminder_jobs(meetup.id)
    run_jobs()
    outbox.clear()

    set_times(meetup.id, utcnow() + timedelta(hours=24) - timedelta(minutes=5))
    assert release_scheduled(app, [ids["24h"]]) == 1
    run_jobs()
    going = {email("Ana"), email("Ben")}
    assert mail(outbox) == each(going, ["Reminder: Planning night tomorrow"])

    assert services.send_reminder(meetup.id, "24h") is False
    assert release_scheduled(app, [ids["24h"]]) == 0
    enqueue(chapter_jobs.send_reminder, meetup.id, "24h")  # the same job run a second time
    run_jobs()
    assert len(outbox.messages()) == 2
    assert ids["1h"] in scheduled_jobs(app)

    set_times(meetup.id, utcnow() + timedelta(minutes=58))
    assert release_scheduled(app, [ids["1h"]]) == 1
    run_jobs()
    assert services.send_reminder(meetup.id, "1h") is False
    run_jobs()
    assert mail(outbox) == each(
        going, ["Reminder: Planning night tomorrow", "Reminder: Planning night in an hour"]
    )


def test_no_reminder_for_a_cancelled_or_past_meetup(app, ctx, outbox, run_jobs):
    """A cancelled meetup and one already over send no reminder, by job or by sweep."""
    chapter, members = chapter_of("Ana", "Ben")
    cancelled = make_meetup(chapter, members["Olga"])
    past = make_meetup(chapter, members["Olga"], title="Old night")
    for meetup in (cancelled, past):
        answer(meetup, members, True, "Ana", "Ben")
    services.cancel_meetup(cancelled)
    set_times(cancelled.id, utcnow() + timedelta(hours=23, minutes=55))
    set_times(past.id, utcnow() - timedelta(hours=3))
    run_jobs()
    outbox.clear()

    for meetup_id in (cancelled.id, past.id):
        for lead in ("24h", "1h"):
            assert services.send_reminder(meetup_id, lead) is False
            enqueue(chapter_jobs.send_reminder, meetup_id, lead)
    assert services.send_due_reminders() == 0
    assert release_scheduled(app, [*reminder_jobs(cancelled.id).values()]) == 0
    run_jobs()
    assert outbox.messages() == []


def test_the_periodic_sweep_sends_a_due_reminder_exactly_once(app, ctx, outbox, run_jobs):
    """When the scheduled jobs are lost, the sweep sends the due reminder, once."""
    chapter, members = chapter_of("Ana", "Ben")
    meetup = make_meetup(chapter, members["Olga"])
    later = make_meetup(chapter, members["Olga"], title="Later night")
    for m in (meetup, later):
        answer(m, members, True, "Ana")
    services.unschedule_reminders(meetup)  # as if Redis had lost them
    set_times(meetup.id, utcnow() + timedelta(hours=23, minutes=50))
    run_jobs()
    outbox.clear()

    assert services.send_due_reminders() == 1
    assert chapter_jobs.send_due_reminders() == 0
    run_jobs()
    assert mail(outbox) == {email("Ana"): ["Reminder: Planning night tomorrow"]}


def anas_news(frequency: Frequency) -> tuple[Meetup, dict]:
    """Ana takes meetup news at ``frequency`` and is going to a meetup; its announcement
    has been dealt with."""
    chapter, members = chapter_of("Ana")
    ana = members["Ana"]
    set_preferences(subscriber_of(ana.id, ana.email), {Category.MEETUPS: frequency})
    meetup = make_meetup(chapter, members["Olga"])
    answer(meetup, members, True, "Ana")
    return meetup, members


def test_a_digest_reader_hears_of_a_meetup_she_is_going_to_at_once(
    app, ctx, outbox, run_jobs, monkeypatch
):
    """Ana takes meetup news in a daily digest: the announcement waits for it, but its
    reminder, a change of time and a cancellation come at once, as tomorrow's digest
    would bring them too late."""
    meetup, _ = anas_news(Frequency.DAILY)
    run_jobs()
    assert email("Ana") not in mail(outbox)  # the announcement is held
    set_times(meetup.id, utcnow() + timedelta(minutes=58))
    assert release_scheduled(app, [reminder_jobs(meetup.id)["1h"]]) == 1
    run_jobs()
    assert mail(outbox)[email("Ana")] == ["Reminder: Planning night in an hour"]
    later = meetup.starts_at + timedelta(days=1)
    services.edit_meetup(
        meetup, details_of(meetup, starts_at=later, ends_at=later + timedelta(hours=2))
    )
    run_jobs()
    assert mail(outbox)[email("Ana")][-1] == "Changed: Planning night"
    held = db.session.scalars(
        select(Notification.kind)
        .join(Delivery)
        .where(Delivery.email == email("Ana"), Delivery.state == DeliveryState.DIGEST)
    ).all()
    assert held == ["meetup_new"]
    services.cancel_meetup(db.session.get(Meetup, meetup.id))
    run_jobs()
    assert mail(outbox)[email("Ana")][-1] == "Cancelled: Planning night"

    next_morning = (utcnow() + timedelta(days=1)).replace(hour=7, minute=0)
    monkeypatch.setattr(notification_services, "utcnow", lambda: next_morning)
    assert notification_services.send_daily_digests() == 0  # a cancelled meetup is old news


def test_a_reader_who_turned_meetup_news_off_gets_no_reminder(app, ctx, outbox, run_jobs):
    meetup, _ = anas_news(Frequency.OFF)
    set_times(meetup.id, utcnow() + timedelta(minutes=58))
    assert release_scheduled(app, [reminder_jobs(meetup.id)["1h"]]) == 1
    services.cancel_meetup(db.session.get(Meetup, meetup.id))
    run_jobs()
    assert email("Ana") not in mail(outbox)


def test_a_meetup_scheduled_at_short_notice_gets_only_the_reminders_still_ahead(
    app, ctx, outbox, run_jobs
):
    """A reminder whose time had passed when the meetup was scheduled is never sent."""
    chapter, members = chapter_of("Ana")
    tomorrow = make_meetup(chapter, members["Olga"], starts_in=timedelta(hours=23))
    shortly = make_meetup(
        chapter, members["Olga"], starts_in=timedelta(minutes=45), title="Quick huddle"
    )
    for meetup in (tomorrow, shortly):
        answer(meetup, members, True, "Ana")
    waiting = scheduled_jobs(app)
    assert reminder_jobs(tomorrow.id)["24h"] not in waiting
    assert_due(waiting[reminder_jobs(tomorrow.id)["1h"]], tomorrow.starts_at - timedelta(hours=1))
    assert set(reminder_jobs(shortly.id).values()).isdisjoint(waiting)
    run_jobs()
    outbox.clear()

    assert services.send_due_reminders() == 0
    run_jobs()
    assert outbox.messages() == []


def test_a_meetup_moved_to_short_notice_gets_only_the_reminders_still_ahead(
    app, ctx, outbox, run_jobs
):
    """The news of the move tells the new time; no day-before reminder follows it."""
    chapter, members = chapter_of("Ana")
    meetup = make_meetup(chapter, members["Olga"], starts_in=timedelta(days=3))
    db.session.execute(
        update(Meetup).where(Meetup.id == meetup.id).values(created_at=utcnow() - timedelta(days=3))
    )
    db.session.commit()
    answer(meetup, members, True, "Ana")
    run_jobs()
    outbox.clear()

    soon = utcnow() + timedelta(hours=23)
    services.edit_meetup(
        meetup, details_of(meetup, starts_at=soon, ends_at=soon + timedelta(hours=2))
    )
    waiting = scheduled_jobs(app)
    assert reminder_jobs(meetup.id)["24h"] not in waiting
    assert reminder_jobs(meetup.id)["1h"] in waiting
    assert services.send_due_reminders() == 0
    run_jobs()
    assert mail(outbox) == {email("Ana"): ["Changed: Planning night"]}

    hour_before = soon - timedelta(hours=1)
    assert services.reminder_is_due(meetup, "1h", now=hour_before)
    assert not services.reminder_is_due(meetup, "24h", now=utcnow())


# --- 8. time zones and the clock change ------------------------------------------------------


def next_spring_forward() -> date:
    """The next last Sunday of March (when Lisbon moves to summer time) at least a week away."""
    year = utcnow().year
    while True:
        sunday = date(year, 3, 31) - timedelta(days=(date(year, 3, 31).weekday() + 1) % 7)
        if sunday > utcnow().date() + timedelta(days=7):
            return sunday
        year += 1


SPRING = next_spring_forward()
EVE = SPRING - timedelta(days=1)  # the Saturday before the change
WEEK_AFTER = SPRING + timedelta(days=6)


def test_a_meetup_across_the_clock_change_keeps_its_local_times(app):
    """Local 18:30 WET to 20:30 WEST next day is stored as 18:30 and 19:30 UTC."""
    with app.app_context():
        chapter_of("Ana")
    olga = log_in(app, "Olga")
    form = meetup_form(starts=f"{EVE}T18:30", ends=f"{SPRING}T20:30")
    meetup_id = meetup_id_of(submit(olga, f"/chapters/{SLUG}/meetups/new", form))
    with app.app_context():
        meetup = db.session.get(Meetup, meetup_id)
        assert meetup.starts_at == datetime.combine(EVE, time(18, 30), UTC)
        assert meetup.ends_at == datetime.combine(SPRING, time(19, 30), UTC)

    page = olga.get(f"/meetups/{meetup_id}").text
    eve = f"Saturday {EVE.day} March {EVE.year}, 18:30 WET"
    assert f"{eve} to Sunday {SPRING.day} March, 20:30 WEST" in page
    assert eve in olga.get(f"/chapters/{SLUG}").text
    edit = olga.get(f"/meetups/{meetup_id}/edit").text
    assert f'value="{EVE}T18:30"' in edit and f'value="{SPRING}T20:30"' in edit


def test_a_meetup_the_week_after_the_change_is_on_summer_time(app):
    """18:30 in Lisbon the Saturday after the change is 17:30 UTC, shown as 18:30 WEST."""
    with app.app_context():
        chapter_of("Ana")
    olga = log_in(app, "Olga")
    form = meetup_form(starts=f"{WEEK_AFTER}T18:30", ends=f"{WEEK_AFTER}T20:30")
    meetup_id = meetup_id_of(submit(olga, f"/chapters/{SLUG}/meetups/new", form))
    with app.app_context():
        meetup = db.session.get(Meetup, meetup_id)
        assert meetup.starts_at == datetime.combine(WEEK_AFTER, time(17, 30), UTC)
        assert meetup.ends_at == datetime.combine(WEEK_AFTER, time(19, 30), UTC)
    shown = f"Saturday {WEEK_AFTER.day} {WEEK_AFTER:%B} {WEEK_AFTER.year}, 18:30 WEST to 20:30 WEST"
    assert shown in olga.get(f"/meetups/{meetup_id}").text


@pytest.mark.parametrize(
    ("starts", "ends", "field", "missing"),
    [
        (f"{SPRING}T01:30", f"{SPRING}T03:00", "starts", f"01:30 on {SPRING.day} March"),
        (f"{SPRING}T00:15", f"{SPRING}T01:45", "ends", f"01:45 on {SPRING.day} March"),
    ],
    ids=["start in the gap", "end in the gap"],
)
def test_a_time_the_clocks_skip_is_refused(app, starts, ends, field, missing):
    """A local time inside the spring-forward gap answers 422 and says why, beside the
    field that holds it."""
    with app.app_context():
        chapter_of("Ana")
    olga = log_in(app, "Olga")
    form = meetup_form(starts=starts, ends=ends)
    response = submit(olga, f"/chapters/{SLUG}/meetups/new", form)
    assert response.status_code == 422
    message = (
        f"{missing} does not exist in Europe/Lisbon: the clocks go forward then. "
        "Please choose another time."
    )
    assert message in error_summary(response.text)
    assert field_error(response.text, field) == message
    assert 'aria-invalid="true"' in field_input(response.text, field)
    with app.app_context():
        assert meetup_count() == 0


def test_a_day_before_reminder_names_the_day_as_the_chapters_calendar_has_it(ctx):
    """Sent on time, after local midnight, or across the spring clock change."""
    chapter, members = chapter_of("Ana")
    monday_night = datetime.combine(SPRING + timedelta(days=1), time(0, 30), LISBON)
    meetup = make_meetup(chapter, members["Olga"], starts_in=monday_night - utcnow())
    on_time = meetup.starts_at - timedelta(hours=24)
    assert on_time.astimezone(LISBON).date() == EVE  # Saturday, 23:30 WET
    assert services.reminder_lead(meetup, "24h", now=on_time) == "on Monday"
    assert services.reminder_lead(meetup, "24h", now=on_time + timedelta(hours=1)) == "tomorrow"
    assert services.reminder_lead(meetup, "24h", now=meetup.starts_at) == "today"
    assert services.reminder_lead(meetup, "1h", now=on_time) == "in an hour"


def test_a_decided_proposal_is_dated_in_the_chapters_time_zone(app):
    """Closed late in the evening UTC, a proposal of an Auckland chapter is dated the next
    day on the chapter page, as on the proposal's own page."""
    with app.app_context():
        chapter, members = chapter_of("Ana", "Ben", time_zone="Pacific/Auckland")
        proposal = services.open_proposal(
            chapter,
            members["Olga"],
            title="Meet every second week",
            details="Planning nights every other Tuesday.",
            closes_at=utcnow() + timedelta(days=2),
        )
        closed_at = datetime(2025, 1, 15, 20, 0, tzinfo=UTC)  # 09:00 on the 16th in Auckland
        db.session.execute(
            update(Proposal)
            .where(Proposal.id == proposal.id)
            .values(state=ProposalState.CLOSED, outcome=Outcome.PASSED, closed_at=closed_at)
        )
        db.session.commit()
    page = text_of(app.test_client().get(f"/chapters/{SLUG}").text)
    assert "Meet every second week: Passed 16 January 2025" in page


# --- 9. calendars ---------------------------------------------------------------------------


def whole_minutes(days: int, hour: int = 18) -> datetime:
    return (utcnow() + timedelta(days=days)).replace(hour=hour, minute=30, second=0, microsecond=0)


def test_a_meetup_downloads_as_an_icalendar_event(app, client):
    """The .ics file parses back to the stored UTC times, title, place and a UID."""
    starts = whole_minutes(5)
    with app.app_context():
        chapter, members = chapter_of("Ana")
        meetup_id = make_meetup(
            chapter, members["Olga"], starts_at=starts, ends_at=starts + timedelta(hours=2)
        ).id
    response = client.get(f"/meetups/{meetup_id}.ics")
    [event] = events_in(response)
    assert event.decoded("dtstart") == starts
    assert event.decoded("dtend") == starts + timedelta(hours=2)
    assert str(event["summary"]) == "Planning night"
    assert str(event["location"]) == "Café Lua, Rua dos Remédios 12, Lisbon"
    assert str(event["uid"]).startswith(f"meetup-{meetup_id}@")
    assert str(event["url"]).endswith(f"/meetups/{meetup_id}")
    assert client.get("/meetups/999999.ics").status_code == 404


def test_a_calendar_sees_a_new_revision_for_a_change_it_shows_and_not_for_answers(app, client):
    """SEQUENCE rises when the title or time changes and when the meetup is cancelled; an
    RSVP or a capacity change leaves it be. The UID names this site by its address."""
    with app.app_context():
        chapter, members = chapter_of("Ana", "Ben")
        meetup = make_meetup(chapter, members["Olga"], capacity=10)
        meetup_id = meetup.id

    def shown() -> tuple[int, str]:
        [event] = events_in(client.get(f"/meetups/{meetup_id}.ics"))
        return int(event["sequence"]), str(event["uid"])

    assert shown() == (0, f"meetup-{meetup_id}@localhost")
    with app.app_context():
        meetup = db.session.get(Meetup, meetup_id)
        services.respond(meetup, member_by_email(email("Ana")), True)
        services.respond(meetup, member_by_email(email("Ben")), False)
        services.edit_meetup(meetup, details_of(meetup, capacity=20))
    assert shown()[0] == 0
    with app.app_context():
        meetup = db.session.get(Meetup, meetup_id)
        services.edit_meetup(meetup, details_of(meetup, title="Planning night, moved upstairs"))
        later = meetup.starts_at + timedelta(hours=1)
        services.edit_meetup(
            meetup, details_of(meetup, starts_at=later, ends_at=later + timedelta(hours=2))
        )
    assert shown()[0] == 2
    with app.app_context():
        services.cancel_meetup(db.session.get(Meetup, meetup_id))
    assert shown()[0] == 3


def test_an_online_meetups_link_is_for_the_chapters_members_only(app, client):
    """Strangers see that it is online, on its page, in the public calendars and in the
    API; members see the link there and in their own feed."""
    link = "https://meet.example.org/planning"
    with app.app_context():
        chapter, members = chapter_of("Ana")
        meetup = make_meetup(chapter, members["Olga"], online_link=link)
        meetup_id = meetup.id
        services.respond(meetup, members["Ana"], True)
        rui = make_member(email("Rui"), "Rui Outsider")
        ana_token = create_api_token(members["Ana"], "script")
        rui_token = create_api_token(rui, "script")
        ana_feed = f"/calendar/{services.calendar_secret(members['Ana'])}.ics"

    def location(response) -> str:
        return str(events_in(response)[0]["location"])

    stranger, outsider, ana = client, log_in(app, "Rui"), log_in(app, "Ana")
    for viewer in (stranger, outsider):
        page = viewer.get(f"/meetups/{meetup_id}").text
        assert link not in page and "The link is shown to members of" in page
        assert location(viewer.get(f"/meetups/{meetup_id}.ics")).endswith(", online")
    assert link not in client.get(f"/chapters/{SLUG}/calendar.ics").text
    assert link in ana.get(f"/meetups/{meetup_id}").text
    assert location(ana.get(f"/meetups/{meetup_id}.ics")).endswith(link)
    assert location(client.get(ana_feed)).endswith(link)

    def api_link(token: str | None) -> str | None:
        headers = {TOKEN_HEADER: token} if token else {}
        return client.get(f"/api/v1/events/{meetup_id}", headers=headers).json.get("online_link")

    assert (api_link(None), api_link(rui_token), api_link(ana_token)) == (None, None, link)


def test_the_chapter_feed_lists_the_chapters_meetups(app, client):
    """The chapter's calendar has its meetups and no other chapter's."""
    with app.app_context():
        chapter, members = chapter_of("Ana")
        first = make_meetup(chapter, members["Olga"], title="Planning night")
        second = make_meetup(
            chapter, members["Olga"], starts_in=timedelta(days=9), title="Picnic day"
        )
        porto = make_chapter(members["Ana"], name="Porto Riders", city="Porto")
        make_meetup(porto, members["Ana"], title="Porto assembly")
        uids = {f"meetup-{first.id}@", f"meetup-{second.id}@"}
        starts = {first.starts_at.replace(microsecond=0), second.starts_at.replace(microsecond=0)}
    events = events_in(client.get(f"/chapters/{SLUG}/calendar.ics"))
    assert sorted(str(e["summary"]) for e in events) == ["Picnic day", "Planning night"]
    assert {str(e["uid"]).split("@")[0] + "@" for e in events} == uids
    assert {e.decoded("dtstart") for e in events} == starts
    assert client.get("/chapters/nowhere/calendar.ics").status_code == 404


def feed_path(client) -> str:
    page = client.get("/calendar")
    assert page.status_code == 200
    link = re.search(r'id="feed" value="([^"]+)"', page.text).group(1)
    assert re.fullmatch(r"http://localhost/calendar/[\w-]+\.ics", link), link
    return link.removeprefix("http://localhost")


def test_two_first_visits_to_the_calendar_page_at_once_share_one_feed(app):
    """The other visit saves the feed's secret between this one's look and its insert:
    this one shows that secret instead of failing."""
    with app.app_context():
        make_member(email("Olga"), "Olga")

    def first_visit_elsewhere() -> None:
        with app.app_context():
            services.calendar_secret(member_by_email(email("Olga")))

    with app.app_context():
        olga = member_by_email(email("Olga"))
        with once_a_statement_runs("FROM calendar_keys", "after", first_visit_elsewhere):
            secret = services.calendar_secret(olga)
        assert db.session.scalars(select(CalendarKey.secret)).all() == [secret]


def test_a_members_private_feed_lists_their_meetups_until_reset(app):
    """The personal feed lists meetups going to or waiting for; a reset retires its address."""
    with app.app_context():
        chapter, members = chapter_of("Ana", "Ben")
        going = make_meetup(chapter, members["Olga"], title="Going night")
        waiting = make_meetup(chapter, members["Olga"], title="Waiting night", capacity=1)
        declined = make_meetup(chapter, members["Olga"], title="Declined night")
        make_meetup(chapter, members["Olga"], title="Unanswered night")
        services.respond(going, members["Ana"], True)
        services.respond(waiting, members["Ben"], True)
        services.respond(waiting, members["Ana"], True)
        services.respond(declined, members["Ana"], True)
        services.respond(declined, members["Ana"], False)
    ana = log_in(app, "Ana")
    path = feed_path(ana)
    assert feed_path(ana) == path  # stable until reset

    guest = app.test_client()
    events = events_in(guest.get(path))
    assert sorted(str(e["summary"]) for e in events) == ["Going night", "Waiting night"]
    ben_events = events_in(guest.get(feed_path(log_in(app, "Ben"))))
    assert [str(e["summary"]) for e in ben_events] == ["Waiting night"]
    assert guest.get("/calendar/not-a-real-secret.ics").status_code == 404

    reset = post_with_token(ana, "/calendar/reset")
    assert flashes(ana, reset) == ["Your calendar has a new address; the old one no longer works."]
    assert guest.get(path).status_code == 404
    new_path = feed_path(ana)
    assert new_path != path
    assert len(events_in(guest.get(new_path))) == 2


def test_a_new_password_retires_the_feed_address_made_with_the_old_one(app):
    """Whoever knew the old password may have copied the address: it stops working."""
    with app.app_context():
        chapter, members = chapter_of("Ana")
        services.respond(make_meetup(chapter, members["Olga"]), members["Ana"], True)
    ana = log_in(app, "Ana")
    path = feed_path(ana)
    guest = app.test_client()
    assert len(events_in(guest.get(path))) == 1
    with app.app_context():
        change_password(member_by_email(email("Ana")), "another long passphrase")
    assert guest.get(path).status_code == 404
    new_path = feed_path(log_in(app, "Ana", password="another long passphrase"))
    assert new_path != path and len(events_in(guest.get(new_path))) == 1


def test_a_members_feed_shows_a_meetup_they_wait_for_as_tentative(app):
    """Going is confirmed; on the waitlist, a place is not sure yet."""
    with app.app_context():
        chapter, members = chapter_of("Ana")
        going = make_meetup(chapter, members["Olga"], title="Going night")
        waiting = make_meetup(chapter, members["Olga"], title="Waiting night", capacity=1)
        services.respond(going, members["Ana"], True)
        services.respond(waiting, members["Olga"], True)
        services.respond(waiting, members["Ana"], True)
    ana = log_in(app, "Ana")
    events = events_in(app.test_client().get(feed_path(ana)))
    assert {str(e["summary"]): str(e["status"]) for e in events} == {
        "Going night": "CONFIRMED",
        "Waiting night": "TENTATIVE",
    }


# --- 10. attendance ---------------------------------------------------------------------------


def test_organisers_mark_attendance_of_those_going_once_it_started(app):
    """Attendance is refused before the start; afterwards only RSVPs going are marked."""
    with app.app_context():
        chapter, members = chapter_of("Ana", "Ben", "Cara", "Dan")
        meetup = make_meetup(chapter, members["Olga"], capacity=2)
        answer(meetup, members, True, "Ana", "Ben", "Cara")
        answer(meetup, members, False, "Dan")
        meetup_id = meetup.id
        ids = {name: m.id for name, m in members.items()}
    olga = log_in(app, "Olga")
    url = f"/meetups/{meetup_id}/attendance"
    came = {"attended": [str(ids[n]) for n in ("Ana", "Cara", "Dan")]}

    early = submit(olga, url, came)
    assert early.status_code == 422
    assert page_title(early.text).startswith("Error: ")
    assert "Attendance can be marked once the meetup has started." in error_summary(early.text)
    with app.app_context():
        assert db.session.scalars(select(Rsvp.attended)).all() == [False] * 4

    with app.app_context():
        set_times(meetup_id, utcnow() - timedelta(hours=1))
    form = olga.get(url).text
    listed = re.findall(r'name="attended" value="(\d+)"', form)
    assert listed == [str(ids["Ana"]), str(ids["Ben"])]
    saved = submit(olga, url, came)
    assert saved.headers["Location"] == f"/meetups/{meetup_id}"
    assert flashes(olga, saved) == ["Attendance saved: 1 came."]
    with app.app_context():
        attended = db.session.execute(
            select(Member.display_name, Rsvp.attended).join(Member).order_by(Rsvp.id)
        ).all()
        assert dict(attended) == {"Ana": True, "Ben": False, "Cara": False, "Dan": False}
    assert "Ana (attended)" in olga.get(f"/meetups/{meetup_id}").text

    # Sent again without Ana, the record follows the form.
    assert flashes(olga, submit(olga, url, {"attended": [str(ids["Ben"])]})) == [
        "Attendance saved: 1 came."
    ]
    with app.app_context():
        assert db.session.scalars(select(Rsvp.member_id).where(Rsvp.attended.is_(True))).all() == [
            ids["Ben"]
        ]


def test_an_attendance_value_too_long_to_be_a_member_id_is_ignored(app):
    """A tampered checkbox value thousands of digits long counts no one, and no error."""
    with app.app_context():
        chapter, members = chapter_of("Ana", "Ben")
        meetup = make_meetup(chapter, members["Olga"])
        answer(meetup, members, True, "Ana", "Ben")
        set_times(meetup.id, utcnow() - timedelta(hours=1))
        meetup_id, ana_id = meetup.id, members["Ana"].id
    olga = log_in(app, "Olga")
    saved = submit(olga, f"/meetups/{meetup_id}/attendance", {"attended": ["9" * 5000, ana_id]})
    assert flashes(olga, saved) == ["Attendance saved: 1 came."]


# --- 11. who hears about changes ------------------------------------------------------------------


@pytest.fixture
def gathering(ctx, outbox, run_jobs):
    """A meetup for two: Ana and Ben going, Cara waiting, Dan not going, Eva silent."""
    chapter, members = chapter_of("Ana", "Ben", "Cara", "Dan", "Eva")
    meetup = make_meetup(chapter, members["Olga"], capacity=2)
    answer(meetup, members, True, "Ana", "Ben", "Cara")
    answer(meetup, members, False, "Dan")
    run_jobs()
    outbox.clear()
    return meetup


ATTENDEES = (email("Ana"), email("Ben"), email("Cara"))


def test_a_new_time_is_told_to_those_going_and_waiting_only(gathering, outbox, run_jobs):
    """A moved meetup emails going and waitlisted, not those not going or other members."""
    later = gathering.starts_at + timedelta(days=1)
    changed = services.edit_meetup(
        gathering, details_of(gathering, starts_at=later, ends_at=later + timedelta(hours=3))
    )
    assert changed is True
    run_jobs()
    assert mail(outbox) == each(ATTENDEES, ["Changed: Planning night"])
    assert f"When: {services.when_text(gathering)}" in text_body(outbox.last_to(email("Cara")))


def test_a_new_place_is_told_to_those_going_and_waiting_only(gathering, outbox, run_jobs):
    """A new venue, address or link emails going and waitlisted only."""
    for change in (
        {"venue": "Biblioteca de Alfama"},
        {"address": "Rua da Regueira 40, Lisbon"},
        {"online_link": "https://meet.example.org/planning"},
    ):
        outbox.clear()
        assert services.edit_meetup(gathering, details_of(gathering, **change)) is True
        run_jobs()
        assert mail(outbox) == each(ATTENDEES, ["Changed: Planning night"]), change
        assert f"Where: {gathering.place}" in text_body(outbox.last_to(email("Ana")))


def test_a_new_description_or_title_alone_is_told_to_no_one(gathering, outbox, run_jobs):
    """Changing only the words of a meetup sends nothing."""
    changed = services.edit_meetup(
        gathering, details_of(gathering, description="Bring your questions about the rules.")
    )
    assert changed is False
    run_jobs()
    assert outbox.messages() == []
    assert gathering.description == "Bring your questions about the rules."


def test_a_cancelled_meetup_is_told_to_those_going_and_waiting(gathering, outbox, run_jobs):
    """Cancelling emails going and waitlisted, once."""
    services.cancel_meetup(gathering)
    run_jobs()
    assert mail(outbox) == each(ATTENDEES, ["Cancelled: Planning night"])
    with pytest.raises(ChapterError, match="already cancelled"):
        services.cancel_meetup(gathering)
    with pytest.raises(ChapterError, match="no longer takes RSVPs"):
        services.respond(gathering, db.session.get(Member, gathering.created_by_id), True)


def test_a_new_meetup_is_told_to_the_chapters_members(ctx, outbox, run_jobs):
    """Every other member of the chapter hears of a new meetup; outsiders do not."""
    chapter, members = chapter_of("Ana", "Ben")
    people("Rui")
    run_jobs()
    outbox.clear()
    make_meetup(chapter, members["Olga"])
    run_jobs()
    received = mail(outbox)
    for name in ("Ana", "Ben"):
        assert received.pop(email(name)) == ["New meetup: Planning night"]
    assert set(received) <= {email("Olga")}  # the organiser may get a copy, no one else
    assert "Lisbon Hosts and Riders has a new meetup" in text_body(outbox.last_to(email("Ana")))


def test_a_meetup_form_sent_twice_schedules_one_meetup_told_once(app, outbox, run_jobs):
    """A double submit of the new-meetup form gives the same meetup; a different one
    moments later is a meetup of its own."""
    with app.app_context():
        chapter_of("Ana")
    olga = log_in(app, "Olga")
    url = f"/chapters/{SLUG}/meetups/new"
    form = {"csrf_token": csrf_token(olga.get(url).text), **meetup_form()}
    first, second = meetup_id_of(olga.post(url, data=form)), meetup_id_of(olga.post(url, data=form))
    assert first == second
    other = meetup_id_of(olga.post(url, data={**form, "title": "Picnic day"}))
    assert other != first
    run_jobs()
    assert mail(outbox)[email("Ana")] == ["New meetup: Planning night", "New meetup: Picnic day"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Meetup)) == 2


def chapter_news(kind: str, chapter: Chapter, members: dict[str, Member], meetup: Meetup):
    """Something Ben, a member going to ``meetup``, is told of."""
    if kind == "chapter active":
        services.join(chapter, people("Cara")[0])
    elif kind == "new meetup":
        make_meetup(chapter, members["Olga"], title="Picnic day")
    elif kind == "changed meetup":
        services.edit_meetup(meetup, details_of(meetup, venue="Biblioteca de Alfama"))
    else:
        services.cancel_meetup(meetup)


@pytest.mark.parametrize("kind", ["chapter active", "new meetup"])
def test_chapter_news_held_for_a_digest_is_left_out_once_the_reader_left(
    ctx, outbox, run_jobs, kind
):
    """Ben takes chapter news in a daily digest and leaves the chapter before it goes: its
    news is no longer his, so he gets no digest."""
    chapter, members = chapter_of("Ben")  # forming: one more makes it active
    meetup = make_meetup(chapter, members["Olga"])
    services.respond(meetup, members["Ben"], True)
    run_jobs()
    ben = members["Ben"]
    set_preferences(subscriber_of(ben.id, ben.email), {Category.MEETUPS: Frequency.DAILY})
    chapter_news(kind, chapter, members, meetup)
    run_jobs()
    held = select(func.count()).where(
        Delivery.email == email("Ben"), Delivery.state == DeliveryState.DIGEST
    )
    assert db.session.scalar(held) == 1
    outbox.clear()
    services.leave(chapter, ben)
    assert notification_services.send_daily_digests() == 0
    run_jobs()
    assert email("Ben") not in mail(outbox)


# --- 12. bad input on the meetup form ------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"starts": f"{LATER}T20:00", "ends": f"{LATER}T18:00"},
            "ends",
            "The end must be after the start.",
        ),
        (
            {"starts": f"{LATER}T20:00", "ends": f"{LATER}T20:00"},
            "ends",
            "The end must be after the start.",
        ),
        (
            {"venue": "", "address": "", "online_link": ""},
            "venue",
            "Please give a venue, an address or an online link.",
        ),
        ({"online_link": "not a link"}, "online_link", "Please give a full link"),
        ({"online_link": "ftp://example.org/x"}, "online_link", "Please give a full link"),
        ({"online_link": "https://"}, "online_link", "Please give a full link"),
        ({"online_link": "javascript:alert(1)"}, "online_link", "Please give a full link"),
        (
            {"online_link": "javascript://example.org/%0aalert(1)"},
            "online_link",
            "Please give a full link",
        ),
        ({"capacity": "0"}, "capacity", "Please give a number from 1 to 100,000."),
        ({"capacity": "-3"}, "capacity", "Please give a number from 1 to 100,000."),
        ({"starts": "tomorrow evening"}, "starts", "Please give a date and time"),
        (
            {"starts": "0001-01-01T00:00", "ends": "0001-01-01T02:00"},
            "starts",
            "Please give a date between the years 1900 and 9000.",
        ),
        (
            {"starts": "9999-12-31T20:00", "ends": "9999-12-31T23:59"},
            "ends",
            "Please give a date between the years 1900 and 9000.",
        ),
        ({"title": ""}, "title", "Please fill in title."),
    ],
    ids=[
        "end before start",
        "end at start",
        "nowhere",
        "bad url",
        "not a web link",
        "no host",
        "a script",
        "a script that looks like a link",
        "capacity 0",
        "negative capacity",
        "unreadable start",
        "the first year",
        "the last year",
        "no title",
    ],
)
def test_the_meetup_form_refuses_bad_input_and_saves_nothing(
    app, outbox, run_jobs, changes, field, message
):
    """Bad input answers 422 with the message beside its field; nothing is saved or sent."""
    with app.app_context():
        chapter_of("Ana")
    run_jobs()
    outbox.clear()
    olga = log_in(app, "Olga")
    response = submit(olga, f"/chapters/{SLUG}/meetups/new", meetup_form(**changes))
    assert response.status_code == 422
    assert field_error(response.text, field).count(message) == 1  # once, beside its field
    if field != "title":
        assert 'value="Planning night"' in response.text  # what was typed is kept
    with app.app_context():
        assert meetup_count() == 0
    run_jobs()
    assert outbox.messages() == [] and scheduled_jobs(app) == {}


def test_the_meetup_form_says_which_fields_may_be_left_empty(app):
    """Fields one may leave empty say "(optional)" in their label; the rest must be filled."""
    with app.app_context():
        chapter_of("Ana")
    page = log_in(app, "Olga").get(f"/chapters/{SLUG}/meetups/new").text
    labels = {
        name: text_of(label)
        for name, label in re.findall(r'<label for="([a-z_]+)">(.*?)</label>', page, re.S)
    }
    assert labels["title"] == "Title"
    assert labels["starts"] == "Start"
    for optional in ("venue", "address", "online_link", "capacity"):
        assert labels[optional].endswith(" (optional)"), optional
    assert "Give a venue, an address or an online link" in page


def test_a_meetup_in_the_past_is_refused(app):
    """A start already gone answers 422, beside the start, and saves nothing."""
    with app.app_context():
        chapter_of("Ana")
    olga = log_in(app, "Olga")
    yesterday = utcnow() - timedelta(days=1)
    form = meetup_form(
        starts=local_input(yesterday), ends=local_input(yesterday + timedelta(hours=2))
    )
    response = submit(olga, f"/chapters/{SLUG}/meetups/new", form)
    assert response.status_code == 422
    assert "A new meetup must start in the future." in error_summary(response.text)
    assert field_error(response.text, "starts") == "A new meetup must start in the future."
    assert 'aria-invalid="true"' in field_input(response.text, "starts")
    with app.app_context():
        assert meetup_count() == 0


def test_bad_input_on_the_edit_form_changes_nothing(app, outbox, run_jobs):
    """Editing with an end before the start answers 422 and keeps the meetup as it was."""
    with app.app_context():
        chapter, members = chapter_of("Ana")
        meetup = make_meetup(chapter, members["Olga"])
        services.respond(meetup, members["Ana"], True)
        meetup_id, before = meetup.id, (meetup.title, meetup.starts_at, meetup.ends_at)
    run_jobs()
    outbox.clear()
    olga = log_in(app, "Olga")
    form = meetup_form(
        title="Moved night", starts=f"{LATER}T20:00", ends=f"{LATER}T19:00", capacity="0"
    )
    response = submit(olga, f"/meetups/{meetup_id}/edit", form)
    assert response.status_code == 422
    assert "The end must be after the start." in field_error(response.text, "ends")
    assert "Please give a number from 1 to 100,000." in field_error(response.text, "capacity")
    with app.app_context():
        meetup = db.session.get(Meetup, meetup_id)
        assert (meetup.title, meetup.starts_at, meetup.ends_at) == before
    run_jobs()
    assert outbox.messages() == []


# --- 13. campaigns ------------------------------------------------------------------------------


def test_a_chapter_organiser_attaches_a_meetup_to_a_campaign(app):
    """The meetup's organiser may attach it and it is listed with its date; others may not."""
    with app.app_context():
        chapter, members = chapter_of("Ana")
        pia = people("Pia")[0]
        campaign = make_campaign(pia)
        starts = whole_minutes(4)
        meetup = make_meetup(
            chapter,
            members["Olga"],
            title="Alfama planning night",
            starts_at=starts,
            ends_at=starts + timedelta(hours=2),
        )
        services.respond(meetup, members["Ana"], True)
        campaign_id, meetup_id, starts = campaign.id, meetup.id, meetup.starts_at

        with pytest.raises(CampaignError, match="Only the organisers of the campaign or of"):
            campaign_services.attach_work(campaign, "meetup", meetup_id, members["Ana"])
        assert campaign_services.linked_summaries(campaign) == {}

        campaign_services.attach_work(campaign, "meetup", meetup_id, members["Olga"])
        [summary] = campaign_services.linked_summaries(campaign)["meetup"]
        assert summary.title == "Alfama planning night"
        assert summary.when == starts
        assert summary.detail == "1 going · Lisbon Hosts and Riders"
        assert (summary.endpoint, summary.values) == ("chapters.meetup", {"meetup_id": meetup_id})
        with pytest.raises(CampaignError, match="already attached"):
            campaign_services.attach_work(campaign, "meetup", meetup_id, members["Olga"])
        with pytest.raises(CampaignError, match="no public meetup"):
            campaign_services.attach_work(campaign, "meetup", 999999, members["Olga"])

    page = app.test_client().get(f"/campaigns/{campaign_id}").text
    section = page.split('<h2 id="linked-heading">', 1)[1].split("</section>", 1)[0]
    assert f'href="/meetups/{meetup_id}"' in section
    local_date = starts.astimezone(LISBON).strftime("%-d %B %Y")
    assert "Alfama planning night" in section and local_date in section


def test_a_linked_meetup_is_dated_in_its_chapters_time_zone(app):
    """The campaign page dates a meetup by its chapter's calendar, not by UTC."""
    # 08:00 in Tokyo is 23:00 UTC the day before.
    local_start = (utcnow() + timedelta(days=6)).astimezone(ZoneInfo("Asia/Tokyo"))
    local_start = local_start.replace(hour=8, minute=0, second=0, microsecond=0)
    with app.app_context():
        olga, pia = people("Olga", "Pia")
        tokyo = make_chapter(olga, name="Tokyo Riders", city="Tokyo", time_zone="Asia/Tokyo")
        meetup = make_meetup(
            tokyo,
            olga,
            title="Shibuya morning meetup",
            starts_at=local_start.astimezone(UTC),
            ends_at=(local_start + timedelta(hours=2)).astimezone(UTC),
        )
        campaign = make_campaign(pia, city="Tokyo")
        campaign_services.attach_work(campaign, "meetup", meetup.id, olga)
        campaign_id = campaign.id
    page = app.test_client().get(f"/campaigns/{campaign_id}").text
    section = page.split('<h2 id="linked-heading">', 1)[1].split("</section>", 1)[0]
    item = text_of(section.split("Shibuya morning meetup", 1)[1].split("</li>", 1)[0])
    assert item.endswith(local_start.strftime("%-d %B %Y")), item


# --- 14. importing a chapter ---------------------------------------------------------------------


def person_entry(ref: str, address: str, given: str, family: str = "", role: str = "member"):
    """A person as an export lists them."""
    return {
        "identifiers": [ref],
        "given_name": given,
        "family_name": family,
        "email_addresses": [{"address": address, "primary": True}],
        "postal_addresses": [{"locality": "Porto"}],
        "groundswell:role": role,
    }


def export_file(*entries: dict) -> dict:
    """A chapter export: an upcoming meetup and a decided and an open proposal, with RSVPs
    and votes of everyone in ``entries``."""
    start = (utcnow() + timedelta(days=5)).replace(microsecond=0)
    refs = [entry["identifiers"][0] for entry in entries]
    return {
        "format": "groundswell-chapter-export/1",
        "osdi:group": {
            "name": "Porto Riders",
            "description": "Couriers and drivers in Porto who want fair pay.",
            "locality": "Porto",
            "time_zone": "Europe/Lisbon",
            "status": "active",
            "groundswell:quorum_percent": 20,
            "groundswell:quorum_minimum": 1,
        },
        "osdi:people": list(entries),
        "osdi:events": [
            {
                "title": "Porto planning night",
                "description": "We plan the month.",
                "start_date": start.isoformat(),
                "end_date": (start + timedelta(hours=2)).isoformat(),
                "location": {"venue": "Café Porto", "address_lines": [""]},
                "osdi:attendances": [{"status": "accepted", "person": ref} for ref in refs],
            }
        ],
        "groundswell:decisions": [
            {
                "title": title,
                "details": "We sign the coalition's letter.",
                "closes_date": closes.isoformat(),
                "status": status,
                "outcome": outcome,
                "votes": [{"choice": "block", "reason": "No.", "person": ref} for ref in refs],
            }
            for title, closes, status, outcome in (
                ("Join the coalition", utcnow() - timedelta(days=1), "closed", "blocked"),
                ("Meet weekly", utcnow() + timedelta(days=2), "open", None),
            )
        ],
    }


def upload(client, data: dict):
    form = client.get("/chapters/import")
    return client.post(
        "/chapters/import",
        data={
            "csrf_token": csrf_token(form.text),
            "export": (io.BytesIO(json.dumps(data).encode()), "chapter.json"),
        },
        content_type="multipart/form-data",
    )


def imported_chapter() -> Chapter:
    return db.session.scalar(select(Chapter).where(Chapter.name == "Porto Riders"))


def test_an_import_enrols_no_one_but_the_importer_whether_or_not_they_have_accounts(app):
    """A file listing an existing member as an organiser, with their RSVP and votes, and
    someone without an account: neither joins, votes, RSVPs or turns up in the export,
    and no account is made, so the importer cannot tell which address has an account."""
    with app.app_context():
        people("Ines", "Vera")
        vera_id = member_by_email(email("Vera")).id
    data = export_file(
        person_entry("person-1", email("Vera"), "Vera", "Victim", role="organiser"),
        person_entry("person-2", "nobody@example.org", "Noor", "Nobody", role="organiser"),
    )
    ines = log_in(app, "Ines")
    response = upload(ines, data)
    assert flashes(ines, response) == [
        "Porto Riders is imported, with you as its organiser. 2 invitations are recorded: the "
        "people in the file can join when they sign in here with the same email address, "
        "confirmed. No email is sent to them, so let them know."
    ]

    with app.app_context():
        chapter = imported_chapter()
        assert {m.member.email: m.role for m in chapter.memberships} == {
            email("Ines"): Role.ORGANISER
        }
        assert {m.email for m in db.session.scalars(select(Member))} == {
            email("Ines"),
            email("Vera"),
        }
        assert db.session.scalar(select(func.count()).select_from(Rsvp)) == 0
        votes = db.session.execute(select(Proposal.state, Vote.member_id).join(Proposal)).all()
        assert sorted(votes) == [(ProposalState.CLOSED, None), (ProposalState.CLOSED, None)]
        assert services.chapters_of(db.session.get(Member, vera_id)) == []
        slug = chapter.slug

    exported = ines.get(f"/chapters/{slug}/export.json").get_data(as_text=True)
    for secret in ("Vera", "Victim", email("Vera"), "Noor", "nobody@example.org"):
        assert secret not in exported, secret
    page = text_of(ines.get(f"/chapters/{slug}").text)
    assert "1 member" in page and "Vera" not in page


@pytest.mark.parametrize(
    "link", ["javascript:alert(document.domain)", "javascript://x.org/%0aalert(1)", "data:,hi"]
)
def test_an_import_whose_meetup_link_is_not_a_web_link_is_refused(app, link):
    """A meetup's online link could run a script on the meetup page: the whole file is
    refused with a message, and nothing of it is kept."""
    with app.app_context():
        people("Ines")
    data = export_file()
    data["osdi:events"][0]["online_link"] = link
    response = upload(log_in(app, "Ines"), data)
    assert response.status_code == 422
    assert "&#39;online_link&#39; must be a link starting with https:// or http://." in (
        response.text
    )
    with app.app_context():
        assert imported_chapter() is None
        assert db.session.scalar(select(func.count()).select_from(Meetup)) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: data["osdi:group"].update(name="Porto\r\nBcc: x@example.org"), "name"),
        (lambda data: data["osdi:group"].update(locality="Porto\u0007"), "locality"),
        (lambda data: data["osdi:events"][0].update(title="Night\x00"), "title"),
        (
            lambda data: data["osdi:people"].append(person_entry("p9", "http://[", "Zé")),
            "&#39;http://[&#39; is not an email address.",
        ),
    ],
)
def test_an_import_holding_text_no_form_would_take_is_refused(app, change, message):
    with app.app_context():
        people("Ines")
    data = export_file()
    change(data)
    response = upload(log_in(app, "Ines"), data)
    assert response.status_code == 422
    assert message in response.text
    with app.app_context():
        assert imported_chapter() is None


def test_an_imported_description_keeps_its_line_breaks(app):
    with app.app_context():
        people("Ines")
    data = export_file()
    data["osdi:group"]["description"] = "Couriers in Porto.\n\nWe want fair pay."
    assert upload(log_in(app, "Ines"), data).status_code == 302
    with app.app_context():
        assert imported_chapter().description == "Couriers in Porto.\n\nWe want fair pay."


@pytest.mark.parametrize("address", ["A" * 301, 42])
def test_an_import_whose_meetup_address_is_not_short_text_is_refused(app, address):
    with app.app_context():
        people("Ines")
    data = export_file()
    data["osdi:events"][0]["location"] = {"address_lines": [address]}
    response = upload(log_in(app, "Ines"), data)
    assert response.status_code == 422
    assert "&#39;address_lines&#39; must be text of at most 300 characters." in response.text
    with app.app_context():
        assert imported_chapter() is None


def test_an_imported_decision_without_its_counts_says_only_what_is_known(app):
    with app.app_context():
        people("Ines")
    ines = log_in(app, "Ines")
    assert upload(ines, export_file()).status_code == 302
    with app.app_context():
        decided = db.session.scalar(
            select(Proposal.id).where(Proposal.state == ProposalState.CLOSED)
        )
    shown = text_of(ines.get(f"/proposals/{decided}").text)
    assert "Outcome:" in shown and "None" not in shown


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "This file is not JSON."),
        (b'{"format": "groundswell-chapter-export/1", "name": "\\ud800"}', "not valid Unicode"),
    ],
    ids=["nested past reason", "a lone surrogate"],
)
def test_an_import_file_that_cannot_be_read_is_refused_with_a_message(app, content, message):
    with app.app_context():
        people("Ines")
    ines = log_in(app, "Ines")
    form = ines.get("/chapters/import")
    response = ines.post(
        "/chapters/import",
        data={"csrf_token": csrf_token(form.text), "export": (io.BytesIO(content), "c.json")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert message in response.text
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Chapter)) == 0


def test_the_importers_own_rsvps_and_votes_come_with_them(app):
    """The importer, listed in the file under their own address, keeps their RSVP and votes;
    the other person's votes on the decided proposal stay without a name."""
    with app.app_context():
        people("Ines", "Vera")
    data = export_file(
        person_entry("person-1", email("Ines"), "Ines"),
        person_entry("person-2", email("Vera"), "Vera"),
    )
    assert upload(log_in(app, "Ines"), data).status_code == 302
    with app.app_context():
        ines = member_by_email(email("Ines"))
        chapter = imported_chapter()
        assert chapter.membership_of(ines).shares_contact is True
        rsvps = db.session.execute(select(Rsvp.member_id, Rsvp.status)).all()
        assert rsvps == [(ines.id, RsvpStatus.GOING)]
        votes = db.session.execute(select(Proposal.title, Vote.member_id).join(Proposal)).all()
        assert sorted(votes, key=str) == sorted(
            [
                ("Join the coalition", ines.id),
                ("Join the coalition", None),
                ("Meet weekly", ines.id),
            ],
            key=str,
        )


@pytest.mark.parametrize(
    ("given", "family"),
    [("A" * 80, ""), ("M" * 40, "S" * 39), ("G" * 50, "F" * 50)],
    ids=["one-word-of-80", "two-words-of-80", "two-words-of-101"],
)
def test_an_import_takes_names_of_any_length_the_file_gives(app, given, family):
    """Names in the file are not stored, so none is too long and none fails to save."""
    with app.app_context():
        people("Ines")
    data = export_file(person_entry("person-1", "long@example.org", given, family))
    response = upload(log_in(app, "Ines"), data)
    assert response.status_code == 302, response.text[:500]


def test_a_chapter_with_an_eighty_character_name_exports_and_imports(app):
    """A member whose display name is the longest allowed shares their details; the export
    imports on another account."""
    long_name = "Maria " + "S" * 74
    with app.app_context():
        chapter, _ = chapter_of()
        services.join(chapter, make_member("maria@example.org", long_name))
        services.set_contact_sharing(chapter, member_by_email("maria@example.org"), True)
        people("Ines")
    exported = log_in(app, "Olga").get(f"/chapters/{SLUG}/export.json")
    data = json.loads(exported.get_data())
    assert long_name.split(" ")[1] in {p["family_name"] for p in data["osdi:people"]}
    data["osdi:group"]["name"] = "Porto Riders"
    with app.app_context():  # Maria has no account where the file is imported
        delete_account(member_by_email("maria@example.org"))
    response = upload(log_in(app, "Ines"), data)
    assert response.status_code == 302, response.text[:500]


def test_an_imported_meetup_starts_on_the_minute_and_a_new_description_tells_no_one(
    app, outbox, run_jobs
):
    """A file's 18:41:30 is kept as 18:41, the minute the form shows, so an edit of the
    description alone neither moves the meetup nor tells anyone of a new time."""
    start = whole_minutes(5) + timedelta(minutes=11, seconds=30)
    data = export_file(person_entry("person-1", email("Ines"), "Ines"))
    data["osdi:events"][0]["start_date"] = start.isoformat()
    data["osdi:events"][0]["end_date"] = (start + timedelta(hours=2)).isoformat()
    with app.app_context():
        people("Ines")
    ines = log_in(app, "Ines")
    assert upload(ines, data).status_code == 302
    with app.app_context():
        meetup = db.session.scalar(select(Meetup))
        assert meetup.starts_at == start.replace(second=0)
        assert meetup.ends_at == start.replace(second=0) + timedelta(hours=2)
        assert names(meetup, RsvpStatus.GOING) == ["Ines"]
        meetup_id = meetup.id
    run_jobs()
    outbox.clear()
    edit = ines.get(f"/meetups/{meetup_id}/edit").text
    fields = dict(re.findall(r'name="(title|starts|ends|venue)"[^>]*value="([^"]*)"', edit))
    form = {**fields, "description": "We plan the month, and eat."}
    saved = ines.post(f"/meetups/{meetup_id}/edit", data={"csrf_token": csrf_token(edit), **form})
    assert flashes(ines, saved) == ["Saved."]
    run_jobs()
    assert outbox.messages() == []


# --- 15. invitations to an imported chapter -----------------------------------------------------

INVITATION_NOTICE = (
    "This chapter moved here from another Groundswell and lists you as {role}. Join with that role?"
)


def import_inviting(app: Flask, *entries: dict) -> str:
    """Ines imports Porto Riders from a file listing herself and ``entries``; its slug."""
    data = export_file(person_entry("person-0", email("Ines"), "Ines"), *entries)
    assert upload(log_in(app, "Ines"), data).status_code == 302
    with app.app_context():
        return imported_chapter().slug


def invitation_notice(client, slug: str) -> str:
    """The invitation on the chapter's page, as read, or "" when there is none."""
    page = client.get(f"/chapters/{slug}")
    assert page.status_code == 200, page.status_code
    if 'id="invitation-heading"' not in page.text:
        return ""
    return text_of(page.text.split('id="invitation-heading"', 1)[1].split("</section>", 1)[0])


def invitations_listed(client) -> str:
    """The "Invitations for you" list on the chapters page, or "" when there is none."""
    page = client.get("/chapters").text
    if 'id="invitations-heading"' not in page:
        return ""
    return page.split('id="invitations-heading"', 1)[1].split("</section>", 1)[0]


def invitation_id(address: str) -> int:
    key = address.strip().lower()
    return db.session.scalar(select(ChapterInvitation.id).where(ChapterInvitation.email_key == key))


def answer_invitation(client, invitation: int, answer: str = "accept"):
    return post_with_token(client, f"/chapters/invitations/{invitation}/{answer}")


def roles_in_porto() -> dict[str, str]:
    db.session.expire_all()
    return {m.member.email: m.role for m in imported_chapter().memberships}


def test_an_import_invites_everyone_else_in_the_file_and_enrols_no_one(app):
    """Each other address in the file, with or without an account, gets a pending
    invitation with the file's role; the address keeps its spelling without the spaces
    around it, and is matched lower-cased.
    The importer is not invited, and nobody but the importer is a member."""
    with app.app_context():
        people("Ines", "Vera")
    slug = import_inviting(
        app,
        person_entry("person-1", " Vera@Example.ORG ", "Vera", role="organiser"),
        person_entry("person-2", "nobody@example.org", "Noor"),
        person_entry("person-3", "NOBODY@example.org", "Noor again", role="organiser"),
    )
    with app.app_context():
        rows = db.session.execute(
            select(
                ChapterInvitation.email,
                ChapterInvitation.email_key,
                ChapterInvitation.role,
                ChapterInvitation.state,
            ).order_by(ChapterInvitation.id)
        ).all()
        assert rows == [
            ("Vera@Example.ORG", email("Vera"), Role.ORGANISER, InvitationState.PENDING),
            ("nobody@example.org", "nobody@example.org", Role.MEMBER, InvitationState.PENDING),
        ]
        assert roles_in_porto() == {email("Ines"): Role.ORGANISER}
    assert invitation_notice(log_in(app, "Ines"), slug) == ""


def test_a_confirmed_member_the_file_lists_as_organiser_joins_as_organiser(app):
    """Vera sees the invitation on the chapter's page and in her list, joins with the
    file's role through the page's button, and is offered it no more."""
    with app.app_context():
        people("Ines", "Vera")
    slug = import_inviting(app, person_entry("person-1", email("Vera"), "Vera", role="organiser"))
    vera = log_in(app, "Vera")
    notice = invitation_notice(vera, slug)
    assert INVITATION_NOTICE.format(role="an organiser") in notice
    assert "Join as organiser" in notice and "Decline the invitation" in notice
    listed = invitations_listed(vera)
    assert f'href="/chapters/{slug}"' in listed and "Porto Riders" in listed

    with app.app_context():
        invitation = invitation_id(email("Vera"))
    response = answer_invitation(vera, invitation)
    assert flashes(vera, response) == ["Welcome to Porto Riders. You are an organiser."]
    with app.app_context():
        assert roles_in_porto() == {email("Ines"): Role.ORGANISER, email("Vera"): Role.ORGANISER}
        state = db.session.get(ChapterInvitation, invitation)
        assert state.state == InvitationState.ACCEPTED and state.answered_at is not None
    assert invitation_notice(vera, slug) == "" and invitations_listed(vera) == ""


def test_an_invitation_is_accepted_only_once(app):
    """A second answer, even after leaving the chapter, is refused: the invitation is
    spent and the role it gave is not granted again."""
    with app.app_context():
        people("Ines", "Vera")
    slug = import_inviting(app, person_entry("person-1", email("Vera"), "Vera", role="organiser"))
    vera = log_in(app, "Vera")
    with app.app_context():
        invitation = invitation_id(email("Vera"))
    assert answer_invitation(vera, invitation).status_code == 302
    again = answer_invitation(vera, invitation)
    assert flashes(vera, again) == ["You have already answered this invitation."]

    assert post_with_token(vera, f"/chapters/{slug}/leave").status_code == 302
    assert invitation_notice(vera, slug) == ""
    after_leaving = answer_invitation(vera, invitation)
    assert flashes(vera, after_leaving) == ["You have already answered this invitation."]
    with app.app_context():
        assert roles_in_porto() == {email("Ines"): Role.ORGANISER}


def test_declining_an_invitation_hides_it_for_good(app):
    with app.app_context():
        people("Ines", "Vera")
    slug = import_inviting(app, person_entry("person-1", email("Vera"), "Vera"))
    vera = log_in(app, "Vera")
    assert INVITATION_NOTICE.format(role="a member") in invitation_notice(vera, slug)
    with app.app_context():
        invitation = invitation_id(email("Vera"))
    response = answer_invitation(vera, invitation, "decline")
    assert flashes(vera, response) == ["You have declined the invitation to Porto Riders."]
    assert invitation_notice(vera, slug) == "" and invitations_listed(vera) == ""
    refused = answer_invitation(vera, invitation)
    assert flashes(vera, refused) == ["You have already answered this invitation."]
    with app.app_context():
        assert db.session.get(ChapterInvitation, invitation).state == InvitationState.DECLINED
        assert roles_in_porto() == {email("Ines"): Role.ORGANISER}


def test_an_unconfirmed_address_is_offered_nothing_and_cannot_answer(app):
    """Anyone can register with any address: an account whose listed address is not
    confirmed, and one that only asked to change to it, see no invitation and get a 404
    for answering it."""
    with app.app_context():
        people("Ines", "Zed")
        unconfirmed = Member(
            display_name="Vera?", email=email("Vera"), password=PASSWORD, city="Porto"
        )
        db.session.add(unconfirmed)
        member_by_email(email("Zed")).request_email_change("nobody@example.org")
        db.session.commit()
    slug = import_inviting(
        app,
        person_entry("person-1", email("Vera"), "Vera", role="organiser"),
        person_entry("person-2", "nobody@example.org", "Noor", role="organiser"),
    )
    with app.app_context():
        invitations = [invitation_id(email("Vera")), invitation_id("nobody@example.org")]
    for name in ("Vera", "Zed"):
        client = log_in(app, name)
        assert invitation_notice(client, slug) == "" and invitations_listed(client) == ""
        for invitation in invitations:
            for answer in ("accept", "decline"):
                assert answer_invitation(client, invitation, answer).status_code == 404
    with app.app_context():
        states = db.session.scalars(select(ChapterInvitation.state)).all()
        assert states == [InvitationState.PENDING, InvitationState.PENDING]
        assert roles_in_porto() == {email("Ines"): Role.ORGANISER}


def test_someone_who_registers_later_with_a_listed_address_is_offered_it_once_confirmed(app, auth):
    with app.app_context():
        people("Ines")
    slug = import_inviting(app, person_entry("person-1", "Noor@Example.org", "Noor"))
    auth.register(email="noor@example.org", name="Noor")
    assert auth.login(email="noor@example.org").status_code == 302
    assert invitation_notice(auth.client, slug) == ""
    assert auth.confirm("noor@example.org").status_code == 302

    assert INVITATION_NOTICE.format(role="a member") in invitation_notice(auth.client, slug)
    assert "Porto Riders" in invitations_listed(auth.client)
    with app.app_context():
        invitation = invitation_id("noor@example.org")
    response = answer_invitation(auth.client, invitation)
    assert flashes(auth.client, response) == ["Welcome to Porto Riders. You are a member."]
    with app.app_context():
        assert roles_in_porto() == {email("Ines"): Role.ORGANISER, "noor@example.org": Role.MEMBER}


def test_an_invitation_expires_after_ninety_days(app):
    """Shown until then; after, neither shown nor accepted."""
    with app.app_context():
        people("Ines", "Vera")
    slug = import_inviting(app, person_entry("person-1", email("Vera"), "Vera"))
    vera = log_in(app, "Vera")

    def made_days_ago(days: int) -> int:
        with app.app_context():
            db.session.execute(
                update(ChapterInvitation).values(created_at=utcnow() - timedelta(days=days))
            )
            db.session.commit()
            return invitation_id(email("Vera"))

    made_days_ago(89)
    assert invitation_notice(vera, slug) and invitations_listed(vera)
    invitation = made_days_ago(91)
    assert invitation_notice(vera, slug) == "" and invitations_listed(vera) == ""
    response = answer_invitation(vera, invitation)
    assert flashes(vera, response) == [
        "This invitation has expired. You can still join the chapter."
    ]
    with app.app_context():
        assert db.session.get(ChapterInvitation, invitation).state == InvitationState.PENDING
        assert roles_in_porto() == {email("Ines"): Role.ORGANISER}


def test_joining_by_the_ordinary_button_closes_the_invitation_for_good(app):
    """Vera joins as a member without taking up the file's organiser role: the invitation
    closes then, so leaving cannot bring it back to make her an organiser later."""
    with app.app_context():
        people("Ines", "Vera")
    slug = import_inviting(app, person_entry("person-1", email("Vera"), "Vera", role="organiser"))
    vera = log_in(app, "Vera")
    assert post_with_token(vera, f"/chapters/{slug}/join").status_code == 302
    assert invitation_notice(vera, slug) == "" and invitations_listed(vera) == ""
    with app.app_context():
        invitation = invitation_id(email("Vera"))
        assert db.session.get(ChapterInvitation, invitation).state == InvitationState.ACCEPTED
    response = answer_invitation(vera, invitation)
    assert flashes(vera, response) == ["You have already answered this invitation."]
    with app.app_context():
        assert roles_in_porto() == {email("Ines"): Role.ORGANISER, email("Vera"): Role.MEMBER}

    assert post_with_token(vera, f"/chapters/{slug}/leave").status_code == 302
    assert invitation_notice(vera, slug) == "" and invitations_listed(vera) == ""
    answer_invitation(vera, invitation)
    with app.app_context():
        assert roles_in_porto() == {email("Ines"): Role.ORGANISER}


def test_the_migration_closes_invitations_left_open_by_an_ordinary_join(app):
    with app.app_context():
        people("Ines", "Vera", "Ana")
    slug = import_inviting(
        app,
        person_entry("person-1", email("Vera"), "Vera", role="organiser"),
        person_entry("person-2", email("Ana"), "Ana", role="organiser"),
    )
    assert post_with_token(log_in(app, "Vera"), f"/chapters/{slug}/join").status_code == 302
    with app.app_context():
        db.session.execute(  # as an ordinary join left it before
            update(ChapterInvitation).values(state=InvitationState.PENDING, answered_at=None)
        )
        db.session.commit()
        db.session.remove()
        downgrade(revision="0020_meetup_revision")
        upgrade()
        rows = db.session.execute(select(ChapterInvitation.email, ChapterInvitation.state))
        states = {address: state for address, state in rows}
        assert states == {
            email("Vera"): InvitationState.ACCEPTED,
            email("Ana"): InvitationState.PENDING,
        }
        db.session.remove()
        db.engine.dispose()


def test_accepting_invitations_joins_as_any_join_does_and_activates_the_chapter(
    app, outbox, run_jobs
):
    """A forming chapter becomes active when the threshold's member accepts, and its
    members hear of it."""
    with app.app_context():
        people("Ines", "Vera", "Ana")
    data = export_file(
        person_entry("person-0", email("Ines"), "Ines"),
        person_entry("person-1", email("Vera"), "Vera"),
        person_entry("person-2", email("Ana"), "Ana"),
    )
    data["osdi:group"]["status"] = "forming"
    assert upload(log_in(app, "Ines"), data).status_code == 302
    with app.app_context():
        invitations = {name: invitation_id(email(name)) for name in ("Vera", "Ana")}
    assert answer_invitation(log_in(app, "Vera"), invitations["Vera"]).status_code == 302
    ana = log_in(app, "Ana")
    response = answer_invitation(ana, invitations["Ana"])
    assert flashes(ana, response) == [
        "Welcome! With you, Porto Riders is now an active chapter. You are a member."
    ]
    with app.app_context():
        assert imported_chapter().state == ChapterState.ACTIVE
    run_jobs()
    subject = "Your chapter Porto Riders is now active"
    assert mail(outbox) == each(map(email, ("Ines", "Vera", "Ana")), [subject])


def test_answering_an_invitation_that_is_not_yours_or_does_not_exist_is_a_404(app):
    with app.app_context():
        people("Ines", "Vera", "Ana")
    import_inviting(app, person_entry("person-1", email("Vera"), "Vera", role="organiser"))
    with app.app_context():
        veras = invitation_id(email("Vera"))
    ana = log_in(app, "Ana")
    for path in (
        f"/chapters/invitations/{veras}/accept",
        f"/chapters/invitations/{veras}/decline",
        f"/chapters/invitations/{veras + 1000}/accept",
        "/chapters/invitations/abc/accept",
        "/chapters/invitations/0/accept",
        "/chapters/invitations/99999999999999999999/accept",
        f"/chapters/invitations/{veras}/maybe",
    ):
        assert post_with_token(ana, path).status_code == 404, path
    vera = log_in(app, "Vera")
    no_token = vera.post(f"/chapters/invitations/{veras}/accept")
    assert no_token.status_code == 422
    with app.app_context():
        assert db.session.get(ChapterInvitation, veras).state == InvitationState.PENDING
        assert roles_in_porto() == {email("Ines"): Role.ORGANISER}


def test_a_members_data_download_lists_the_invitations_to_their_address(app):
    with app.app_context():
        people("Ines", "Vera")
    import_inviting(app, person_entry("person-1", "VERA@example.org", "Vera", role="organiser"))
    vera = log_in(app, "Vera")
    data = json.loads(vera.get("/account/data.json").text)
    assert [
        (i["chapter"], i["email"], i["role"], i["state"]) for i in data["chapter_invitations"]
    ] == [("Porto Riders", "VERA@example.org", Role.ORGANISER, InvitationState.PENDING)]
    ines = json.loads(log_in(app, "Ines").get("/account/data.json").text)
    assert ines["chapter_invitations"] == []


# --- 16. the city page ---------------------------------------------------------------------------


def test_the_city_page_shows_the_chapter_and_its_meetup_with_campaigns_and_petitions(app, client):
    """/cities/lisbon gathers the chapter, its next meetup, campaigns and open petitions."""
    with app.app_context():
        chapter, members = chapter_of("Ana")
        meetup = make_meetup(chapter, members["Olga"], title="Alfama planning night")
        make_campaign(members["Olga"], title="Keep Alfama lived in")
        make_petition(members["Olga"], title="Fair pay for Lisbon couriers")
        porto = make_chapter(members["Ana"], name="Porto Riders", city="Porto")
        make_meetup(porto, members["Ana"], title="Porto assembly")
        meetup_id, when = meetup.id, services.local_time(meetup.starts_at, LISBON)

    page = client.get("/cities/lisbon")
    assert page.status_code == 200

    def section(heading_id: str) -> str:
        return page.text.split(f'id="{heading_id}"', 1)[1].split("</section>", 1)[0]

    chapters = section("city-chapters-heading")
    assert f'href="/chapters/{SLUG}"' in chapters and "2 members" in chapters
    meetups = section("city-meetups-heading")
    assert f'href="/meetups/{meetup_id}"' in meetups and when in text_of(meetups)
    assert "Keep Alfama lived in" in section("campaigns-campaigns")
    assert "Fair pay for Lisbon couriers" in section("city-petitions-heading")
    assert "Porto Riders" not in page.text and "Porto assembly" not in page.text


# --- 17. a member's chapter data in their download, and their address on deletion ------------


def test_a_members_data_download_holds_what_they_opened_created_and_chose_in_chapters(app):
    """The download lists the proposals the member opened, the meetups they created, their
    contact sharing in each chapter and whether they have a calendar feed, never its secret."""
    with app.app_context():
        chapter, members = chapter_of("Ana", "Ben")  # three members: active, so it decides
        olga, ana = members["Olga"], members["Ana"]
        meetup = make_meetup(chapter, olga, title="Alfama planning night")
        proposal = services.open_proposal(
            chapter,
            ana,
            title="Join the tenants' coalition",
            details="We sign the coalition's letter to the council.",
            closes_at=utcnow() + timedelta(days=7),
        )
        services.set_contact_sharing(chapter, olga, True)
        secret = services.calendar_secret(olga)
        meetup_id, proposal_id = meetup.id, proposal.id

    olga_data = json.loads(log_in(app, "Olga").get("/account/data.json").text)
    assert [(c["chapter"], c["shares_contact"]) for c in olga_data["chapters"]] == [
        ("Lisbon Hosts and Riders", True)
    ]
    assert [(m["meetup_id"], m["title"]) for m in olga_data["meetups_created"]] == [
        (meetup_id, "Alfama planning night")
    ]
    assert olga_data["proposals_opened"] == []
    assert olga_data["calendar_feed"] == {"has_personal_feed": True}
    assert secret not in json.dumps(olga_data)

    ana_data = json.loads(log_in(app, "Ana").get("/account/data.json").text)
    assert [(c["chapter"], c["shares_contact"]) for c in ana_data["chapters"]] == [
        ("Lisbon Hosts and Riders", False)
    ]
    assert [
        (p["proposal_id"], p["title"], p["details"], p["state"])
        for p in ana_data["proposals_opened"]
    ] == [
        (
            proposal_id,
            "Join the tenants' coalition",
            "We sign the coalition's letter to the council.",
            ProposalState.OPEN,
        )
    ]
    assert ana_data["meetups_created"] == []
    assert ana_data["calendar_feed"] == {"has_personal_feed": False}


def test_deleting_an_account_removes_the_invitations_to_its_confirmed_address(app):
    """An invitation holds the address it was made for, so it goes with the account that
    proved it owns that address; others' invitations stay."""
    with app.app_context():
        people("Ines", "Vera", "Ana")
    import_inviting(
        app,
        person_entry("person-1", "VERA@example.org", "Vera", role="organiser"),
        person_entry("person-2", email("Ana"), "Ana"),
    )
    with app.app_context():
        delete_account(member_by_email(email("Vera")))
        left = db.session.execute(select(ChapterInvitation.email, ChapterInvitation.email_key))
        assert [tuple(row) for row in left] == [(email("Ana"), email("Ana"))]
