"""Petitions: launching, states, signing with confirmed email, and exact tallies."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, time, timedelta

import pytest
from flask import Flask
from flask_migrate import downgrade, upgrade
from rq.registry import ScheduledJobRegistry
from sqlalchemy import event, func, select, update

from core import mail
from core.db import REPOST_WINDOW, utcnow
from core.extensions import db
from core.queue import get_queue
from members import services as member_services
from notifications import jobs as notification_jobs
from notifications.models import Notification
from petitions import jobs, services
from petitions import models as petition_models
from petitions.models import (
    CityCount,
    HourlyCount,
    Milestone,
    Petition,
    PetitionError,
    PetitionState,
    PetitionUpdate,
    Signature,
    SignatureState,
)
from tests import factories
from tests.factories import add_signature, add_signatures, make_member, member_by_email
from tests.helpers import (
    csrf_token,
    links_in,
    path_of,
    redis_down,
    signature_confirm_link,
    submit,
    text_body,
)


def make_petition(app: Flask, organiser_email: str = "org@example.org", **changes) -> int:
    """An open petition on Alfama's holiday lets; returns its id."""
    with app.app_context():
        organiser = member_by_email(organiser_email) or make_member(organiser_email, "Olga")
        fields = {
            "title": "Cap holiday lets in Alfama",
            "ask": "Limit short-term rental licences so most homes are lived in all year.",
            "decision_maker_name": "Lisbon City Council",
            "decision_maker_role": "Municipal government",
            "topic": "short-term-rentals",
            **changes,
        }
        return factories.make_petition(organiser, **fields).id


def launch_form(**changes) -> dict:
    """The launch form for a Berlin delivery petition closing in 90 days."""
    return {
        "title": "Minimum pay per delivery",
        "ask": "Set a minimum payment per delivery that covers waiting time.",
        "decision_maker_name": "Berlin Senate",
        "decision_maker_role": "State government",
        "city": "Berlin",
        "topic": "delivery",
        "goal": "500",
        "closes_on": (utcnow().date() + timedelta(days=90)).isoformat(),
        **changes,
    }


def sign_form(**changes) -> dict:
    return {
        "name": "Rui Costa",
        "email": "rui@example.org",
        "city": "Porto",
        "comment": "My street is all suitcases now.",
        "show_name": "y",
        **changes,
    }


def count_of(app: Flask, petition_id: int) -> int:
    with app.app_context():
        return db.session.get(Petition, petition_id).signature_count


def rows(app: Flask, petition_id: int, state: str | None = None) -> int:
    with app.app_context():
        query = select(func.count()).where(Signature.petition_id == petition_id)
        if state:
            query = query.where(Signature.state == state)
        return db.session.scalar(query)


# --- states -------------------------------------------------------------------------


def test_petition_state_transitions(ctx):
    petition = Petition(
        title="t" * 20,
        ask="a" * 40,
        decision_maker_name="Council",
        decision_maker_role="Council",
        city="Lisbon",
        city_slug="lisbon",
        topic="other",
        goal=10,
        closes_at=utcnow() + timedelta(days=1),
        state=PetitionState.DRAFT,
    )
    assert not petition.takes_signatures
    with pytest.raises(PetitionError):
        petition.close()
    petition.publish()
    assert petition.state == PetitionState.OPEN and petition.takes_signatures
    with pytest.raises(PetitionError):
        petition.publish()
    petition.close()
    assert petition.state == PetitionState.CLOSED and not petition.takes_signatures
    petition.declare_victory("The council adopted the cap.")
    assert petition.state == PetitionState.WON and not petition.takes_signatures
    with pytest.raises(PetitionError):
        petition.declare_victory("again")
    petition.hide("spam")
    assert petition.state == PetitionState.HIDDEN and not petition.takes_signatures
    with pytest.raises(PetitionError):
        petition.hide("again")


def test_an_open_petition_past_its_date_takes_no_signatures(ctx):
    petition = Petition(state=PetitionState.OPEN, closes_at=utcnow() - timedelta(seconds=1))
    assert not petition.takes_signatures


@pytest.mark.parametrize("end", ["close", "win", "hide"])
def test_closed_won_or_hidden_petitions_refuse_signatures(app, client, end):
    petition_id = make_petition(app)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        {
            "close": lambda: services.close(petition),
            "win": lambda: services.declare_victory(petition, "We won the cap."),
            "hide": lambda: services.hide(petition, "Breaks the rules"),
        }[end]()
    if end == "hide":
        assert client.get(f"/petitions/{petition_id}").status_code == 404
        return
    page = client.get(f"/petitions/{petition_id}")
    assert "Not taking signatures" in page.text
    token = csrf_token(client.get("/login").text)
    response = client.post(
        f"/petitions/{petition_id}/sign", data={"csrf_token": token, **sign_form()}
    )
    assert response.status_code == 409
    assert "not taking signatures any more" in response.text
    assert rows(app, petition_id) == 0


def test_scheduled_job_closes_petitions_past_their_date(app, run_jobs):
    expired = make_petition(app, title="An expired petition here")
    current = make_petition(app, title="A current petition here")
    with app.app_context():
        db.session.execute(
            update(Petition)
            .where(Petition.id == expired)
            .values(closes_at=utcnow() - timedelta(minutes=1))
        )
        db.session.commit()
        assert jobs.close_expired_petitions() == 1
        assert db.session.get(Petition, expired).state == PetitionState.CLOSED
        assert db.session.get(Petition, current).state == PetitionState.OPEN


def _hide_from_elsewhere(app: Flask, petition_id: int) -> None:
    """A moderator hides the petition in a request of their own."""
    with app.app_context():
        services.hide(db.session.get(Petition, petition_id), "Breaks the rules")


def test_closing_expired_petitions_leaves_one_hidden_meanwhile_hidden(app):
    petition_id = make_petition(app)
    with app.app_context():
        db.session.execute(update(Petition).values(closes_at=utcnow() - timedelta(minutes=1)))
        db.session.commit()
        hidden = []

        def hide_once_selected(conn, cursor, statement, *args):
            if not hidden and "petitions.closes_at <=" in statement:
                hidden.append(True)
                _hide_from_elsewhere(app, petition_id)

        event.listen(db.engine, "after_cursor_execute", hide_once_selected)
        try:
            assert jobs.close_expired_petitions() == 0
        finally:
            event.remove(db.engine, "after_cursor_execute", hide_once_selected)
        assert hidden
        db.session.expire_all()
        assert db.session.get(Petition, petition_id).state == PetitionState.HIDDEN


@pytest.mark.parametrize("change", ["publish", "close", "declare_victory"])
def test_an_organisers_change_after_a_moderator_hid_the_petition_is_refused(app, change):
    petition_id = make_petition(app, publish=change != "publish")
    with app.app_context():
        petition = db.session.get(Petition, petition_id)  # as the organiser's request read it
        _hide_from_elsewhere(app, petition_id)
        with pytest.raises(PetitionError, match="A moderator has hidden this petition"):
            if change == "declare_victory":
                services.declare_victory(petition, "The council adopted the cap.")
            else:
                getattr(services, change)(petition)
        db.session.expire_all()
        assert db.session.get(Petition, petition_id).state == PetitionState.HIDDEN


