"""Test helpers: reading mail, filling forms with their CSRF token, signing in."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import NamedTuple

from aiosmtpd.controller import Controller
from flask import Flask
from redis import Redis
from sqlalchemy import event

from core.extensions import db

CSRF_PATTERN = re.compile(
    r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"'
)
LINK_PATTERN = re.compile(r"https?://\S+")


def csrf_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = CSRF_PATTERN.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1) or match.group(2)


def submit(client, page_url: str, data: dict, action: str | None = None):
    """GET a page, then POST ``data`` with its CSRF token to ``action`` (default: the page)."""
    page = client.get(page_url)
    assert page.status_code == 200, page.status_code
    return client.post(action or page_url, data={"csrf_token": csrf_token(page.text), **data})


def text_body(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def links_in(message: EmailMessage) -> list[str]:
    return LINK_PATTERN.findall(text_body(message))


def path_of(link: str) -> str:
    """The path of an absolute link, for the test client."""
    return re.sub(r"^https?://[^/]+", "", link)


def signature_confirm_link(outbox: MailBox, email: str) -> str:
    """The confirmation link of the last signature email to ``email``, as a path."""
    message = outbox.last_to(email)
    return path_of(next(link for link in links_in(message) if link.endswith("/confirm")))


@contextmanager
def redis_down(app: Flask) -> Iterator[None]:
    """Point the app at a port where no Redis listens, so every command fails to connect."""
    state = app.extensions["redis_store"]
    working = state["connection"]
    limiter = app.extensions.pop("rate_limiter", None)  # built on the working connection
    state["connection"] = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    try:
        yield
    finally:
        state["connection"] = working
        app.extensions.pop("rate_limiter", None)
        if limiter is not None:
            app.extensions["rate_limiter"] = limiter


class MailBox:
    """The messages the outbox backend has written."""

    def __init__(self, app: Flask) -> None:
        self.folder = Path(app.instance_path) / "outbox"

    def messages(self) -> list[EmailMessage]:
        if not self.folder.exists():
            return []
        return [
            message_from_bytes(p.read_bytes(), policy=default_policy)
            for p in sorted(self.folder.glob("*.eml"))
        ]

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages() if m["To"] == address]

    def last_to(self, address: str) -> EmailMessage:
        found = self.to(address)
        assert found, f"no mail to {address}"
        return found[-1]

    def clear(self) -> None:
        if self.folder.exists():
            for path in self.folder.glob("*.eml"):
                path.unlink()


class Envelope(NamedTuple):
    """One message as the SMTP server took it: the envelope and the raw bytes."""

    sender: str
    recipients: list[str]
    raw: bytes


@dataclass
class SMTPSink:
    """A real SMTP server (aiosmtpd) keeping what it receives."""

    received: list[EmailMessage] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)
    port: int = 0
    reply: str | None = None  # set to e.g. "451 try later" to refuse every message
    refuse: set[str] = field(default_factory=set)  # addresses answered with 550
    defer: set[str] = field(default_factory=set)  # addresses answered with 451
    hang_up: set[str] = field(default_factory=set)  # taken, then the line drops unanswered
    smtputf8: bool = True  # offer international addresses (RFC 6531)
    connections: int = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        if address in self.defer:
            return "451 4.2.0 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.reply:
            return self.reply
        self.received.append(message_from_bytes(envelope.content, policy=default_policy))
        self.envelopes.append(
            Envelope(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        if self.hang_up.intersection(envelope.rcpt_tos):
            server.transport.close()
        return "250 OK"

    def start(self) -> None:
        with socket.socket() as probe:  # aiosmtpd needs a concrete port to check it is up
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._serve()

    def _serve(self) -> None:
        self.controller = Controller(
            self, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=self.smtputf8
        )
        self.controller.start()

    def restart(self, *, smtputf8: bool) -> None:
        """Serve again on the same port, offering SMTPUTF8 or not."""
        self.controller.stop()
        self.smtputf8 = smtputf8
        self._serve()

    def stop(self) -> None:
        self.controller.stop()


@dataclass
class Auth:
    """Registers, confirms and logs in members through the real pages."""

    client: object
    outbox: MailBox
    run_jobs: object

    def register(
        self, email="ana@example.org", password="correct horse battery", name="Ana", city="Lisbon"
    ):
        return submit(
            self.client,
            "/register",
            {
                "display_name": name,
                "email": email,
                "password": password,
                "confirm": password,
                "city": city,
            },
        )

    def confirm(self, email="ana@example.org", password="correct horse battery"):
        """Follow the emailed link, logged in as the account, as the link asks."""
        self.run_jobs()
        link = next(u for u in links_in(self.outbox.last_to(email)) if "/confirm/" in u)
        if self.client.get("/account").status_code != 200:
            self.login(email, password)
        return submit(self.client, path_of(link), {})

    def login(self, email="ana@example.org", password="correct horse battery"):
        return submit(self.client, "/login", {"email": email, "password": password})

    def logout(self):
        return submit(self.client, "/logout", {})

    def member(self, email="ana@example.org", password="correct horse battery", **kwargs):
        """A registered, confirmed and logged-in member."""
        self.register(email=email, password=password, **kwargs)
        response = self.confirm(email, password)
        assert response.status_code == 302, response.status_code
        return response


def scheduled_jobs(app: Flask) -> dict[str, datetime]:
    """Jobs waiting for RQ's scheduler, by id, with the time each is due."""
    from core.queue import all_queues

    due = {}
    with app.app_context():
        for queue in all_queues():
            registry = queue.scheduled_job_registry
            for job_id in registry.get_job_ids():
                due[job_id] = registry.get_scheduled_time(job_id)
    return due


def release_scheduled(app: Flask, job_ids: list[str] | None = None) -> int:
    """Move scheduled jobs onto their queues now, as the scheduler does when they fall due."""
    from rq.job import Job

    from core.queue import all_queues

    released = 0
    with app.app_context():
        for queue in all_queues():
            registry = queue.scheduled_job_registry
            for job_id in registry.get_job_ids():
                if job_ids is not None and job_id not in job_ids:
                    continue
                job = Job.fetch(job_id, connection=queue.connection)
                queue._enqueue_job(job)
                registry.remove(job_id)
                released += 1
    return released


@contextmanager
def once_a_statement_runs(pattern: str, moment: str, action: Callable[[], None]):
    """Run ``action`` the first time a statement matching ``pattern`` is sent, at
    ``moment`` ("before" or "after" it): another request's change, landing mid-way."""
    ran: list[bool] = []

    def run_once(conn, cursor, statement, parameters, context, executemany):
        if not ran and re.search(pattern, statement):
            ran.append(True)
            action()

    name = f"{moment}_cursor_execute"
    event.listen(db.engine, name, run_once)
    try:
        yield
    finally:
        event.remove(db.engine, name, run_once)
    assert ran, f"no statement matched {pattern!r}"
