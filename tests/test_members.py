"""Accounts: registration, confirmation, login, reset, settings, deletion and data export."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from core.extensions import db
from members.models import Member
from tests.helpers import csrf_token, links_in, path_of, submit

PASSWORD = "correct horse battery"


def member_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Member))


def test_register_confirm_logout_login_and_reset(app, client, auth, outbox, run_jobs):
    response = auth.register()
    assert response.status_code == 302
    assert outbox.messages() == []  # the web request only queues the email

    run_jobs()
    assert len(outbox.messages()) == 1
    message = outbox.last_to("ana@example.org")
    assert message["Subject"] == "Confirm your email for Groundswell"
    assert message.is_multipart() and message.get_body(("html",)) is not None
    link = next(link for link in links_in(message) if "/confirm/" in link)

    # A GET (what mail scanners do) shows a button and confirms nothing.
    page = client.get(path_of(link))
    assert page.status_code == 200 and "Confirm my email" in page.text
    with app.app_context():
        assert db.session.scalar(select(Member)).email_confirmed_at is None

    confirmed = client.post(path_of(link), data={"csrf_token": csrf_token(page.text)})
    assert confirmed.status_code == 302
    with app.app_context():
        assert db.session.scalar(select(Member)).is_confirmed
    assert "Ana" in client.get("/account").text

    auth.logout()
    assert client.get("/account").status_code == 302
    assert auth.login().status_code == 302
    assert client.get("/account").status_code == 200
    auth.logout()

    reset = submit(client, "/reset", {"email": "ANA@example.org"})
    assert "Check your email" in reset.text
    run_jobs()
    reset_link = path_of(links_in(outbox.last_to("ana@example.org"))[0])
    new_password = "a brand new passphrase"
    changed = submit(client, reset_link, {"password": new_password, "confirm": new_password})
    assert changed.status_code == 302
    auth.logout()

    refused = auth.login(password=PASSWORD)
    assert refused.status_code == 422
    assert "do not match an account" in refused.text
    assert auth.login(password=new_password).status_code == 302
    # The reset link was single-use.
    assert client.get(reset_link).status_code == 404


def test_confirmation_link_can_be_forged_no_way(client):
    assert client.get("/confirm/not-a-real-token").status_code == 404
    assert client.post("/confirm/not-a-real-token", data={}).status_code == 404
    assert client.get("/reset/not-a-real-token").status_code == 404


def test_registering_a_taken_email_creates_nothing_and_tells_the_owner(app, auth, outbox, run_jobs):
    auth.member()
    auth.logout()
    response = auth.register(email="Ana@Example.org", name="Impostor")
    assert response.status_code == 302  # the page does not reveal that the account exists
    assert member_count(app) == 1
    run_jobs()
    assert outbox.last_to("ana@example.org")["Subject"] == "You already have a Groundswell account"


GOOD = {
    "display_name": "Ana",
    "email": "ana@example.org",
    "password": PASSWORD,
    "confirm": PASSWORD,
    "city": "Lisbon",
}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"display_name": ""}, "display_name", "Please enter a name to show."),
        ({"display_name": "x" * 81}, "display_name", "at most 80 characters"),
        ({"email": "not-an-email"}, "email", "valid email address"),
        ({"email": ""}, "email", "Please enter your email address."),
        ({"email": "a" * 250 + "@example.org"}, "email", "at most 254 characters"),
        ({"password": "short", "confirm": "short"}, "password", "10 to 128 characters"),
        ({"confirm": "something else entirely"}, "confirm", "do not match"),
        ({"city": ""}, "city", "Please enter your city."),
        ({"city": "Lis\x00bon"}, "city", "unusual characters"),
    ],
)
def test_register_rejects_bad_input_beside_the_field(app, client, change, field, message):
    response = submit(client, "/register", {**GOOD, **change})
    assert response.status_code == 422
    error_html = response.text.split(f'id="{field}-error"', 1)
    assert len(error_html) == 2, f"no error beside {field}"
    assert message in error_html[1].split("</p>", 1)[0]
    assert f'aria-describedby="{field}-help {field}-error"' in response.text or (
        f'aria-describedby="{field}-error"' in response.text
    )
    assert member_count(app) == 0


def test_forms_without_csrf_token_are_refused(app, client):
    response = client.post("/register", data=GOOD)
    assert response.status_code == 422
    assert "This form expired" in response.text
    assert member_count(app) == 0
    assert client.post("/login", data={"email": "a@b.org", "password": "x"}).status_code == 422
    assert client.post("/reset", data={"email": "a@b.org"}).status_code == 422


def test_login_gives_one_message_for_unknown_email_and_wrong_password(client, auth):
    auth.member()
    auth.logout()
    wrong_password = auth.login(password="not the password")
    unknown = auth.login(email="nobody@example.org")
    assert wrong_password.status_code == unknown.status_code == 422
    expected = "That email and password do not match an account."
    assert expected in wrong_password.text and expected in unknown.text


def test_login_attempts_are_rate_limited_per_account(app, client, auth):
    app.config["LOGIN_LIMIT_PER_ACCOUNT"] = "3 per 15 minutes"
    try:
        auth.member()
        auth.logout()
        for _ in range(3):
            assert auth.login(password="wrong guess here").status_code == 422
        blocked = auth.login()  # even the right password waits
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) > 0
        assert "Too many failed attempts" in blocked.text
    finally:
        app.config["LOGIN_LIMIT_PER_ACCOUNT"] = "10 per 15 minutes"


def test_login_attempts_are_rate_limited_per_address(app, client, auth):
    app.config["LOGIN_LIMIT_PER_ADDRESS"] = "4 per 15 minutes"
    try:
        for n in range(4):
            assert auth.login(email=f"guess{n}@example.org").status_code == 422
        assert auth.login(email="another@example.org").status_code == 429
    finally:
        app.config["LOGIN_LIMIT_PER_ADDRESS"] = "50 per 15 minutes"


def test_remember_me_sets_a_lasting_cookie(client, auth):
    auth.member()
    auth.logout()
    response = submit(
        client, "/login", {"email": "ana@example.org", "password": PASSWORD, "remember": "y"}
    )
    cookies = response.headers.getlist("Set-Cookie")
    remember = next(c for c in cookies if c.startswith("remember_token="))
    assert "HttpOnly" in remember and "SameSite=Lax" in remember and "Expires=" in remember
    session = next(c for c in cookies if c.startswith("session="))
    assert "HttpOnly" in session and "SameSite=Lax" in session


def test_account_settings_change_name_city_and_password(app, client, auth):
    auth.member()
    page = client.get("/account")
    token = csrf_token(page.text)
    saved = client.post(
        "/account/profile", data={"csrf_token": token, "display_name": "Ana R.", "city": "Porto"}
    )
    assert saved.status_code == 302
    profile = client.get("/members/1").text
    assert "Ana R." in profile and "Porto" in profile

    wrong = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current_password": "nope",
            "password": "x" * 12,
            "confirm": "x" * 12,
        },
    )
    assert wrong.status_code == 422 and "not your current password" in wrong.text

    other_device = app.test_client()
    assert (
        submit(
            other_device, "/login", {"email": "ana@example.org", "password": PASSWORD}
        ).status_code
        == 302
    )
    changed = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current_password": PASSWORD,
            "password": "y" * 12,
            "confirm": "y" * 12,
        },
    )
    assert changed.status_code == 302
    assert client.get("/account").status_code == 200  # this session continues
    assert other_device.get("/account").status_code == 302  # the other one ended


def test_changing_email_needs_reconfirmation(app, client, auth, outbox, run_jobs):
    auth.member()
    token = csrf_token(client.get("/account").text)
    response = client.post(
        "/account/email",
        data={"csrf_token": token, "email": "ana.new@example.org", "current_password": PASSWORD},
    )
    assert response.status_code == 302
    with app.app_context():
        member = db.session.scalar(select(Member))
        assert member.email == "ana@example.org" and member.pending_email == "ana.new@example.org"
    auth.confirm("ana.new@example.org")
    with app.app_context():
        member = db.session.scalar(select(Member))
        assert member.email == "ana.new@example.org" and member.pending_email is None


def test_changing_email_to_a_taken_address_is_refused(app, client, auth):
    auth.member(email="bo@example.org", name="Bo")
    auth.logout()
    auth.member()
    token = csrf_token(client.get("/account").text)
    response = client.post(
        "/account/email",
        data={"csrf_token": token, "email": "bo@example.org", "current_password": PASSWORD},
    )
    assert response.status_code == 422
    assert "Another account already uses that address." in response.text


def test_download_my_data_and_delete_account(app, client, auth):
    auth.member()
    export = client.get("/account/data.json")
    assert export.status_code == 200
    assert "attachment" in export.headers["Content-Disposition"]
    data = json.loads(export.text)
    assert data["account"]["email"] == "ana@example.org"
    assert data["account"]["city"] == "Lisbon"

    token = csrf_token(client.get("/account").text)
    unticked = client.post(
        "/account/delete", data={"csrf_token": token, "current_password": PASSWORD}
    )
    assert unticked.status_code == 422 and member_count(app) == 1
    deleted = client.post(
        "/account/delete",
        data={"csrf_token": token, "current_password": PASSWORD, "understood": "y"},
    )
    assert deleted.status_code == 302
    assert member_count(app) == 0
    assert client.get("/account").status_code == 302
    assert client.get("/members/1").status_code == 404


def test_confirmation_email_goes_through_real_smtp(app, auth, smtp_sink, run_jobs, outbox):
    auth.register()
    run_jobs()
    assert outbox.messages() == []
    assert [m["To"] for m in smtp_sink.received] == ["ana@example.org"]
    assert "/confirm/" in smtp_sink.received[0].get_body(("plain",)).get_content()


def test_temporary_smtp_failure_is_retried_without_double_sending(
    app, auth, smtp_sink, run_jobs, redis
):
    from rq.registry import ScheduledJobRegistry

    from core.queue import get_queue

    smtp_sink.reply = "451 4.3.0 try again later"
    auth.register()
    run_jobs()
    assert smtp_sink.received == []
    with app.app_context():
        scheduled = ScheduledJobRegistry(queue=get_queue("high"))
        job_ids = scheduled.get_job_ids()
        assert len(job_ids) == 1  # waiting for its retry, not lost
        # Bring the retry forward and let the server accept this time.
        get_queue("high").enqueue_job(get_queue("high").fetch_job(job_ids[0]))
        scheduled.remove(job_ids[0])
    smtp_sink.reply = None
    run_jobs()
    run_jobs()
    assert [m["To"] for m in smtp_sink.received] == ["ana@example.org"]