def test_closing_a_petition_hidden_while_the_request_ran_says_why(app, client, auth, monkeypatch):
    auth.member()
    petition_id = make_petition(app, organiser_email="ana@example.org")
    page = client.get(f"/petitions/{petition_id}")
    loaded = services.visible_petition

    def hidden_just_after_loading(petition_id, viewer):
        petition = loaded(petition_id, viewer)
        _hide_from_elsewhere(app, petition_id)
        return petition

    monkeypatch.setattr(services, "visible_petition", hidden_just_after_loading)
    refused = client.post(
        f"/petitions/{petition_id}/close", data={"csrf_token": csrf_token(page.text)}
    )
    assert refused.status_code == 409
    assert "A moderator has hidden this petition, so it stays as it is." in refused.text
    assert "This petition is hidden by a moderator: Breaks the rules" in refused.text
    with app.app_context():
        assert db.session.get(Petition, petition_id).state == PetitionState.HIDDEN


# --- launching and editing -------------------------------------------------------------


def test_member_launches_a_draft_and_publishes_it(app, client, auth):
    auth.member()
    ask = "Set a **minimum** payment per delivery that covers waiting time."
    response = submit(client, "/petitions/new", launch_form(ask=ask))
    assert response.status_code == 302
    with app.app_context():
        petition = db.session.scalar(select(Petition))
        assert petition.state == PetitionState.DRAFT and petition.city_slug == "berlin"
        petition_id = petition.id
    page = client.get(f"/petitions/{petition_id}")
    assert "This is a draft" in page.text and "<strong>minimum</strong>" in page.text
    assert app.test_client().get(f"/petitions/{petition_id}").status_code == 404
    published = client.post(
        f"/petitions/{petition_id}/publish", data={"csrf_token": csrf_token(page.text)}
    )
    assert published.status_code == 302
    assert app.test_client().get(f"/petitions/{petition_id}").status_code == 200


def test_the_launch_form_sent_twice_makes_one_draft(app, client, auth):
    auth.member()
    data = launch_form()
    first, again = (submit(client, "/petitions/new", data) for _ in range(2))
    assert first.status_code == again.status_code == 302
    assert first.headers["Location"] == again.headers["Location"]
    changed = submit(client, "/petitions/new", {**data, "goal": "600"})
    assert changed.headers["Location"] != first.headers["Location"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Petition)) == 2


def test_launching_needs_a_login(client):
    assert client.get("/petitions/new").status_code == 302


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"title": "short"}, "title", "10 to 150 characters"),
        ({"ask": ""}, "ask", "Please say what the decision-maker should do."),
        ({"title": "      "}, "title", "Please fill in title."),
        ({"ask": "x" * 5001}, "ask", "30 to 5000 characters"),
        ({"decision_maker_name": ""}, "decision_maker_name", "Please fill in"),
        ({"topic": "crypto"}, "topic", "Not a valid choice"),
        ({"goal": "lots"}, "goal", "Not a valid integer value."),
        ({"goal": "3"}, "goal", "between 10 and 10,000,000"),
        ({"closes_on": "2000-01-01"}, "closes_on", "cannot be in the past"),
        ({"closes_on": "later"}, "closes_on", "Not a valid date value."),
        ({"closes_on": "+400days"}, "closes_on", "at most a year"),
    ],
)
def test_launch_form_rejects_bad_input(app, client, auth, change, field, message):
    auth.member()
    if change.get("closes_on") == "+400days":
        change = {"closes_on": (utcnow().date() + timedelta(days=400)).isoformat()}
    response = submit(client, "/petitions/new", launch_form(**change))
    assert response.status_code == 422
    assert message in response.text.split(f'id="{field}-error"', 1)[1].split("</p>", 1)[0]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Petition)) == 0


# --- the closing day ------------------------------------------------------------------


def test_a_petition_takes_signatures_to_the_end_of_its_closing_day(app, client, auth, monkeypatch):
    """The date chosen is the last day to sign, up to its final second (UTC)."""
    auth.member()
    closing_day = utcnow().date() + timedelta(days=10)
    data = launch_form(closes_on=closing_day.isoformat())
    assert submit(client, "/petitions/new", data).status_code == 302
    with app.app_context():
        petition = db.session.scalar(select(Petition))
        services.publish(petition)
        last_second = datetime.combine(closing_day, time(23, 59, 59), tzinfo=UTC)
        petition_id = petition.id
        monkeypatch.setattr(petition_models, "utcnow", lambda: last_second)
        assert petition.takes_signatures
        monkeypatch.setattr(petition_models, "utcnow", lambda: last_second + timedelta(seconds=1))
        assert not petition.takes_signatures
    monkeypatch.undo()
    assert "closes at the end of" in client.get(f"/petitions/{petition_id}").text


def test_the_migration_moves_old_closing_times_to_the_end_of_the_day(app):
    """Petitions saved to close at 23:59:00 close at the end of that day; others keep
    their time."""
    old_style = make_petition(app, title="Saved to close at 23:59")
    other = make_petition(app, title="Saved to close at noon")
    day = utcnow().date() + timedelta(days=5)
    with app.app_context():
        for petition_id, at in ((old_style, time(23, 59)), (other, time(12, 0))):
            closes_at = datetime.combine(day, at, tzinfo=UTC)
            db.session.execute(
                update(Petition).where(Petition.id == petition_id).values(closes_at=closes_at)
            )
        db.session.commit()
        db.session.remove()
        downgrade(revision="0021_close_joined_invitations")
        upgrade()
        assert db.session.get(Petition, old_style).closes_at == datetime.combine(
            day, time.max, tzinfo=UTC
        )
        assert db.session.get(Petition, other).closes_at == datetime.combine(
            day, time(12, 0), tzinfo=UTC
        )
        db.session.remove()
        db.engine.dispose()


def test_an_open_petition_is_edited_on_its_last_day_without_moving_the_date(app, client, auth):
    auth.member()
    petition_id = make_petition(app, organiser_email="ana@example.org")
    today = utcnow().date()
    with app.app_context():
        db.session.execute(
            update(Petition).values(closes_at=datetime.combine(today, time.max, tzinfo=UTC))
        )
        db.session.commit()
    page = client.get(f"/petitions/{petition_id}/edit")
    assert f'value="{today.isoformat()}"' in page.text
    response = client.post(
        f"/petitions/{petition_id}/edit",
        data={
            "csrf_token": csrf_token(page.text),
            "title": "Cap holiday lets in Alfama, typo fixed",
            "ask": "Limit short-term rental licences so most homes are lived in all year.",
            "decision_maker_name": "Lisbon City Council",
            "decision_maker_role": "Municipal government",
            "city": "Lisbon",
            "topic": "short-term-rentals",
            "goal": "100",
            "closes_on": today.isoformat(),
        },
    )
    assert response.status_code == 302
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        assert petition.title.endswith("typo fixed") and petition.closes_at.date() == today


