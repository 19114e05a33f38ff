"""Petitions: two requests changing one signature at once, and rows deleted midway.

Each test forces one interleaving: the other request (or the hourly purge) runs in an
app context of its own, so in a session and connection of its own, at the moment that
would have lost its change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import event, func, select, update

from core.db import utcnow
from core.extensions import db
from petitions import jobs, services
from petitions.models import Petition, Signature, SignatureState
from tests.factories import add_signature, make_member, make_petition, member_by_email
from tests.helpers import MailBox, csrf_token


def open_petition(app: Flask) -> int:
    with app.app_context():
        return make_petition(make_member("org@example.org", "Olga")).id


def elsewhere(app: Flask, change: Callable[[], object]) -> None:
    """Run ``change`` as another request would: its own session, committed."""
    with app.app_context():
        change()


def db_dialect(app: Flask) -> str:
    with app.app_context():
        return db.engine.dialect.name


def signature_of(petition_id: int, email: str = "rui@example.org") -> Signature:
    return db.session.scalar(
        select(Signature).where(Signature.petition_id == petition_id, Signature.email == email)
    )


def saved_state(app: Flask, signature_id: int) -> str | None:
    with app.app_context():
        return db.session.scalar(select(Signature.state).where(Signature.id == signature_id))


def rui(**changes) -> services.SignerDetails:
    values = {
        "name": "Rui Costa",
        "email": "rui@example.org",
        "city": "Porto",
        "comment": None,
        "show_name": True,
        "wants_updates": False,
        **changes,
    }
    return services.SignerDetails(**values)


def stale(petition_id: int, email: str) -> None:
    """Make a pending signature old enough for the hourly purge."""
    long_ago = utcnow() - timedelta(days=8)
    db.session.execute(
        update(Signature)
        .where(Signature.petition_id == petition_id, Signature.email == email)
        .values(created_at=long_ago, confirmation_sent_at=long_ago)
    )
    db.session.commit()


# --- the launch form sent twice at once ----------------------------------------------------


def test_the_launch_form_sent_twice_at_once_makes_one_draft(app, monkeypatch):
    """The second copy arrives while the first is still looking for an earlier one: it
    waits for the first to be saved, finds it, and makes no second draft."""
    with app.app_context():
        make_member("org@example.org", "Olga")
    fields = {
        "title": "Fair pay for couriers",
        "ask": "Set a minimum rate per delivery for every platform in the city.",
        "decision_maker_name": "Carla Mendes",
        "decision_maker_role": "Mayor",
        "city": "Lisbon",
        "topic": "delivery",
        "goal": 100,
        "closes_at": utcnow() + timedelta(days=30),
    }
    looked, made = threading.Event(), []
    first_copy = services.first_copy

    def slow_first_look(*args, **kwargs):
        found = first_copy(*args, **kwargs)
        if not looked.is_set():
            looked.set()
            time.sleep(0.5)  # the other copy arrives now
        return found

    monkeypatch.setattr(services, "first_copy", slow_first_look)

    def send_form() -> None:
        with app.app_context():
            organiser = member_by_email("org@example.org")
            made.append(services.create_petition(organiser, **fields).id)

    copies = [threading.Thread(target=send_form) for _ in range(2)]
    copies[0].start()
    assert looked.wait(timeout=10)
    copies[1].start()
    for copy in copies:
        copy.join(timeout=20)
    assert len(made) == 2 and made[0] == made[1]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Petition)) == 1


# --- editing while the first person signs --------------------------------------------------


def test_an_edit_waits_for_a_signature_being_saved_and_then_keeps_the_ask(app):
    """The first signature is being saved when the organiser changes the ask: the edit
    waits for it, sees it, and refuses to change what that person signed."""
    if db_dialect(app) == "sqlite":
        pytest.skip("SQLite has no row locks; PostgreSQL is where two requests overlap")
    petition_id = open_petition(app)
    flushed, let_commit = threading.Event(), threading.Event()

    def first_signature_saved_slowly() -> None:
        with app.app_context():
            address = "rui@example.org"
            db.session.add(
                Signature(
                    petition_id=petition_id,
                    name="Rui Costa",
                    email=address,
                    email_key=address,
                    city="Porto",
                    city_slug="porto",
                )
            )
            db.session.flush()
            flushed.set()
            let_commit.wait(timeout=1)  # the edit, if it waits, is waiting now
            db.session.commit()

    signer = threading.Thread(target=first_signature_saved_slowly)
    signer.start()
    assert flushed.wait(timeout=10)
    try:
        with app.app_context():
            petition = db.session.get(Petition, petition_id)
            with pytest.raises(services.PetitionError, match="People have signed"):
                services.edit_petition(petition, ask="Abolish every minimum rate in the city.")
    finally:
        let_commit.set()
        signer.join(timeout=10)
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        assert not petition.ask.startswith("Abolish")
        assert services.has_signatures(petition)


# --- confirming and withdrawing at once ---------------------------------------------------


def test_a_withdrawal_saved_while_the_confirmation_was_read_stays_a_withdrawal(app, run_jobs):
    petition_id = open_petition(app)
    with app.app_context():
        signature = add_signature(
            db.session.get(Petition, petition_id), email="rui@example.org", confirm=False
        )
        signature_id = signature.id
        token = services.withdrawal_token(signature)

    with app.app_context():
        confirming = db.session.get(Signature, signature_id)  # read as pending
        assert confirming.state == SignatureState.PENDING
        # The signer presses "withdraw" in another tab, and is told it is withdrawn.
        elsewhere(
            app, lambda: services.withdraw_signature(services.signature_for_withdrawal(token))
        )
        assert not services.confirm_signature(confirming)
        assert confirming.state == SignatureState.WITHDRAWN  # what the page then says

    assert saved_state(app, signature_id) == SignatureState.WITHDRAWN
    run_jobs()
    with app.app_context():
        assert db.session.get(Petition, petition_id).signature_count == 0


def test_a_confirmation_saved_while_the_withdrawal_was_read_is_withdrawn(app, run_jobs):
    petition_id = open_petition(app)
    with app.app_context():
        signature = add_signature(
            db.session.get(Petition, petition_id), email="rui@example.org", confirm=False
        )
        signature_id = signature.id
        token = services.confirmation_token(signature)

    with app.app_context():
        withdrawing = db.session.get(Signature, signature_id)
        elsewhere(
            app, lambda: services.confirm_signature(services.signature_for_confirmation(token))
        )
        assert services.withdraw_signature(withdrawing)

    assert saved_state(app, signature_id) == SignatureState.WITHDRAWN
    run_jobs()
    with app.app_context():
        assert db.session.get(Petition, petition_id).signature_count == 0


# --- signing again after a withdrawal, twice at once ----------------------------------------


@pytest.fixture
def withdrawn(app) -> tuple[int, int]:
    """A petition and Rui's signature on it, withdrawn and tallied; their ids."""
    petition_id = open_petition(app)
    with app.app_context():
        make_member("rui@example.org", "Rui Costa", city="Porto")
        signature = add_signature(db.session.get(Petition, petition_id), email="rui@example.org")
        services.withdraw_signature(signature)
        services.tally(petition_id)
        return petition_id, signature.id


