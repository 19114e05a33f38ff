"""Accounts: registration, confirmation, login, reset, settings, deletion and data export."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from core.extensions import db
from members import services
from members.models import ApiToken, Member
from tests.factories import make_member
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

    # The link asks for the account's password first.
    asked = client.get(path_of(link))
    assert asked.status_code == 302 and "/login" in asked.headers["Location"]
    logged_in = submit(
        client,
        asked.headers["Location"],
        {"email": "ana@example.org", "password": "correct horse battery"},
    )
    assert logged_in.headers["Location"] == path_of(link)
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
    assert page_title(reset.text) == "Check your email to reset your password · Groundswell"
    reset_page = client.get(reset_link).text
    assert '<label for="password">New password</label>' in reset_page
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
        ({"display_name": "   "}, "display_name", "Please enter a name to show."),
        ({"city": " \t "}, "city", "Please enter your city."),
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


def test_someone_who_registered_anothers_address_loses_the_account_to_its_owner(
    app, client, auth, outbox, run_jobs
):
    """Mallory registers Ana's address with a password of his own. Ana's link will not
    confirm without that password; resetting it confirms her address, and Mallory's
    session ends."""
    auth.register(password="mallory's own password")
    assert auth.login(password="mallory's own password").status_code == 302
    run_jobs()
    link = path_of(next(u for u in links_in(outbox.last_to("ana@example.org")) if "/confirm/" in u))

    ana = app.test_client()
    assert "/login" in ana.get(link).headers["Location"]
    with app.app_context():
        assert not db.session.scalar(select(Member)).is_confirmed

    submit(ana, "/reset", {"email": "ana@example.org"})
    run_jobs()
    reset = path_of(next(u for u in links_in(outbox.last_to("ana@example.org")) if "/reset/" in u))
    new_password = {"password": "ana's own passphrase", "confirm": "ana's own passphrase"}
    assert submit(ana, reset, new_password).status_code == 302
    with app.app_context():
        assert db.session.scalar(select(Member)).is_confirmed
    assert client.get("/account").status_code == 302  # Mallory is logged out
    assert auth.login(password="mallory's own password").status_code == 422


def test_the_check_email_page_names_only_the_address_just_registered(client, auth):
    assert (
        "We sent a link to <strong>your address</strong>"
        in client.get("/register/check-email?to=call+555-0100+to+confirm").text
    )
    registered = auth.register(email="ana@example.org")
    page = client.get(registered.headers["Location"]).text
    assert "We sent a link to <strong>ana@example.org</strong>" in page
    spoofed = client.get("/register/check-email?to=call+555-0100+to+confirm").text
    assert "555-0100" not in spoofed


def test_login_attempts_are_rate_limited_per_account(app, client, auth):
    app.config["LOGIN_LIMIT_PER_ACCOUNT"] = "4 per 15 minutes"
    try:
        auth.member()  # logs in once, to confirm the address: one attempt of four
        auth.logout()
        for _ in range(3):
            assert auth.login(password="wrong guess here").status_code == 422
        blocked = auth.login()  # even the right password waits
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) > 0
        assert "Too many attempts to log in" in blocked.text
    finally:
        app.config["LOGIN_LIMIT_PER_ACCOUNT"] = "10 per 15 minutes"


def test_guesses_sent_all_at_once_get_no_more_tries_than_the_limit(app, auth, monkeypatch):
    """Six wrong guesses at one account arrive together and are all being checked at the
    same moment: with three tries left, three are checked and three refused."""
    app.config["LOGIN_LIMIT_PER_ACCOUNT"] = "4 per 15 minutes"
    auth.member()  # logs in once, to confirm the address: one attempt of four
    auth.logout()
    clients = [app.test_client() for _ in range(6)]
    tokens = [csrf_token(c.get("/login").text) for c in clients]
    checking = threading.Barrier(6, timeout=2)
    checked = services.check_password_of_no_account  # any slow check of a wrong password

    def check_together(member, password):
        with contextlib.suppress(threading.BrokenBarrierError):
            checking.wait()  # every guess let through is being checked now
        return checked(password)

    monkeypatch.setattr(services, "_password_matches", check_together)
    guess = {"email": "ana@example.org", "password": "a wrong guess"}

    def attempt(number: int) -> int:
        form = {"csrf_token": tokens[number], **guess}
        return clients[number].post("/login", data=form).status_code

    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = sorted(pool.map(attempt, range(6)))
    finally:
        app.config["LOGIN_LIMIT_PER_ACCOUNT"] = "10 per 15 minutes"
    assert statuses == [422, 422, 422, 429, 429, 429]


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


def page_title(html: str) -> str:
    return re.search(r"<title>(.*?)</title>", html, re.S).group(1)


def test_a_remembered_browser_stays_logged_in_after_changing_the_password(app, client, auth):
    """Ana ticked "Keep me logged in", then changed her password on this browser: after a
    restart (only the lasting cookie left), she is still logged in."""
    auth.member()
    auth.logout()
    form = {"email": "ana@example.org", "password": PASSWORD, "remember": "y"}
    assert submit(client, "/login", form).status_code == 302
    new = "a new passphrase"
    change = {"current_password": PASSWORD, "password": new, "confirm": new}
    assert submit(client, "/account", change, "/account/password").status_code == 302

    restarted = app.test_client()
    restarted.set_cookie("remember_token", client.get_cookie("remember_token").value)
    assert restarted.get("/account").status_code == 200


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
    assert page_title(wrong.text).startswith("Error: ")  # the password's own check passed
    too_long = client.post(
        "/account/profile", data={"csrf_token": token, "display_name": "A" * 101, "city": ""}
    )
    assert too_long.status_code == 422
    assert page_title(too_long.text) == "Error: Your account · Groundswell"
    # The refused form sits below others: the top of the page points to its errors.
    notice = too_long.text.index('<a href="#form-errors">Nothing was saved')
    assert notice < too_long.text.index('id="profile-heading"')
    assert too_long.text.count('id="form-errors"') == 1
    assert "#form-errors" not in client.get("/account").text

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


def change_email_to(client, email: str, password: str = PASSWORD):
    token = csrf_token(client.get("/account").text)
    return client.post(
        "/account/email",
        data={"csrf_token": token, "email": email, "current_password": password},
    )


def confirm_links_to(outbox, email: str) -> list[str]:
    return [
        path_of(link)
        for message in outbox.to(email)
        for link in links_in(message)
        if "/confirm/" in link
    ]


def test_changing_email_to_a_taken_address_looks_the_same_and_only_tells_its_owner(
    app, client, auth, outbox, run_jobs
):
    auth.member(email="bo@example.org", name="Bo")
    auth.logout()
    auth.member()
    outbox.clear()
    for address in ("bo@example.org", "ana.new@example.org"):
        assert change_email_to(client, address).status_code == 302
        page = client.get("/account").text
        assert f"We sent a confirmation link to {address}." in page
        assert f"We sent a link to <strong>{address}</strong>" in page

    run_jobs()
    with app.app_context():
        assert db.session.scalar(select(Member.email).where(Member.display_name == "Ana")) == (
            "ana@example.org"
        )
    assert confirm_links_to(outbox, "bo@example.org") == []
    assert [m["Subject"] for m in outbox.to("bo@example.org")] == [
        "You already have a Groundswell account"
    ]


def test_entering_the_current_address_cancels_an_email_change_and_its_link(
    app, client, auth, outbox, run_jobs
):
    auth.member()
    change_email_to(client, "ana.typo@example.org")
    run_jobs()
    [link] = confirm_links_to(outbox, "ana.typo@example.org")

    cancelled = change_email_to(client, "ANA@example.org")
    assert cancelled.status_code == 302
    assert "Your email change was cancelled" in client.get("/account").text
    with app.app_context():
        member = db.session.scalar(select(Member))
        assert (member.email, member.pending_email) == ("ana@example.org", None)
    assert client.get(link).status_code == 404
    assert (
        client.post(link, data={"csrf_token": csrf_token(client.get("/account").text)}).status_code
        == 404
    )
    with app.app_context():
        assert db.session.scalar(select(Member.email)) == "ana@example.org"


def test_a_link_for_a_replaced_email_change_stops_working(app, client, auth, outbox, run_jobs):
    auth.member()
    change_email_to(client, "ana.first@example.org")
    run_jobs()
    [first_link] = confirm_links_to(outbox, "ana.first@example.org")
    change_email_to(client, "ana.second@example.org")
    assert client.get(first_link).status_code == 404


def test_confirming_a_new_address_needs_the_member_logged_in(app, client, auth, outbox, run_jobs):
    auth.member()
    change_email_to(client, "ana.new@example.org")
    run_jobs()
    [link] = confirm_links_to(outbox, "ana.new@example.org")

    stranger = app.test_client()
    response = stranger.get(link)
    assert response.status_code == 302
    assert path_of(response.headers["Location"]).startswith("/login?next=")
    with app.app_context():
        assert db.session.scalar(select(Member.email)) == "ana@example.org"

    logged_in = submit(
        stranger,
        path_of(response.headers["Location"]),
        {"email": "ana@example.org", "password": PASSWORD},
    )
    assert path_of(logged_in.headers["Location"]) == link
    assert submit(stranger, link, {}).status_code == 302
    with app.app_context():
        assert db.session.scalar(select(Member.email)) == "ana.new@example.org"


def test_reset_links_for_a_former_address_stop_working_and_are_not_sent(
    app, client, auth, outbox, run_jobs
):
    auth.member()
    stranger = app.test_client()
    submit(stranger, "/reset", {"email": "ana@example.org"})
    run_jobs()
    [mailed_link] = [path_of(u) for u in links_in(outbox.last_to("ana@example.org"))]
    submit(stranger, "/reset", {"email": "ana@example.org"})  # still queued at the move

    change_email_to(client, "ana.new@example.org")
    with app.app_context():
        ana = db.session.scalar(select(Member))
        assert services.confirm_email(services.confirmation_token(ana))
    outbox.clear()
    run_jobs()

    # Whoever reads the old inbox now neither gets a fresh link nor can use the old one.
    assert outbox.to("ana@example.org") == []
    assert stranger.get(mailed_link).status_code == 404
    new_password = "a new password 1"
    taken = stranger.post(
        mailed_link,
        data={
            "csrf_token": csrf_token(stranger.get("/reset").text),
            "password": new_password,
            "confirm": new_password,
        },
    )
    assert taken.status_code == 404 and stranger.get("/account").status_code == 302
    with app.app_context():
        assert db.session.scalar(select(Member)).check_password(PASSWORD)


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


@pytest.mark.parametrize(
    "next_url",
    [
        "/%09/evil.example",
        "/%0d%0a/x",
        "//evil.example",
        "/%5Cevil.example",
        "https://evil.example",
        "/%20/x",
    ],
)
def test_login_never_follows_next_off_the_site(client, auth, next_url):
    auth.member()
    auth.logout()
    response = submit(
        client, f"/login?next={next_url}", {"email": "ana@example.org", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_login_follows_next_to_a_page_on_this_site(client, auth):
    auth.member()
    auth.logout()
    response = submit(
        client,
        "/login?next=%2Fpetitions%3Fpage%3D2",
        {"email": "ana@example.org", "password": PASSWORD},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/petitions?page=2"


NEW_TOKEN = re.compile(r'id="new-token" value="([^"]+)"')


def make_api_token(client):
    page = client.get("/account")
    return client.post(
        "/account/api-tokens", data={"csrf_token": csrf_token(page.text), "name": "Script"}
    )


def api_status(client, token: str) -> int:
    return client.get("/api/v1/petitions", headers={"OSDI-API-Token": token}).status_code


def test_an_unconfirmed_member_cannot_make_an_api_token(app, client, auth):
    auth.register()
    assert auth.login().status_code == 302
    assert "once you have confirmed your email address" in client.get("/account").text
    response = make_api_token(client)
    assert response.status_code == 422
    assert "Please confirm your email address before making a token." in response.text
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ApiToken)) == 0


def test_the_data_download_lists_api_tokens_without_their_secret(app, client, auth):
    """Each token's name, hint and times are in the download; the token and its hash never."""
    auth.member()
    token = NEW_TOKEN.search(make_api_token(client).text).group(1)
    assert api_status(client, token) == 200  # marks it used
    with app.app_context():
        stored = db.session.scalar(select(ApiToken))
        token_hash, hint = stored.token_hash, stored.hint
    body = client.get("/account/data.json").text
    tokens = json.loads(body)["api_tokens"]
    assert len(tokens) == 1
    assert tokens[0]["hint"] == hint and token.startswith(hint)
    assert tokens[0]["created_at"] and tokens[0]["last_used_at"]
    assert set(tokens[0]) == {"name", "hint", "created_at", "last_used_at"}
    assert token not in body and token_hash not in body and token[len(hint) :] not in body