def test_a_petition_past_its_closing_time_shows_as_closed_before_the_sweep(app, client):
    """The sweep records the close within five minutes; until then every public view
    already says closed, and the open listing leaves it out."""
    petition_id = make_petition(app, title="Cap holiday lets in Alfama")
    open_one = make_petition(app, title="Fair pay for Lisbon couriers")
    with app.app_context():
        db.session.execute(
            update(Petition)
            .where(Petition.id == petition_id)
            .values(closes_at=utcnow() - timedelta(minutes=1))
        )
        db.session.commit()
    page = client.get(f"/petitions/{petition_id}").text
    assert "This petition is closed and no longer takes signatures." in page
    assert ">Closed</span>" in page and "closes at the end of" not in page
    listed = client.get("/petitions").text
    assert f'href="/petitions/{open_one}"' in listed
    assert f'href="/petitions/{petition_id}"' not in listed
    assert f'href="/petitions/{petition_id}"' in client.get("/petitions?state=closed").text
    assert client.get(f"/api/v1/petitions/{petition_id}").get_json()["status"] == "closed"
    with app.app_context():
        assert db.session.get(Petition, petition_id).state == PetitionState.OPEN


def test_ask_and_decision_maker_freeze_after_the_first_signature(app, client, auth):
    auth.member()  # ana, the organiser
    petition_id = make_petition(app, organiser_email="ana@example.org")
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        services.edit_petition(petition, ask="A clearer ask, before anyone signed, is fine.")
        add_signature(petition, "Rui", confirm=False)
        with pytest.raises(PetitionError):
            services.edit_petition(petition, ask="A different ask after signing is not allowed.")
        with pytest.raises(PetitionError):
            services.edit_petition(petition, decision_maker_name="Someone else")
        services.edit_petition(petition, title="A better title for the same ask", goal=500)
        db.session.refresh(petition)
        assert petition.ask == "A clearer ask, before anyone signed, is fine."
        assert petition.goal == 500

    # The edit page no longer offers the frozen fields, and refuses a change to them sent
    # from a form opened before the first signature, keeping what was typed.
    page = client.get(f"/petitions/{petition_id}/edit")
    assert 'name="ask"' not in page.text and "stay exactly as they signed" in page.text
    shown_fields = {
        "csrf_token": csrf_token(page.text),
        "city": "Lisbon",
        "topic": "short-term-rentals",
        "goal": "500",
        "closes_on": (utcnow().date() + timedelta(days=20)).isoformat(),
    }
    response = client.post(
        f"/petitions/{petition_id}/edit",
        data={
            **shown_fields,
            "title": "A title typed with a new ask",
            "ask": "Sneaky new ask that signers never saw at all.",
            "decision_maker_name": "Someone else",
            "decision_maker_role": "Else",
        },
    )
    assert response.status_code == 422
    assert "People have signed this text" in response.text
    assert 'value="A title typed with a new ask"' in response.text
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        assert petition.ask == "A clearer ask, before anyone signed, is fine."
        assert petition.decision_maker_name == "Lisbon City Council"
        assert petition.title == "A better title for the same ask"

    # The form as the page now offers it saves, leaving the ask as it was signed.
    response = client.post(
        f"/petitions/{petition_id}/edit",
        data={**shown_fields, "title": "The title once more, with the ask kept", "goal": "750"},
    )
    assert response.status_code == 302, response.text
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        assert petition.title == "The title once more, with the ask kept"
        assert petition.goal == 750
        assert petition.ask == "A clearer ask, before anyone signed, is fine."
        assert petition.decision_maker_role


def test_an_open_petition_closes_at_most_a_year_after_it_opened(app):
    petition_id = make_petition(app)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        petition.opened_at = utcnow() - timedelta(days=300)
        db.session.commit()
        with pytest.raises(PetitionError, match="at most a year from when it opened"):
            services.edit_petition(petition, closes_at=utcnow() + timedelta(days=200))
        services.edit_petition(petition, closes_at=utcnow() + timedelta(days=60))
        db.session.refresh(petition)
        assert petition.closes_at.date() == (utcnow() + timedelta(days=60)).date()


def test_only_the_organiser_may_use_organiser_tools(app, client, auth):
    petition_id = make_petition(app)
    auth.member()
    token = csrf_token(client.get("/account").text)
    assert client.get(f"/petitions/{petition_id}/edit").status_code == 403
    assert (
        client.post(f"/petitions/{petition_id}/close", data={"csrf_token": token}).status_code
        == 403
    )
    assert client.get(f"/petitions/{petition_id}/signatures.csv").status_code == 403
    assert client.get(f"/petitions/{petition_id}/updates/new").status_code == 403
    assert client.get(f"/petitions/{petition_id}/hide").status_code == 403


def test_organiser_closes_and_declares_victory(app, client, auth):
    auth.member()
    petition_id = make_petition(app, organiser_email="ana@example.org")
    page = client.get(f"/petitions/{petition_id}")
    assert "Organiser tools" in page.text
    client.post(f"/petitions/{petition_id}/close", data={"csrf_token": csrf_token(page.text)})
    won = submit(
        client,
        f"/petitions/{petition_id}/win",
        {"note": "The council adopted a cap of one in five."},
    )
    assert won.status_code == 302
    shown = client.get(f"/petitions/{petition_id}").text
    assert "Victory" in shown and "adopted a cap" in shown


def test_a_refused_state_change_shows_the_petition_page_with_the_reason(app, client, auth):
    auth.member()
    petition_id = make_petition(app, organiser_email="ana@example.org")
    page = client.get(f"/petitions/{petition_id}")
    refused = client.post(
        f"/petitions/{petition_id}/publish", data={"csrf_token": csrf_token(page.text)}
    )
    assert refused.status_code == 409
    assert "Location" not in refused.headers  # browsers do not follow one on a 4xx
    assert "<h1>Cap holiday lets in Alfama</h1>" in refused.text
    assert "Only a draft can be published." in refused.text
    assert "Only a draft can be published." not in client.get(f"/petitions/{petition_id}").text


# --- signing ------------------------------------------------------------------------


def test_guest_signs_confirms_by_post_and_is_counted(app, client, outbox, run_jobs):
    petition_id = make_petition(app)
    page = client.get(f"/petitions/{petition_id}")
    response = client.post(
        f"/petitions/{petition_id}/sign", data={"csrf_token": csrf_token(page.text), **sign_form()}
    )
    assert response.status_code == 302
    assert "check-email" in response.headers["Location"]
    assert rows(app, petition_id, SignatureState.PENDING) == 1

    run_jobs()
    assert count_of(app, petition_id) == 0  # pending signatures do not count
    message = outbox.last_to("rui@example.org")
    assert message["Subject"].startswith("Confirm your signature")
    link = signature_confirm_link(outbox, "rui@example.org")

    # Mail scanners fetch links with GET: that must confirm nothing.
    for _ in range(3):
        shown = client.get(link)
        assert shown.status_code == 200 and "Confirm my signature" in shown.text
    run_jobs()
    assert rows(app, petition_id, SignatureState.CONFIRMED) == 0
    assert count_of(app, petition_id) == 0

    confirmed = client.post(link, data={"csrf_token": csrf_token(shown.text)})
    assert confirmed.status_code == 302
    run_jobs()
    assert count_of(app, petition_id) == 1
    shown = client.get(f"/petitions/{petition_id}").text
    assert "Rui Costa" in shown and "My street is all suitcases now." in shown

    # Confirming twice counts once.
    client.post(link, data={"csrf_token": csrf_token(shown)})
    run_jobs()
    assert count_of(app, petition_id) == 1


