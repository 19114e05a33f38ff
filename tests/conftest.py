"""Shared fixtures: a real database, a real Redis, a real RQ worker, mail, and a browser.

By default the suite needs no services: SQLite in a temporary folder and an embedded
Redis. ``TEST_DATABASE_URL`` and ``REDIS_URL`` point it at real servers instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask_migrate import upgrade
from redis import Redis
from sqlalchemy import text
from werkzeug.serving import make_server

from core.app import create_app
from core.extensions import db, redis_store
from core.queue import all_queues, make_worker
from tests.helpers import Auth, MailBox, SMTPSink


def _reset_database(app: Flask) -> None:
    """Start from an empty schema, then build it through the migrations."""
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        upgrade()


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    instance = tmp_path_factory.mktemp("instance")
    os.environ["INSTANCE_PATH"] = str(instance)
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": os.environ.get(
                "TEST_DATABASE_URL", f"sqlite:///{instance / 'test.db'}"
            ),
            "REDIS_URL": os.environ.get("REDIS_URL", "embedded"),
            "MAIL_URL": "outbox",
            "BASE_URL": "http://localhost",
            "PAGE_CACHE_SECONDS": 0,  # pages change within a test; one test turns it on
            # Burst workers would wait out every pause, and never run a job scheduled for
            # later; a test of each sets it.
            "TRANSACTIONAL_LINGER_SECONDS": 0,
            "TALLY_DELAY_SECONDS": 0,
        }
    )
    _reset_database(app)
    yield app
    with app.app_context():
        db.engine.dispose()


def _empty_tables() -> None:
    tables = list(reversed(db.metadata.sorted_tables))
    if db.engine.dialect.name == "postgresql":
        names = ", ".join(f'"{t.name}"' for t in tables)
        db.session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    else:
        for table in tables:
            db.session.execute(table.delete())
    db.session.commit()


@pytest.fixture(autouse=True)
def clean_state(app: Flask) -> Iterator[None]:
    """Every test starts with empty tables, an empty Redis and an empty outbox."""
    with app.app_context():
        _empty_tables()
        redis_store.connection.flushdb()
    MailBox(app).clear()
    yield
    with app.app_context():
        db.session.remove()


@pytest.fixture
def ctx(app: Flask) -> Iterator[None]:
    """An app context for tests that call services directly."""
    with app.app_context():
        yield


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def redis(app: Flask) -> Redis:
    with app.app_context():
        return redis_store.connection


@pytest.fixture
def run_jobs(app: Flask):
    """Run every queued job through a real RQ worker in burst mode; returns how many ran."""

    def settled() -> int:
        return sum(
            queue.finished_job_registry.count + queue.failed_job_registry.count
            for queue in all_queues()
        )

    def run() -> int:
        with app.app_context():
            before = settled()
            make_worker(simple=True).work(burst=True)
            return settled() - before

    return run


@pytest.fixture
def outbox(app: Flask) -> MailBox:
    return MailBox(app)


@pytest.fixture
def auth(client, outbox: MailBox, run_jobs) -> Auth:
    return Auth(client, outbox, run_jobs)


@pytest.fixture
def smtp_sink(app: Flask) -> Iterator[SMTPSink]:
    """A real SMTP server in this process; the app sends through it during the test."""
    sink = SMTPSink()
    sink.start()
    previous = app.config["MAIL_URL"]
    app.config["MAIL_URL"] = f"smtp://127.0.0.1:{sink.port}"
    yield sink
    app.config["MAIL_URL"] = previous
    sink.stop()


@pytest.fixture(scope="session")
def live_server(app: Flask) -> Iterator[str]:
    """The app served over real HTTP on a free port of the loopback interface."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium, driven by Playwright."""
    if not CHROMIUM.exists():
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"REQUIRE_BROWSER is set but {CHROMIUM} is missing")
        pytest.skip(f"no Chromium at {CHROMIUM}; .ci/run installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, live_server: str):
    context = browser.new_context(base_url=live_server)
    page = context.new_page()
    yield page
    context.close()