def sign_again(petition_id: int, as_member: bool) -> services.SignOutcome:
    petition = db.session.get(Petition, petition_id)
    if as_member:
        member = member_by_email("rui@example.org")
        return services.sign_as_member(
            petition, member, comment=None, show_name=True, wants_updates=False, address="10.0.0.9"
        )
    return services.sign(petition, rui(), "10.0.0.9")


@pytest.mark.parametrize("as_member", [False, True], ids=["guest", "member"])
def test_signing_again_twice_at_once_renews_once_and_sends_one_email(
    app, monkeypatch, outbox: MailBox, run_jobs, withdrawn, as_member
):
    petition_id, signature_id = withdrawn
    if not as_member and db_dialect(app) == "sqlite":
        pytest.skip("on SQLite a guest's first statement, an INSERT, takes the write lock")
    run_jobs()
    outbox.clear()
    settle = services._settle_withdrawal
    other: list[services.SignOutcome] = []

    def the_other_request_first(signature: Signature) -> bool:
        # Both requests have read the signature as withdrawn; the other one renews it now.
        if not other:
            other.append(services.SignOutcome.CHECK_EMAIL)  # not again, from inside
            elsewhere(app, lambda: other.__setitem__(0, sign_again(petition_id, as_member)))
        return settle(signature)

    monkeypatch.setattr(services, "_settle_withdrawal", the_other_request_first)
    with app.app_context():
        outcome = sign_again(petition_id, as_member)

    if as_member:
        assert other == [services.SignOutcome.COUNTED]
        assert outcome == services.SignOutcome.ALREADY_SIGNED
        assert saved_state(app, signature_id) == SignatureState.CONFIRMED
    else:
        assert other == [services.SignOutcome.CHECK_EMAIL]
        assert outcome == services.SignOutcome.RECENTLY_SENT
        assert saved_state(app, signature_id) == SignatureState.PENDING
    run_jobs()
    assert len(outbox.to("rui@example.org")) == 1
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Signature)) == 1