def test_a_password_reset_revokes_api_tokens_and_ends_other_sessions(
    app, client, auth, outbox, run_jobs
):
    auth.member()
    token = NEW_TOKEN.search(make_api_token(client).text).group(1)
    assert api_status(client, token) == 200

    owner = app.test_client()
    submit(owner, "/reset", {"email": "ana@example.org"})
    run_jobs()
    reset_link = path_of(links_in(outbox.last_to("ana@example.org"))[0])
    new_password = "the owner's own passphrase"
    changed = submit(owner, reset_link, {"password": new_password, "confirm": new_password})
    assert changed.status_code == 302

    assert api_status(owner, token) == 401
    assert client.get("/account").status_code == 302  # the other session ended
    assert owner.get("/account").status_code == 200


def test_changing_the_password_revokes_api_tokens(app, client, auth):
    auth.member()
    token = NEW_TOKEN.search(make_api_token(client).text).group(1)
    page = client.get("/account")
    changed = client.post(
        "/account/password",
        data={
            "csrf_token": csrf_token(page.text),
            "current_password": PASSWORD,
            "password": "y" * 12,
            "confirm": "y" * 12,
        },
    )
    assert changed.status_code == 302
    assert api_status(client, token) == 401
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ApiToken)) == 0


class Spy:
    """Counts calls to a function and passes them through."""

    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