def test_signer_withdraws_through_the_emailed_link(app, client, outbox, run_jobs):
    petition_id = make_petition(app)
    submit(
        client, f"/petitions/{petition_id}", sign_form(), action=f"/petitions/{petition_id}/sign"
    )
    run_jobs()
    submit(client, signature_confirm_link(outbox, "rui@example.org"), {})
    run_jobs()
    assert count_of(app, petition_id) == 1

    withdraw = path_of(
        next(u for u in links_in(outbox.last_to("rui@example.org")) if u.endswith("/withdraw"))
    )
    assert client.get(withdraw).status_code == 200
    run_jobs()
    assert count_of(app, petition_id) == 1  # a GET withdraws nothing either
    assert "your name and comment are removed at once" in client.get(withdraw).text
    submit(client, withdraw, {})
    run_jobs()
    assert count_of(app, petition_id) == 0
    with app.app_context():
        signature = db.session.scalar(select(Signature))
        assert signature.state == SignatureState.WITHDRAWN
        assert (signature.name, signature.comment, signature.show_name) == ("", None, False)


def test_a_withdrawn_signature_is_deleted_seven_days_after_it_is_taken_off_the_count(app, run_jobs):
    """Only its address and place were kept, for the tally and for signing again."""
    petition_id = make_petition(app)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        for email in ["old@example.org", "recent@example.org", "untallied@example.org"]:
            services.withdraw_signature(add_signature(petition, email=email))
        run_jobs()  # the tally takes the first two off the count
        db.session.execute(
            update(Signature)
            .where(Signature.email == "untallied@example.org")
            .values(counted=True)  # as if the tally had not run yet
        )
        week_ago = utcnow() - timedelta(days=7, minutes=1)
        db.session.execute(
            update(Signature)
            .where(Signature.email != "recent@example.org")
            .values(withdrawn_at=week_ago)
        )
        db.session.commit()
        assert jobs.purge_stale_signatures() == 1
        remaining = db.session.scalars(select(Signature.email)).all()
        assert sorted(remaining) == ["recent@example.org", "untallied@example.org"]


def test_signing_link_tokens_cannot_be_forged(client):
    assert client.get("/petitions/signatures/forged/confirm").status_code == 404
    assert client.post("/petitions/signatures/forged/withdraw", data={}).status_code == 404


@pytest.mark.parametrize(
    "second", ["ab@gmail.com", "A.B+x@Gmail.com", "a.b@googlemail.com", "AB+petitions@GMAIL.COM"]
)
def test_one_signature_per_person_however_the_address_is_written(
    app, client, outbox, second, run_jobs
):
    petition_id = make_petition(app)
    url = f"/petitions/{petition_id}"
    submit(client, url, sign_form(email="ab@gmail.com"), action=f"{url}/sign")
    run_jobs()
    submit(client, signature_confirm_link(outbox, "ab@gmail.com"), {})
    outbox.clear()
    again = submit(client, url, sign_form(email=second), action=f"{url}/sign")
    # The page says what it says to anyone; the address's owner is told by email.
    assert again.status_code == 302 and again.headers["Location"].endswith("/check-email")
    assert "already signed" not in client.get(again.headers["Location"]).text
    assert rows(app, petition_id) == 1
    run_jobs()
    [notice] = outbox.messages()
    assert notice["To"] == "ab@gmail.com"
    assert notice["Subject"] == "You have already signed: Cap holiday lets in Alfama"
    assert f"/petitions/{petition_id}" in text_body(notice)


def test_the_same_person_signing_twice_at_once_is_one_signature_and_one_email(
    app, outbox, run_jobs
):
    petition_id = make_petition(app)
    both_ready = threading.Barrier(2)
    outcomes: list[str] = []

    def signer(email: str) -> None:
        with app.app_context():
            petition = db.session.get(Petition, petition_id)
            details = services.SignerDetails("Rui Costa", email, "Porto", None, True, False)
            both_ready.wait()
            outcomes.append(services.sign(petition, details, "10.0.0.1"))
            db.session.remove()

    threads = [threading.Thread(target=signer, args=(email,)) for email in
               ("rui@example.org", "Rui@Example.org ")]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run_jobs()

    assert rows(app, petition_id) == 1
    assert sorted(outcomes) == sorted(
        [services.SignOutcome.CHECK_EMAIL, services.SignOutcome.RECENTLY_SENT]
    )
    assert len(outbox.to("rui@example.org")) == 1


def test_signing_again_while_pending_keeps_the_latest_details_and_shows_them(
    app, client, outbox, run_jobs
):
    """Someone else may have signed with this address first: the owner's own form wins,
    and the confirmation page shows exactly what will be kept."""
    petition_id = make_petition(app)
    url = f"/petitions/{petition_id}"
    submit(client, url, sign_form(name="Not Rui", comment="Words Rui never wrote."), f"{url}/sign")
    no_comment = {key: value for key, value in sign_form().items() if key != "show_name"}
    submit(client, url, {**no_comment, "comment": ""}, f"{url}/sign")
    run_jobs()
    link = signature_confirm_link(outbox, "rui@example.org")

    page = client.get(link).text
    assert "Words Rui never wrote." not in page
    assert "Rui Costa (not shown publicly)" in page
    assert submit(client, link, {}).status_code == 302
    with app.app_context():
        signature = db.session.scalar(select(Signature))
        assert (signature.state, signature.name, signature.comment, signature.show_name) == (
            SignatureState.CONFIRMED,
            "Rui Costa",
            None,
            False,
        )


def test_normalised_emails_keep_other_providers_distinct():
    assert mail.inbox_key("A.B+x@Gmail.com") == "ab@gmail.com"
    assert mail.inbox_key("a.b+x@example.org") == "a.b+x@example.org"
    assert mail.inbox_key("Ana.Maria@Outlook.com") == "ana.maria@outlook.com"
    assert mail.inbox_key("ana+news@outlook.com") == "ana@outlook.com"


def test_one_inbox_signs_once_however_its_international_domain_is_written(
    app, client, outbox, run_jobs
):
    """The domain as typed, in its ASCII form, or with a combining accent: one inbox."""
    petition_id = make_petition(app)
    url = f"/petitions/{petition_id}"
    for email in ("rui@exämple.org", "rui@xn--exmple-cua.org", "Rui@Exa\u0308mple.org"):
        submit(client, url, sign_form(email=email), action=f"{url}/sign")
    run_jobs()
    assert rows(app, petition_id) == 1
    assert [m["To"] for m in outbox.messages()] == ["rui@xn--exmple-cua.org"]


def test_pending_signer_gets_the_link_again_at_most_every_ten_minutes(
    app, client, outbox, run_jobs
):
    petition_id = make_petition(app)
    url = f"/petitions/{petition_id}"
    submit(client, url, sign_form(), action=f"{url}/sign")
    run_jobs()
    assert len(outbox.to("rui@example.org")) == 1

    too_soon = submit(client, url, sign_form(), action=f"{url}/sign")
    assert too_soon.headers["Location"].endswith("/check-email")
    run_jobs()
    assert len(outbox.to("rui@example.org")) == 1

    with app.app_context():
        db.session.execute(
            update(Signature).values(confirmation_sent_at=utcnow() - timedelta(minutes=11))
        )
        db.session.commit()
    resent = submit(client, url, sign_form(), action=f"{url}/sign")
    assert resent.headers["Location"].endswith("/check-email")
    run_jobs()
    assert len(outbox.to("rui@example.org")) == 2
    assert rows(app, petition_id) == 1