# --- the hourly purge deleting a stale signature midway ------------------------------------


def test_one_click_over_a_stale_guest_signature_purged_midway_counts(app, outbox, run_jobs):
    petition_id = open_petition(app)
    with app.app_context():
        ana = make_member("ana@example.org", "Ana Lima")
        services.sign(
            db.session.get(Petition, petition_id), rui(email="ana@example.org"), "10.0.0.1"
        )
        stale(petition_id, "ana@example.org")
    run_jobs()
    outbox.clear()

    def purge_now(session, flush_context, instances):
        # The hourly purge, as the member's choices are being saved over the stale row.
        elsewhere(app, lambda: jobs.purge_stale_signatures())

    with app.app_context():
        ana = member_by_email("ana@example.org")
        event.listen(db.session(), "before_flush", purge_now, once=True)
        outcome = services.sign_as_member(
            db.session.get(Petition, petition_id),
            ana,
            comment=None,
            show_name=False,
            wants_updates=False,
            address="10.0.0.2",
        )
        assert outcome == services.SignOutcome.COUNTED
        signature = signature_of(petition_id, "ana@example.org")
        assert signature.state == SignatureState.CONFIRMED and signature.member_id == ana.id
    run_jobs()
    assert outbox.last_to("ana@example.org")["Subject"].startswith("You signed")
    with app.app_context():
        assert db.session.get(Petition, petition_id).signature_count == 1


def stale_withdrawal(petition_id: int, email: str) -> None:
    """Withdraw the signature, and date the withdrawal long enough ago for the purge."""
    services.withdraw_signature(signature_of(petition_id, email))
    week_ago = utcnow() - timedelta(days=8)
    db.session.execute(update(Signature).values(withdrawn_at=week_ago))
    db.session.commit()


@pytest.mark.parametrize("left", [stale, stale_withdrawal], ids=["pending", "withdrawn"])
def test_signing_over_a_stale_signature_purged_midway_signs_afresh(app, outbox, run_jobs, left):
    """Rui's old signature, unconfirmed for a week or withdrawn a week ago, is deleted by
    the hourly purge just after his new signature read it: he signs afresh."""
    if db_dialect(app) == "sqlite":
        pytest.skip("on SQLite a guest's first statement, an INSERT, takes the write lock")
    petition_id = open_petition(app)
    with app.app_context():
        services.sign(db.session.get(Petition, petition_id), rui(), "10.0.0.1")
        run_jobs()
        left(petition_id, "rui@example.org")
    run_jobs()
    outbox.clear()
    purged: list[int] = []

    def purge_once_read(conn, cursor, statement, *args):
        # The purge runs just after this request read the old signature.
        if not purged and statement.startswith("SELECT signatures.id"):
            purged.append(1)
            elsewhere(app, lambda: jobs.purge_stale_signatures())

    with app.app_context():
        event.listen(db.engine, "after_cursor_execute", purge_once_read)
        try:
            outcome = services.sign(db.session.get(Petition, petition_id), rui(), "10.0.0.2")
        finally:
            event.remove(db.engine, "after_cursor_execute", purge_once_read)
        assert purged
        assert outcome == services.SignOutcome.CHECK_EMAIL
        assert signature_of(petition_id).state == SignatureState.PENDING
    run_jobs()
    assert len(outbox.to("rui@example.org")) == 1


def test_withdrawing_a_stale_signature_purged_midway_says_it_no_longer_counts(app, client):
    petition_id = open_petition(app)
    with app.app_context():
        services.sign(db.session.get(Petition, petition_id), rui(), "10.0.0.1")
        stale(petition_id, "rui@example.org")
        token = services.withdrawal_token(signature_of(petition_id))
        engine = db.engine
    url = f"/petitions/signatures/{token}/withdraw"
    page = client.get(url)
    purged: list[int] = []

    def purge_now(conn, cursor, statement, *args):
        if not purged and statement.startswith("UPDATE signatures SET"):
            purged.append(1)
            elsewhere(app, lambda: jobs.purge_stale_signatures())

    event.listen(engine, "before_cursor_execute", purge_now)
    try:
        withdrawn = client.post(url, data={"csrf_token": csrf_token(page.text)})
    finally:
        event.remove(engine, "before_cursor_execute", purge_now)
    assert purged
    assert withdrawn.status_code == 302
    assert withdrawn.headers["Location"] == f"/petitions/{petition_id}"
    with app.app_context():
        assert signature_of(petition_id) is None