def test_login_checks_a_password_even_for_an_unknown_address(client, monkeypatch):
    import members.models

    spy = Spy(members.models.check_password_hash)
    monkeypatch.setattr(members.models, "check_password_hash", spy)
    response = submit(
        client, "/login", {"email": "nobody@example.org", "password": "a guessed password"}
    )
    assert response.status_code == 422
    assert spy.calls == 1  # as for a known address, so the answer takes as long


def test_registering_a_taken_address_hashes_the_password_all_the_same(
    app, client, auth, monkeypatch
):
    import members.models

    auth.member()
    auth.logout()
    spy = Spy(members.models.generate_password_hash)
    monkeypatch.setattr(members.models, "generate_password_hash", spy)
    assert auth.register().status_code == 302
    assert member_count(app) == 1
    assert spy.calls == 1


def test_notices_about_a_taken_address_leave_the_confirmation_allowance(
    app, client, auth, outbox, run_jobs
):
    auth.register()
    assert auth.login().status_code == 302
    someone_else = app.test_client()
    for _ in range(6):
        submit(someone_else, "/register", {**GOOD, "display_name": "Someone else"})
    page = client.get("/account")
    client.post("/account/resend-confirmation", data={"csrf_token": csrf_token(page.text)})
    run_jobs()
    subjects = [m["Subject"] for m in outbox.to("ana@example.org")]
    assert subjects.count("Confirm your email for Groundswell") == 2
    assert subjects.count("You already have a Groundswell account") == 5