def test_unconfirmed_signatures_are_purged_seven_days_after_the_last_confirmation_email(app):
    petition_id = make_petition(app)
    long_ago, yesterday = utcnow() - timedelta(days=7, minutes=1), utcnow() - timedelta(days=1)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        for email in ["old@example.org", "resent@example.org", "new@example.org"]:
            add_signature(petition, email=email, confirm=False)
        db.session.execute(
            update(Signature)
            .where(Signature.email != "new@example.org")
            .values(created_at=long_ago, confirmation_sent_at=long_ago)
        )
        # The link went out again yesterday, and it works for seven days.
        db.session.execute(
            update(Signature)
            .where(Signature.email == "resent@example.org")
            .values(confirmation_sent_at=yesterday)
        )
        db.session.commit()
        assert jobs.purge_stale_signatures() == 1
        remaining = db.session.scalars(select(Signature.email)).all()
        assert sorted(remaining) == ["new@example.org", "resent@example.org"]


def test_confirming_a_signature_purged_meanwhile_says_it_is_gone(app, client):
    petition_id = make_petition(app)
    long_ago = utcnow() - timedelta(days=8)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        signature = add_signature(petition, email="late@example.org", confirm=False)
        signature.created_at = signature.confirmation_sent_at = long_ago
        db.session.commit()
        token = services.confirmation_token(signature)
    url = f"/petitions/signatures/{token}/confirm"
    page = client.get(url)
    assert "Confirm my signature" in page.text

    purged = []

    def purge_now(conn, cursor, statement, *args):
        # The hourly purge, in a connection of its own, as the confirmation is being saved.
        if not purged and statement.startswith("UPDATE signatures SET state"):
            purged.append(True)
            with app.app_context():
                assert jobs.purge_stale_signatures() == 1

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", purge_now)
    try:
        gone = client.post(url, data={"csrf_token": csrf_token(page.text)})
    finally:
        event.remove(engine, "before_cursor_execute", purge_now)
    assert purged
    assert gone.status_code == 410
    assert "no longer waiting to be confirmed" in gone.text
    assert f'href="/petitions/{petition_id}"' in gone.text
    assert rows(app, petition_id) == 0
    assert client.post(url, data={"csrf_token": csrf_token(page.text)}).status_code == 404


def test_confirming_a_withdrawn_signature_says_it_was_withdrawn(app, client, run_jobs):
    petition_id = make_petition(app)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        signature = add_signature(petition, email="rui@example.org")
        services.withdraw_signature(signature)
        token = services.confirmation_token(signature)
    url = f"/petitions/signatures/{token}/confirm"
    page = client.get(url)
    assert page.status_code == 200
    assert "Confirm my signature" not in page.text
    assert "You withdrew your signature" in page.text
    assert "To sign again, fill in the form on" in page.text

    pressed = client.post(url, data={"csrf_token": csrf_token(client.get("/login").text)})
    assert pressed.status_code == 302
    shown = client.get(pressed.headers["Location"]).text
    assert "You withdrew this signature, so it does not count." in shown
    assert "not taking signatures" not in shown
    run_jobs()
    assert count_of(app, petition_id) == 0


def test_a_confirmed_member_signs_in_one_click_and_counts_at_once(
    app, client, auth, outbox, run_jobs
):
    petition_id = make_petition(app)
    auth.member()
    page = client.get(f"/petitions/{petition_id}")
    assert "Signing as <strong>Ana</strong>" in page.text and 'name="email"' not in page.text
    response = client.post(
        f"/petitions/{petition_id}/sign",
        data={"csrf_token": csrf_token(page.text), "show_name": "y"},
    )
    assert "counted" in response.headers["Location"]
    with app.app_context():
        signature = db.session.scalar(select(Signature))
        assert signature.state == SignatureState.CONFIRMED and signature.member_id is not None
    run_jobs()
    assert count_of(app, petition_id) == 1
    assert outbox.last_to("ana@example.org")["Subject"].startswith("You signed")


def test_a_member_who_changed_address_has_signed_already(app, client, auth, run_jobs):
    petition_id = make_petition(app)
    auth.member()

    def one_click() -> str:
        page = client.get(f"/petitions/{petition_id}")
        response = client.post(
            f"/petitions/{petition_id}/sign",
            data={"csrf_token": csrf_token(page.text), "show_name": "y"},
        )
        return response.headers["Location"]

    assert one_click().endswith("/counted")
    with app.app_context():
        ana = member_by_email("ana@example.org")
        ana.request_email_change("ana.new@example.org")
        assert ana.confirm_email("ana.new@example.org")
        db.session.commit()
    assert one_click().endswith("/already-signed")
    run_jobs()
    assert rows(app, petition_id) == 1
    assert count_of(app, petition_id) == 1


def test_a_deleted_accounts_pending_signature_cannot_be_confirmed_later(
    app, client, outbox, run_jobs
):
    petition_id = make_petition(app)
    with app.app_context():
        make_member("rui@example.org", "Rui Costa")
    url = f"/petitions/{petition_id}"
    submit(client, url, sign_form(), action=f"{url}/sign")
    run_jobs()
    old_link = signature_confirm_link(outbox, "rui@example.org")
    with app.app_context():
        member_services.delete_account(member_by_email("rui@example.org"))
    assert rows(app, petition_id) == 0

    assert client.get(old_link).status_code == 404
    submit(client, url, sign_form(), action=f"{url}/sign")
    run_jobs()
    assert submit(client, signature_confirm_link(outbox, "rui@example.org"), {}).status_code == 302
    run_jobs()
    assert rows(app, petition_id) == 1
    assert count_of(app, petition_id) == 1


def test_a_link_confirms_only_the_address_it_was_sent_to(app):
    """Another signer's row under a reused id is not confirmed by an old link."""
    petition_id = make_petition(app)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        signature = add_signature(petition, "Eva", email="eva@example.org", confirm=False)
        sent_to_eva = services.confirmation_token(signature)
        assert services.signature_for_confirmation(sent_to_eva) == signature
        signature.email = signature.email_key = "rui@example.org"
        db.session.commit()
        assert services.signature_for_confirmation(sent_to_eva) is None
        assert services.signature_for_confirmation("not a token") is None


def test_one_click_over_a_pending_entry_of_the_same_address_signs_with_the_members_choices(
    app,
):
    petition_id = make_petition(app)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        ana = make_member("ana@example.org", "Ana Lima", city="Lisbon")
        # Someone else typed Ana's address into the guest form, with their own choices.
        stranger = services.SignerDetails(
            "Not Ana", "Ana@Example.org", "Porto", "A stranger's comment", True, True
        )
        services.sign(petition, stranger, "203.0.113.7")
        outcome = services.sign_as_member(
            petition, ana, comment=None, show_name=False, wants_updates=False, address="10.0.0.2"
        )
        assert outcome == services.SignOutcome.COUNTED
        signature = db.session.scalar(select(Signature))
        assert signature.state == SignatureState.CONFIRMED and signature.member_id == ana.id
        assert (signature.name, signature.email, signature.city, signature.city_slug) == (
            "Ana Lima",
            "ana@example.org",
            "Lisbon",
            "lisbon",
        )
        assert signature.comment is None
        assert not signature.show_name and not signature.wants_updates


