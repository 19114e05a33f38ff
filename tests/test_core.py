"""Site-wide behaviour: health check, error pages, and no 500 for any malformed request."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import bindparam, func, select
from werkzeug.routing import AnyConverter, IntegerConverter
from werkzeug.test import EnvironBuilder, run_wsgi_app

from core.db import built_once, on_commit
from core.extensions import db, redis_store
from core.urls import is_web_link
from members.models import Member
from notifications.services import requeue_stalled
from petitions.models import Petition
from tests.factories import make_member, make_petition
from tests.helpers import csrf_token, redis_down, submit


def test_healthz_reports_database_and_redis(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok", "redis": "ok"}


def test_healthz_is_503_when_redis_is_unreachable(app, client):
    with redis_down(app):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["redis"] == "down"
    assert response.json["database"] == "ok"


def test_pages_answer_503_not_500_when_redis_is_down(app, client):
    with redis_down(app):
        response = submit(client, "/login", {"email": "ana@example.org", "password": "x" * 12})
    assert response.status_code == 503
    assert "Temporarily unavailable" in response.text


def test_registering_while_redis_is_down_loses_nothing(app, client, outbox, run_jobs):
    form = {
        "display_name": "Ana",
        "email": "ana@example.org",
        "password": "long enough password",
        "confirm": "long enough password",
        "city": "Lisbon",
    }
    with redis_down(app):
        response = submit(client, "/register", form)
    assert response.status_code == 302
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Member)) == 1
    run_jobs()
    assert outbox.messages() == []  # nothing was queued while Redis was away
    with app.app_context():
        # Redis is back: the periodic sweep queues what waited.
        assert requeue_stalled(older_than=timedelta(0)) == 1
    run_jobs()
    assert outbox.last_to("ana@example.org")["Subject"] == "Confirm your email for Groundswell"


def test_unknown_page_is_a_friendly_404(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "We could not find that page" in response.text
    assert '<a class="brand"' in response.text


def test_dev_outbox_is_hidden_unless_debugging(app, client, auth, run_jobs):
    assert client.get("/dev/outbox").status_code == 404
    auth.register()
    run_jobs()
    app.debug = True
    try:
        listing = client.get("/dev/outbox")
        assert listing.status_code == 200
        assert "Confirm your email for Groundswell" in listing.text
    finally:
        app.debug = False


JUNK_VALUES = [
    "",
    "x" * 100_000,
    "\x00\x01\x02",
    "<script>alert(1)</script>",
    "'; DROP TABLE members; --",
    "ünïcødé ✊🏽",
    "-1",
    "99999999999999999999999",
]


def _routes(app, method: str) -> list[str]:
    urls = []
    for rule in app.url_map.iter_rules():
        if method not in rule.methods or rule.endpoint == "static":
            continue
        values = {}
        for name, converter in rule._converters.items():
            if isinstance(converter, AnyConverter):  # only its own words reach the view
                values[name] = sorted(converter.items)[0]
            elif isinstance(converter, IntegerConverter):
                values[name] = 2**40
            else:
                values[name] = "junk-value"
        urls.append(rule.build(values, append_unknown=False)[1])
    return urls


@pytest.fixture(params=["guest", "member"])
def any_client(request, app, client, auth):
    if request.param == "member":
        auth.member()
    return client


def test_no_form_route_answers_500_to_junk(app, any_client):
    for url in _routes(app, "POST"):
        token = csrf_token(any_client.get("/login").text)
        for junk in JUNK_VALUES:
            fields = {name: junk for name in _field_names(app)}
            for data in ({}, fields, {"csrf_token": token, **fields}, {"csrf_token": junk}):
                response = any_client.post(url, data=data)
                assert response.status_code < 500, (url, junk[:20], response.status_code)
        for body, content_type in [
            (b"\xff\xfe\xfa", "application/x-www-form-urlencoded"),
            (b'{"email": [1, 2]}', "application/json"),
            (b"[1]", "application/json"),
            (b'"x"', "application/json"),
            (b"true", "application/json"),
            (b"[" * 5000 + b"]" * 5000, "application/json"),
            (b"--broken", "multipart/form-data; boundary=zz"),
            (b"a=" + b"%" * 10, "application/x-www-form-urlencoded"),
        ]:
            response = any_client.post(url, data=body, content_type=content_type)
            assert response.status_code < 500, (url, body, response.status_code)
        files = {name: (io.BytesIO(b"text"), "f.txt") for name in _field_names(app)}
        response = any_client.post(url, data={"csrf_token": token, **files})
        assert response.status_code < 500, (url, "every field a file", response.status_code)


@pytest.mark.parametrize(
    ("link", "is_link"),
    [
        ("https://example.org/meet", True),
        ("  http://example.org:8080/x  ", True),
        ("javascript:alert(1)", False),
        ("https://", False),
        ("http://[", False),
        ("https://[::1", False),
        ("http://\u2100.com", False),
        ("https://example.org:99999/x", False),
        ("https://ex ample.org", False),
        ("https://example.org/a b", False),
    ],
)
def test_only_a_whole_web_link_counts_as_one(link, is_link):
    assert is_web_link(link) is is_link


def test_a_json_body_on_a_form_gets_the_forms_errors(client):
    for body in (b"[1]", b'"x"', b"1", b"{}"):
        response = client.post("/login", data=body, content_type="application/json")
        assert response.status_code == 422, body
        assert "Please enter your email address." in response.text


def test_a_file_sent_for_a_text_field_counts_as_that_field_left_empty(client):
    token = csrf_token(client.get("/login").text)
    upload = (io.BytesIO(b"ana@example.org"), "address.txt")
    response = client.post("/login", data={"csrf_token": token, "email": upload})
    assert response.status_code == 422
    assert "Please enter your email address." in response.text


def test_a_button_posted_from_a_stale_page_changes_nothing_and_says_to_reload(client, auth):
    auth.member()
    for data in ({}, {"csrf_token": "from-a-page-long-gone"}):
        response = client.post("/notifications/read-all", data=data)
        assert response.status_code == 422
        assert "Go back, reload it and try again." in response.text


def test_the_plain_error_page_for_when_the_page_itself_fails_names_its_language(
    app, client, monkeypatch
):
    import core.errors

    def broken(*args, **kwargs):
        raise RuntimeError("the template needs what just failed")

    monkeypatch.setattr(core.errors, "render_template", broken)
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.text.startswith('<!doctype html><html lang="en">')


def test_no_page_answers_500_to_junk_in_the_url(app, any_client):
    for url in _routes(app, "GET"):
        for query in ("", "?next=//evil.example&page=-5&q=%00", "?page=abc&per_page=99999999"):
            response = any_client.get(url + query)
            assert response.status_code < 500, (url, query, response.status_code)


@pytest.mark.parametrize("host", ["xn--", "xn--a", "xn--zz.com"])
def test_a_host_name_that_cannot_be_decoded_is_a_bad_request(app, host):
    for url in ("/account", "/petitions", "/"):
        # Straight to the app: the test client cannot decode such a host either.
        environ = EnvironBuilder(path=url, headers={"Host": host}).get_environ()
        _, status, _ = run_wsgi_app(app, environ, buffered=True)
        assert status.startswith("400 "), (url, status)


def _field_names(app) -> set[str]:
    """Every field name of every form in the app, so junk reaches real validators."""
    from core.forms import Form

    names: set[str] = set()
    pending = list(Form.__subclasses__())
    while pending:
        form_class = pending.pop()
        pending.extend(form_class.__subclasses__())
        names.update(
            name for name in dir(form_class) if hasattr(getattr(form_class, name), "field_class")
        )
    return names


def test_secure_cookies_follow_an_https_base_url(monkeypatch, tmp_path):
    from core.config import load_config

    monkeypatch.setenv("BASE_URL", "https://groundswell.example")
    config = load_config(tmp_path)
    assert config["SESSION_COOKIE_SECURE"] and config["REMEMBER_COOKIE_SECURE"]
    monkeypatch.setenv("BASE_URL", "http://127.0.0.1:5000")
    assert not load_config(tmp_path)["SESSION_COOKIE_SECURE"]


def test_secret_key_is_generated_once_and_kept(monkeypatch, tmp_path):
    from core.config import load_config

    monkeypatch.delenv("SECRET_KEY", raising=False)
    first = load_config(tmp_path)["SECRET_KEY"]
    assert len(first) >= 40
    assert load_config(tmp_path)["SECRET_KEY"] == first
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    assert load_config(tmp_path)["SECRET_KEY"] == "from-the-environment"


def test_embedded_redis_is_shared_by_every_client_of_the_instance(app):
    with app.app_context():
        if app.config["REDIS_URL"] != "embedded":
            pytest.skip("REDIS_URL points at a real server")
        redis_store.connection.set("shared", "yes")
        # Closed afterwards: the server stops at exit only once its last client has gone.
        with Redis.from_url(app.extensions["redis_store"]["url"]) as other:
            assert other.get("shared") == b"yes"


def test_a_statement_built_once_is_shared_and_runs_with_fresh_values(app):
    builds = []

    @built_once
    def member_named():
        builds.append(1)
        return select(Member.id).where(Member.email == bindparam("address"))

    with app.app_context():
        ada = Member(
            email="ada@example.org", display_name="Ada", password="a long passphrase", city="Porto"
        )
        db.session.add(ada)
        db.session.commit()
        assert member_named() is member_named()
        assert db.session.scalar(member_named(), {"address": "ada@example.org"}) == ada.id
        assert db.session.scalar(member_named(), {"address": "bob@example.org"}) is None
    assert len(builds) == 1


def test_an_action_on_commit_runs_once_after_the_commit_and_never_after_a_rollback(app):
    ran = []
    with app.app_context():
        on_commit(lambda: ran.append("kept"))
        with db.session.begin_nested():
            pass  # a savepoint saves nothing yet
        assert ran == []
        db.session.commit()
        assert ran == ["kept"]
        db.session.commit()
        assert ran == ["kept"]

        on_commit(lambda: ran.append("undone"))
        db.session.rollback()
        db.session.commit()
        assert ran == ["kept"]

        on_commit(lambda: ran.append("outer"))
        savepoint = db.session.begin_nested()
        on_commit(lambda: ran.append("savepoint undone"))
        savepoint.rollback()
        with db.session.begin_nested():
            on_commit(lambda: ran.append("savepoint kept"))
        db.session.commit()
        assert ran == ["kept", "outer", "savepoint kept"]


def test_a_failing_action_on_commit_keeps_what_was_committed(app):
    def fail() -> None:
        raise RuntimeError("queue unreachable")

    with app.app_context():
        db.session.add(
            Member(
                email="ada@example.org",
                display_name="Ada",
                password="a long passphrase",
                city="Porto",
            )
        )
        on_commit(fail)
        db.session.commit()
        db.session.remove()
        assert db.session.scalar(select(func.count(Member.id))) == 1


def test_seed_demo_loads_data_once_and_its_printed_login_works(app, client, run_jobs):
    runner = app.test_cli_runner()
    login_file = Path(app.instance_path) / "demo-login.txt"
    login_file.unlink(missing_ok=True)
    try:
        first = runner.invoke(args=["seed-demo"])
        assert first.exit_code == 0, first.output
        email, password = re.search(r"Demo login: (\S+)\s+password: (\S+)", first.output).groups()
        again = runner.invoke(args=["seed-demo"])
        assert again.output == first.output  # printed again, not loaded twice
        with app.app_context():
            assert db.session.scalar(select(func.count()).select_from(Member)) == 5
            assert db.session.scalar(select(func.count()).select_from(Petition)) == 4
    finally:
        login_file.unlink(missing_ok=True)
    assert submit(client, "/login", {"email": email, "password": password}).status_code == 302
    run_jobs()
    for url in ("/", "/petitions", "/campaigns", "/cities/lisbon", "/account", "/notifications"):
        assert client.get(url).status_code == 200, url


def test_a_worker_can_be_given_only_some_queues(app, redis):
    from core.queue import enqueue, get_queue
    from petitions.jobs import tally_stragglers

    with app.app_context():
        for queue in ("high", "bulk"):
            enqueue(tally_stragglers, queue=queue)
    result = app.test_cli_runner().invoke(
        args=["worker", "--burst", "--queue", "high", "--log-level", "WARNING"]
    )
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert (get_queue("high").count, get_queue("bulk").count) == (0, 1)


@pytest.mark.parametrize(
    "value",
    [
        "Confirm your signature: Cap holiday lets",
        "  spaces  at both ends  ",
        "a\ttab and  double  spaces",
        "",
        "form\x0cfeed",
        "file\x1cseparator",
        "folded\r\n continuation",
        "x" * 990,
        "word " * 300,
    ],
)
def test_mail_headers_are_written_as_the_standard_folding_writes_them(value):
    from email.errors import HeaderParseError
    from email.policy import compat32

    from core.mail import LONGEST_LINE, MAIL_POLICY

    standard = compat32.clone(linesep="\r\n", max_line_length=LONGEST_LINE)

    def written(policy) -> str | type:
        try:
            return policy.fold("Subject", value)
        except HeaderParseError as error:
            return type(error)

    assert written(MAIL_POLICY) == written(standard)


@pytest.mark.parametrize(
    "address", ["ana@example.org\r\nBcc: all@example.org", "zoë@exämple.org\nBcc: x@example.org"]
)
def test_a_line_break_in_a_recipient_address_is_refused(app, address):
    from types import SimpleNamespace

    from core import mail

    member = SimpleNamespace(display_name="Ana")
    with app.test_request_context(), pytest.raises(ValueError, match="line break"):
        mail.render("already_registered", address, member=member, login_link="", reset_link="")


def failed_login_status(client, forwarded_for: str, attempt: int) -> int:
    """One failed login from a client whose proxy says it is ``forwarded_for``."""
    client.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded_for
    # A new address each time, so only the limit per client address can apply.
    data = {"email": f"guess{attempt}@example.org", "password": "a wrong guess"}
    return submit(client, "/login", data).status_code


@pytest.fixture
def behind_one_proxy(app, monkeypatch):
    """The app as configured to run behind one reverse proxy."""
    from core.app import create_app

    monkeypatch.setenv("PROXY_HOPS", "1")
    same_services = ("TESTING", "SQLALCHEMY_DATABASE_URI", "REDIS_URL", "MAIL_URL", "BASE_URL")
    proxied = create_app({key: app.config[key] for key in same_services})
    proxied.config["LOGIN_LIMIT_PER_ADDRESS"] = "2 per 15 minutes"
    yield proxied
    with proxied.app_context():
        db.engine.dispose()


def test_behind_a_proxy_each_client_address_has_its_own_login_limit(behind_one_proxy):
    first, second = behind_one_proxy.test_client(), behind_one_proxy.test_client()
    assert failed_login_status(first, "203.0.113.1", 1) == 422
    assert failed_login_status(first, "203.0.113.1", 2) == 422
    assert failed_login_status(first, "203.0.113.1", 3) == 429
    assert failed_login_status(second, "203.0.113.2", 4) == 422


def test_without_a_proxy_a_forwarded_address_is_ignored(app):
    app.config["LOGIN_LIMIT_PER_ADDRESS"] = "2 per 15 minutes"
    try:
        first, second = app.test_client(), app.test_client()
        assert failed_login_status(first, "203.0.113.1", 1) == 422
        assert failed_login_status(first, "203.0.113.1", 2) == 422
        # Anyone can write the header, so it cannot buy a fresh allowance.
        assert failed_login_status(second, "203.0.113.2", 3) == 429
    finally:
        app.config["LOGIN_LIMIT_PER_ADDRESS"] = "50 per 15 minutes"


def test_an_id_in_a_url_is_written_in_ascii_digits_only(app, client):
    with app.app_context():
        petition_id = make_petition(make_member()).id
    assert client.get(f"/petitions/{petition_id}").status_code == 200
    arabic_indic = str(petition_id).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    assert client.get(f"/petitions/{arabic_indic}").status_code == 404


@pytest.mark.parametrize("url", ["/account", "/notifications", "/notifications/preferences"])
def test_a_page_of_several_forms_gives_each_id_once(client, auth, url):
    auth.member()
    ids = re.findall(r'\sid="([^"]+)"', client.get(url).text)
    assert ids and len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def _heading_levels(html: str) -> list[int]:
    return [int(level) for level in re.findall(r"<h([1-6])[\s>]", html)]


@pytest.mark.parametrize("url", ["/petitions", "/campaigns", "/chapters"])
def test_listing_pages_never_skip_a_heading_level(app, client, url):
    from tests.factories import make_campaign, make_chapter, make_member, make_petition

    with app.app_context():
        organiser = make_member()
        make_petition(organiser)
        make_campaign(organiser)
        make_chapter(organiser)
    levels = _heading_levels(client.get(url).text)
    assert levels[0] == 1 and levels.count(1) == 1, levels
    assert len(levels) > 1, levels  # the listed cards have headings of their own
    assert all(b - a <= 1 for a, b in pairwise(levels)), levels