def test_accounts_registered_under_spellings_of_one_inbox_do_not_flood_it(app, outbox, run_jobs):
    spellings = [f"{'a.na' if n % 2 else 'ana'}+{n}@gmail.com" for n in range(8)]
    for address in spellings:
        submit(app.test_client(), "/register", {**GOOD, "email": address})
    run_jobs()
    assert member_count(app) == 8  # every account is made; only the mail is held back
    sent = [message for address in spellings for message in outbox.to(address)]
    assert len(sent) == 5  # ACCOUNT_MAIL_LIMIT
    assert {m["Subject"] for m in sent} == {"Confirm your email for Groundswell"}

    # The inbox's own address is not held back by the other spellings.
    submit(app.test_client(), "/register", {**GOOD, "email": "ana@gmail.com"})
    run_jobs()
    [confirmation] = outbox.to("ana@gmail.com")
    assert confirmation["Subject"] == "Confirm your email for Groundswell"


def test_registering_an_address_taken_in_a_race_answers_as_usual(
    app, client, auth, outbox, run_jobs, monkeypatch
):

    auth.member()
    auth.logout()
    outbox.clear()
    real_find_by_email = services.find_by_email
    lookups = []

    def before_the_other_insert(email):
        # The first look sees no account: the other request commits right after it.
        lookups.append(email)
        return None if len(lookups) == 1 else real_find_by_email(email)

    monkeypatch.setattr(services, "find_by_email", before_the_other_insert)
    response = auth.register(name="Same time")
    assert response.status_code == 302
    assert path_of(response.headers["Location"]).startswith("/register/check-email")
    assert member_count(app) == 1
    run_jobs()
    assert outbox.last_to("ana@example.org")["Subject"] == "You already have a Groundswell account"