def test_an_unconfirmed_member_signs_like_a_guest(app, client, auth):
    petition_id = make_petition(app)
    auth.register()
    auth.login()
    page = client.get(f"/petitions/{petition_id}")
    assert 'name="email"' in page.text


SIGN_ERRORS = [
    ({"name": ""}, "name", "Please fill in"),
    ({"name": "x" * 101}, "name", "2 to 100 characters"),
    ({"email": "rui at example"}, "email", "valid email address"),
    ({"city": ""}, "city", "Please fill in"),
    ({"comment": "x" * 501}, "comment", "at most 500 characters"),
]


@pytest.mark.parametrize(("change", "field", "message"), SIGN_ERRORS)
def test_bad_signatures_are_refused_beside_the_field_and_keep_what_was_typed(
    app, client, change, field, message
):
    petition_id = make_petition(app)
    url = f"/petitions/{petition_id}"
    response = submit(client, url, sign_form(**change), action=f"{url}/sign")
    assert response.status_code == 422
    assert message in response.text.split(f'id="{field}-error"', 1)[1].split("</p>", 1)[0]
    assert 'value="Porto"' in response.text or field == "city"
    assert rows(app, petition_id) == 0


def test_signing_without_csrf_token_is_refused(app, client):
    petition_id = make_petition(app)
    response = client.post(f"/petitions/{petition_id}/sign", data=sign_form())
    assert response.status_code == 422 and "This form expired" in response.text
    assert rows(app, petition_id) == 0


def test_the_honeypot_keeps_nothing(app, client, run_jobs, outbox):
    petition_id = make_petition(app)
    url = f"/petitions/{petition_id}"
    response = submit(client, url, sign_form(website="http://spam.example"), action=f"{url}/sign")
    assert response.status_code == 302
    run_jobs()
    assert rows(app, petition_id) == 0 and outbox.to("rui@example.org") == []


def test_signing_is_rate_limited_per_address_and_keeps_the_form(app, client):
    app.config["SIGN_LIMIT_PER_ADDRESS"] = "3 per 10 minutes"
    try:
        petition_id = make_petition(app)
        url = f"/petitions/{petition_id}"
        for n in range(3):
            ok = submit(client, url, sign_form(email=f"p{n}@example.org"), action=f"{url}/sign")
            assert ok.status_code == 302
        refused = submit(client, url, sign_form(email="p9@example.org"), action=f"{url}/sign")
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) > 0
        assert "many signatures from you" in refused.text
        assert 'value="p9@example.org"' in refused.text  # nothing typed is lost
        assert rows(app, petition_id) == 3
    finally:
        app.config["SIGN_LIMIT_PER_ADDRESS"] = "60 per 10 minutes"


def test_signing_is_rate_limited_per_email(app, client):
    app.config["SIGN_LIMIT_PER_EMAIL"] = "2 per hour"
    try:
        petition_id = make_petition(app)
        url = f"/petitions/{petition_id}"
        for _ in range(2):
            submit(client, url, sign_form(), action=f"{url}/sign")
        assert submit(client, url, sign_form(), action=f"{url}/sign").status_code == 429
    finally:
        app.config["SIGN_LIMIT_PER_EMAIL"] = "6 per hour"


# --- tallies ------------------------------------------------------------------------


def _sign_and_confirm(app: Flask, petition_id: int, email: str, city: str) -> None:
    client = app.test_client()
    url = f"/petitions/{petition_id}"
    page = client.get(url)
    response = client.post(
        f"{url}/sign",
        data={"csrf_token": csrf_token(page.text), **sign_form(email=email, city=city)},
        environ_base={"REMOTE_ADDR": f"10.0.{len(email)}.{sum(map(ord, email)) % 250}"},
    )
    assert response.status_code == 302, response.status_code
    with app.app_context():
        signature = db.session.scalar(select(Signature).where(Signature.email == email))
        token = services.confirmation_token(signature)
    confirm = client.get(f"/petitions/signatures/{token}/confirm")
    done = client.post(
        f"/petitions/signatures/{token}/confirm", data={"csrf_token": csrf_token(confirm.text)}
    )
    assert done.status_code == 302


def test_counts_are_exact_after_a_concurrent_surge(app, run_jobs):
    app.config["SIGN_LIMIT_PER_ADDRESS"] = "10000 per minute"
    petition_id = make_petition(app, goal=10_000)
    cities = ["Lisbon", "Porto", "Faro"]
    errors: list[BaseException] = []

    def signer(n: int) -> None:
        try:
            for i in range(15):
                _sign_and_confirm(app, petition_id, f"s{n}-{i}@example.org", cities[(n + i) % 3])
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=signer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    # The worker tallies in this thread while the signers sign in theirs.
    while any(thread.is_alive() for thread in threads):
        run_jobs()
    for thread in threads:
        thread.join()
    assert not errors, errors
    # A few withdrawals go through the same path.
    with app.app_context():
        for signature in db.session.scalars(select(Signature).limit(5)):
            services.withdraw_signature(signature)
    run_jobs()

    with app.app_context():
        real = db.session.scalar(
            select(func.count()).where(
                Signature.petition_id == petition_id, Signature.state == SignatureState.CONFIRMED
            )
        )
        petition = db.session.get(Petition, petition_id)
        assert real == 6 * 15 - 5
        assert petition.signature_count == real
        by_city = {c.city: c.count for c in services.city_breakdown(petition)}
        assert sum(by_city.values()) == real
        for city in cities:
            assert by_city[city] == db.session.scalar(
                select(func.count()).where(
                    Signature.petition_id == petition_id,
                    Signature.state == SignatureState.CONFIRMED,
                    Signature.city == city,
                )
            )
        assert services.reconcile(petition_id) == 0  # nothing to repair


def test_at_most_one_tally_job_is_queued_per_petition(app, redis):
    petition_id = make_petition(app)
    with app.app_context():
        from core.queue import get_queue

        queue = get_queue("high")  # a surge of confirmations on high must not starve it
        for _ in range(5):
            services.request_tally(petition_id)
        assert [job.func_name for job in queue.jobs].count("petitions.jobs.tally_petition") == 1


def test_confirmations_in_the_same_second_share_one_scheduled_tally(app, redis, monkeypatch):
    petition_id = make_petition(app)
    monkeypatch.setitem(app.config, "TALLY_DELAY_SECONDS", 1)
    with app.app_context():
        queue = get_queue("high")
        before = utcnow()
        for _ in range(5):
            services.request_tally(petition_id)
        assert queue.count == 0  # nothing runs at once
        scheduled = ScheduledJobRegistry(queue=queue)
        [job_id] = scheduled.get_job_ids()
        assert queue.fetch_job(job_id).func_name == "petitions.jobs.tally_petition"
        due = scheduled.get_scheduled_time(job_id)
        # RQ keeps whole seconds: a second from now, rounded down, is still later than now.
        assert timedelta(0) < due - before.replace(tzinfo=due.tzinfo) <= timedelta(seconds=2)


def test_signatures_confirmed_while_redis_is_down_are_counted_by_the_sweep(app, run_jobs):
    petition_id = make_petition(app)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        signature = add_signature(petition, "Rui", confirm=False)
        with redis_down(app):
            assert services.confirm_signature(signature)  # saved, though no tally was queued
        assert db.session.get(Petition, petition_id).signature_count == 0
        assert jobs.tally_stragglers() == 1
        db.session.expire_all()
        assert db.session.get(Petition, petition_id).signature_count == 1


def test_reconcile_repairs_drift(app):
    petition_id = make_petition(app)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        add_signatures(petition, 3)
        services.tally(petition_id)
        db.session.execute(update(Petition).values(signature_count=42))
        db.session.commit()
        assert jobs.reconcile_counts() == 39
        db.session.expire_all()
        assert db.session.get(Petition, petition_id).signature_count == 3


def test_the_nightly_reconcile_labels_each_place_by_its_most_used_spelling(app):
    """The first signer from a place names it until the reconcile; then the spelling most
    signers used does, the same on every database."""
    petition_id = make_petition(app)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        add_signature(petition, "First Signer", city="LISBON!!!")
        for n, city in enumerate(["Lisbon", "Lisbon", "lisbon", "Porto", "porto"]):
            add_signature(petition, f"Signer {n}", city=city)
        services.tally(petition_id)

        def labels() -> list[tuple[str, int]]:
            return [(c.city, c.count) for c in services.city_breakdown(petition)]

        assert labels() == [("LISBON!!!", 4), ("Porto", 2)]
        jobs.reconcile_counts()
        db.session.expire_all()
        assert labels() == [("Lisbon", 4), ("Porto", 2)]  # a tie goes to the first in order


def city_and_hour_counts(petition_id: int) -> tuple[dict[str, int], dict]:
    """The petition's per-city and hourly counts, leaving out empty ones."""
    db.session.expire_all()
    cities = db.session.execute(
        select(CityCount.city_slug, CityCount.count).where(CityCount.petition_id == petition_id)
    )
    hours = db.session.execute(
        select(HourlyCount.hour, HourlyCount.count).where(HourlyCount.petition_id == petition_id)
    )
    return {s: n for s, n in cities if n}, {h: n for h, n in hours if n}


def confirmed_hours(petition_id: int) -> dict:
    """Confirmed signatures by the hour of their confirmation, from the rows themselves."""
    confirmed_at = db.session.scalars(
        select(Signature.confirmed_at).where(
            Signature.petition_id == petition_id, Signature.state == SignatureState.CONFIRMED
        )
    )
    hours: dict = {}
    for moment in confirmed_at:
        hour = moment.replace(minute=0, second=0, microsecond=0)
        hours[hour] = hours.get(hour, 0) + 1
    return hours


@pytest.mark.parametrize("landing", ["confirmation", "withdrawal"])
def test_reconcile_counts_a_change_landing_midway_once_with_the_next_tally(app, landing):
    petition_id = make_petition(app)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        add_signature(petition, "Ana Lima", email="ana@example.org", city="Lisbon")
        changing = add_signature(
            petition, "Rui Costa", email="rui@example.org", city="Porto",
            confirm=landing == "withdrawal",
        )  # fmt: skip
        services.tally(petition_id)
        changing_id, landed = changing.id, []
        change = (
            {"state": SignatureState.CONFIRMED, "confirmed_at": utcnow()}
            if landing == "confirmation"
            else {"state": SignatureState.WITHDRAWN, "withdrawn_at": utcnow()}
        )

        def land_after_the_flags_catch_up(conn, cursor, statement, *args):
            # What a request committing between reconcile's statements looks like to the
            # statements after it (PostgreSQL's READ COMMITTED).
            if not landed and statement.startswith("UPDATE signatures SET counted"):
                landed.append(True)
                conn.execute(
                    update(Signature.__table__)
                    .where(Signature.__table__.c.id == changing_id)
                    .values(**change)
                )

        event.listen(db.engine, "after_cursor_execute", land_after_the_flags_catch_up)
        try:
            services.reconcile(petition_id)
        finally:
            event.remove(db.engine, "after_cursor_execute", land_after_the_flags_catch_up)
        assert landed
        services.tally(petition_id)  # the tally the change queued

        expected = 2 if landing == "confirmation" else 1
        db.session.expire_all()
        assert db.session.get(Petition, petition_id).signature_count == expected
        cities, hours = city_and_hour_counts(petition_id)
        assert cities == ({"lisbon": 1, "porto": 1} if expected == 2 else {"lisbon": 1})
        assert hours == confirmed_hours(petition_id)


@pytest.mark.parametrize(
    ("signs_again_as", "tally_after"),
    [
        ("guest", "withdrawal"),
        ("guest", "signing again"),
        ("guest", "confirmation only"),
        ("member", "withdrawal"),
        ("member", "confirmation only"),  # one click signs and confirms at once
    ],
)
def test_city_and_hourly_counts_follow_a_signer_who_withdraws_and_signs_again_elsewhere(
    app, signs_again_as, tally_after
):
    petition_id = make_petition(app)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        rui = make_member("rui@example.org", "Rui Costa", city="Porto")
        signature = add_signature(petition, "Rui Costa", email="rui@example.org", city="Lisbon")
        signature.confirmed_at = utcnow() - timedelta(hours=3)  # an hour of its own
        db.session.commit()
        services.tally(petition_id)
        assert city_and_hour_counts(petition_id)[0] == {"lisbon": 1}

        services.withdraw_signature(signature)
        if tally_after == "withdrawal":
            services.tally(petition_id)
        if signs_again_as == "guest":
            again = services.SignerDetails(
                "Rui Costa", "rui@example.org", "Porto", None, True, False
            )
            assert services.sign(petition, again, "10.0.0.3") == services.SignOutcome.CHECK_EMAIL
            if tally_after == "signing again":
                services.tally(petition_id)
            assert services.confirm_signature(db.session.get(Signature, signature.id))
        else:
            outcome = services.sign_as_member(
                petition, rui, comment=None, show_name=True, wants_updates=False, address="10.0.0.4"
            )
            assert outcome == services.SignOutcome.COUNTED
        services.tally(petition_id)

        db.session.expire_all()
        assert db.session.get(Petition, petition_id).signature_count == 1
        cities, hours = city_and_hour_counts(petition_id)
        assert cities == {"porto": 1}
        assert hours == confirmed_hours(petition_id) and sum(hours.values()) == 1
        assert services.reconcile(petition_id) == 0
        assert city_and_hour_counts(petition_id) == (cities, hours)


def test_milestones_are_recorded_and_notified_once(app, outbox, run_jobs):
    petition_id = make_petition(app, goal=12)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        add_signatures(petition, 12)
        reached = services.tally(petition_id)
        assert reached == [10, 12]
        # A second tally or a reconcile over the same counts reaches nothing new.
        assert services.tally(petition_id) == []
        services.reconcile(petition_id)
        # Two notices racing for the same milestone: only one sends.
        services.tell_milestones(petition_id, reached)
        services.tell_milestones(petition_id, reached)
    run_jobs()
    subjects = sorted(m["Subject"] for m in outbox.to("org@example.org"))
    assert subjects == [
        "Your petition reached 10 signatures",
        "Your petition reached its goal of 12 signatures",
    ]
    with app.app_context():
        milestones = db.session.scalars(select(Milestone)).all()
        assert sorted(m.threshold for m in milestones) == [10, 12]
        told = select(Notification.key).where(Notification.kind == "petition_milestone")
        assert db.session.scalars(told.order_by(Notification.key)).all() == [
            f"petition-milestone:{petition_id}:10",
            f"petition-milestone:{petition_id}:12",
        ]