def test_confirming_an_address_another_account_took_in_a_race_answers_404(
    app, client, auth, outbox, run_jobs, monkeypatch
):

    auth.member()
    change_email_to(client, "ana.new@example.org")
    run_jobs()
    [link] = confirm_links_to(outbox, "ana.new@example.org")
    with app.app_context():
        make_member("ana.new@example.org", "Quicker")
    # The look for the address misses the account that took it a moment before.
    monkeypatch.setattr(services, "find_by_email", lambda email: None)
    response = submit(client, link, {})
    assert response.status_code == 404
    with app.app_context():
        emails = set(db.session.scalars(select(Member.email)))
    assert emails == {"ana@example.org", "ana.new@example.org"}


def _ids_and_label_targets(html: str) -> tuple[list[str], list[str]]:
    # Every form carries a hidden CSRF input; no label or link points at those.
    ids = [i for i in re.findall(r'\sid="([^"]+)"', html) if i != "csrf_token"]
    return ids, re.findall(r'<label[^>]*\sfor="([^"]+)"', html)


def test_each_form_on_the_account_page_labels_its_own_fields(app, client, auth):
    auth.member()
    token = csrf_token(client.get("/account").text)
    refused = client.post(
        "/account/password",
        data={"csrf_token": token, "current_password": "nope", "password": "x" * 12,
              "confirm": "x" * 12},
    )  # fmt: skip
    assert refused.status_code == 422
    for page in (client.get("/account").text, refused.text):
        ids, targets = _ids_and_label_targets(page)
        assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
        assert set(targets) <= set(ids)
    # The summary's link leads to the field that was wrong, in the form that was sent.
    assert 'href="#password-current_password"' in refused.text
    assert re.search(r'id="password-current_password"[^>]*aria-invalid="true"', refused.text) or (
        re.search(r'aria-invalid="true"[^>]*id="password-current_password"', refused.text)
    )