def test_a_milestone_whose_notice_was_lost_is_told_by_the_reconcile_once(
    app, monkeypatch, outbox, run_jobs
):
    petition_id = make_petition(app, goal=12)
    notify = services.notify

    def crash_before_the_goal(kind, **options):
        if options.get("payload", {}).get("threshold") == 12:
            raise RuntimeError("worker killed")
        return notify(kind, **options)

    with app.app_context():
        add_signatures(db.session.get(Petition, petition_id), 12)
        monkeypatch.setattr(services, "notify", crash_before_the_goal)
        with pytest.raises(RuntimeError):
            services.tally(petition_id)  # both crossed in one tally
        db.session.rollback()
        monkeypatch.setattr(services, "notify", notify)
        # The first notice committed the counts and both milestones with it.
        assert db.session.get(Petition, petition_id).signature_count == 12
        assert sorted(db.session.scalars(select(Milestone.threshold))) == [10, 12]
        assert services.tally(petition_id) == []

        services.reconcile(petition_id)
        services.reconcile(petition_id)
    run_jobs()
    subjects = sorted(m["Subject"] for m in outbox.to("org@example.org"))
    assert subjects == [
        "Your petition reached 10 signatures",
        "Your petition reached its goal of 12 signatures",
    ]
    with app.app_context():
        told = select(func.count()).where(Notification.kind == "petition_milestone")
        assert db.session.scalar(told) == 2


# --- updates to signers ---------------------------------------------------------------


def test_updates_reach_opted_in_signers_once(app, client, auth, outbox, run_jobs):
    auth.member()
    petition_id = make_petition(app, organiser_email="ana@example.org")
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        add_signatures(petition, 2, wants_updates=True)
        add_signature(petition, email="quiet@example.org", wants_updates=False)
        add_signature(petition, email="pending@example.org", wants_updates=True, confirm=False)
    run_jobs()
    outbox.clear()
    response = submit(
        client,
        f"/petitions/{petition_id}/updates/new",
        {
            "title": "We meet the council",
            "body": "On Monday we hand the signatures to the council.",
        },
    )
    assert response.status_code == 302
    run_jobs()
    assert sorted(m["To"] for m in outbox.messages()) == ["x0@example.org", "x1@example.org"]
    with app.app_context():
        # Fanning out again (a retry after a crash) sends nothing new.
        notification = db.session.scalar(
            select(Notification).where(Notification.kind == "petition_update")
        )
        notification_jobs.fan_out(notification.id)
    run_jobs()
    assert len(outbox.messages()) == 2
    assert "We meet the council" in client.get(f"/petitions/{petition_id}").text


def test_an_update_posted_twice_is_posted_and_emailed_once(app, client, auth, outbox, run_jobs):
    auth.member()
    petition_id = make_petition(app, organiser_email="ana@example.org")
    with app.app_context():
        add_signatures(db.session.get(Petition, petition_id), 2, wants_updates=True)
    run_jobs()
    outbox.clear()
    url = f"/petitions/{petition_id}/updates/new"
    form = {
        "csrf_token": csrf_token(client.get(url).text),
        "title": "We meet the council",
        "body": "On Monday we hand the signatures to the council.",
    }
    # A double click, or the browser sending the form again: the token is the same.
    first, second = client.post(url, data=form), client.post(url, data=form)
    assert first.status_code == second.status_code == 302
    assert second.headers["Location"] == f"/petitions/{petition_id}"
    run_jobs()
    assert sorted(m["To"] for m in outbox.messages()) == ["x0@example.org", "x1@example.org"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(PetitionUpdate)) == 1

    # A different update, or the same one after the window, is news of its own.
    with app.app_context():
        db.session.execute(update(PetitionUpdate).values(created_at=utcnow() - REPOST_WINDOW))
        db.session.commit()
    assert client.post(url, data=form).status_code == 302
    assert client.post(url, data={**form, "title": "The council answered"}).status_code == 302
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(PetitionUpdate)) == 3


def _title(page: str) -> str:
    return page.split("<title>", 1)[1].split("</title>", 1)[0]


def test_the_thank_you_page_is_titled_by_what_happened_and_to_which_petition(app, client):
    petition_id = make_petition(app)
    url = f"/petitions/{petition_id}"
    signed = submit(client, url, sign_form(), f"{url}/sign")
    thanks = client.get(path_of(signed.headers["Location"])).text
    assert (
        _title(thanks)
        == "One more step: check your email: Cap holiday lets in Alfama · Groundswell"
    )
    again = submit(client, url, sign_form(), f"{url}/sign")
    assert _title(client.get(path_of(again.headers["Location"])).text) == _title(thanks)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        services.sign_as_member(
            petition, make_member("ana@example.org", "Ana"), comment=None, show_name=False,
            wants_updates=False, address="10.0.0.5",
        )  # fmt: skip
    counted = client.get(f"/petitions/{petition_id}/thanks/counted").text
    assert _title(counted) == "Thank you for signing: Cap holiday lets in Alfama · Groundswell"


def _guest_signs(client, petition_id: int, email: str):
    url = f"/petitions/{petition_id}"
    signed = submit(client, url, sign_form(email=email), f"{url}/sign")
    return (
        signed.status_code,
        signed.headers["Location"],
        client.get(signed.headers["Location"]).text,
    )


def test_a_guest_is_shown_the_same_whether_or_not_the_address_signed(app, client, outbox, run_jobs):
    petition_id = make_petition(app)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        add_signature(petition, email="signed@example.org")
        add_signature(petition, email="pending@example.org", confirm=False)
    run_jobs()
    outbox.clear()
    answers = {
        email: _guest_signs(client, petition_id, email)
        for email in ("new@example.org", "pending@example.org", "signed@example.org")
    }
    assert len(set(answers.values())) == 1
    status, location, page = answers["new@example.org"]
    assert (status, location) == (302, f"/petitions/{petition_id}/thanks/check-email")
    assert "If this address has not signed" in page and "emailed to say so" in page
    run_jobs()
    assert outbox.last_to("new@example.org")["Subject"].startswith("Confirm your signature")
    assert outbox.to("pending@example.org") == []  # its link went out minutes ago
    assert outbox.last_to("signed@example.org")["Subject"].startswith("You have already signed")


def test_a_burst_of_signing_again_sends_one_already_signed_notice(app, client, outbox, run_jobs):
    petition_id = make_petition(app)
    with app.app_context():
        add_signature(db.session.get(Petition, petition_id), email="signed@example.org")
    run_jobs()
    outbox.clear()
    for _ in range(3):
        _guest_signs(client, petition_id, "signed@example.org")
    run_jobs()
    assert len(outbox.to("signed@example.org")) == 1
    with app.app_context():
        notices = select(func.count()).where(Notification.kind == "already_signed_petition")
        assert db.session.scalar(notices) == 1


def test_a_refused_signature_says_error_first_in_the_page_title(app, client):
    petition_id = make_petition(app)
    url = f"/petitions/{petition_id}"
    refused = submit(client, url, sign_form(email="not an address"), f"{url}/sign")
    assert refused.status_code == 422
    assert _title(refused.text).startswith("Error: ")
    assert not _title(client.get(url).text).startswith("Error")
