"""Notifications: deliveries recorded once, preferences, digests, unsubscribe, queues, SMTP."""

from __future__ import annotations

import re
import socket
import threading
import time
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from rq.cron import CronScheduler
from rq.registry import ScheduledJobRegistry
from rq.timeouts import JobTimeoutException
from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError

from core import mail
from core.db import utcnow
from core.extensions import db
from core.queue import PERIODIC_JOBS, get_queue, make_worker
from members import services as members
from notifications import jobs as notification_jobs
from notifications import services
from notifications.models import (
    Category,
    Delivery,
    DeliveryState,
    FailingAddress,
    Frequency,
    Notice,
    Notification,
    Preference,
)
from petitions import services as petitions
from petitions.models import Petition, PetitionUpdate, Signature, SignatureState
from tests.factories import add_signature, make_member, make_petition, member_by_email
from tests.helpers import (
    csrf_token,
    links_in,
    path_of,
    release_scheduled,
    signature_confirm_link,
    submit,
)

UPDATE = {"title": "We meet the council", "body": "On Monday we hand the signatures over."}


def petition_with_signers(app, count: int, *, wants_updates: bool = True) -> int:
    """An open petition with ``count`` confirmed signers, written in one statement."""
    with app.app_context():
        organiser = member_by_email("olga@example.org") or make_member()
        petition = make_petition(organiser)
        now = utcnow()
        rows = [
            {
                "petition_id": petition.id,
                "name": f"Signer {n}",
                "email": f"s{n}@example.org",
                "email_key": f"s{n}@example.org",
                "city": "Lisbon",
                "city_slug": "lisbon",
                "show_name": False,
                "wants_updates": wants_updates,
                "state": SignatureState.CONFIRMED,
                "counted": False,
                "created_at": now,
                "confirmed_at": now,
            }
            for n in range(count)
        ]
        if rows:
            db.session.execute(insert(Signature), rows)
            db.session.commit()
        return petition.id


def post_update(app, petition_id: int, title: str = UPDATE["title"]) -> int:
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        news = petitions.post_update(petition, title=title, body=UPDATE["body"])
        return news.id


def sign_for_updates(client, petition_id: int):
    """The logged-in member signs in one click, asking for updates."""
    url = f"/petitions/{petition_id}"
    return submit(client, url, {"wants_updates": "y"}, f"{url}/sign")


def sent_to(outbox) -> list[str]:
    return sorted(m["To"] for m in outbox.messages())


# --- exactly once -----------------------------------------------------------------------


def test_fan_out_run_twice_sends_once(app, outbox, run_jobs):
    petition_id = petition_with_signers(app, 5)
    post_update(app, petition_id)
    run_jobs()
    with app.app_context():
        notification_id = db.session.scalar(select(Notification.id))
        notification_jobs.fan_out(notification_id)
        notification_jobs.fan_out(notification_id)
    run_jobs()
    assert sent_to(outbox) == [f"s{n}@example.org" for n in range(5)]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Delivery)) == 5


def test_fan_out_killed_halfway_and_rerun_sends_each_message_once(app, outbox, run_jobs):
    signers = services.BATCH_SIZE * 2 + 50  # three batches
    petition_id = petition_with_signers(app, signers)
    post_update(app, petition_id)
    with app.app_context():
        # The worker dies after the fan-out and one batch: two batches are left queued.
        make_worker(simple=True).work(burst=True, max_jobs=2)
        assert len(outbox.messages()) == services.BATCH_SIZE
        # The fan-out runs again (say it was retried), queueing what is still pending.
        notification_id = db.session.scalar(select(Notification.id))
        notification_jobs.fan_out(notification_id)
    run_jobs()
    addresses = [m["To"] for m in outbox.messages()]
    assert len(addresses) == signers
    assert len(set(addresses)) == signers


class WorkerDied(BaseException):
    """Stands for the worker being killed: nothing after it runs."""


def killed_while_sending_to(address: str, *, after_recording: bool, dot_written: bool = False):
    """Fault injection: the worker is killed while sending ``address``'s message: just
    before the final dot, just after it (before the record of sending is committed), or
    just after the message was recorded as sent."""
    real_send = mail.SMTPConnection.send

    def send(self, message, handed_over=None):
        if message["To"] != address:
            return real_send(self, message, handed_over)
        if after_recording:

            def record_then_die() -> None:
                handed_over()
                raise WorkerDied

            return real_send(self, message, record_then_die)
        write = self.smtp.send

        def die_at_the_final_dot(data: bytes) -> None:
            if data == b".\r\n":
                if dot_written:
                    write(data)
                    time.sleep(0.2)  # the server reads the dot before the socket is gone
                raise WorkerDied
            write(data)

        self.smtp.send = die_at_the_final_dot
        return real_send(self, message, handed_over)

    return send


def kill_worker_during_batch(app, petition_id: int, send, monkeypatch) -> None:
    post_update(app, petition_id)
    monkeypatch.setattr(mail.SMTPConnection, "send", send)
    with app.app_context():
        make_worker(simple=True).work(burst=True, max_jobs=1)  # the fan-out
        batch = list(db.session.scalars(select(Delivery.id).order_by(Delivery.id)))
        with pytest.raises(WorkerDied):
            services.deliver(batch)
        db.session.rollback()
    monkeypatch.undo()


def delivery_states(app) -> dict[str, str]:
    with app.app_context():
        return {d.email: d.state for d in db.session.scalars(select(Delivery))}


def test_mail_a_killed_worker_never_handed_over_is_sent_once_its_claim_lapses(
    app, smtp_sink, run_jobs, monkeypatch
):
    petition_id = petition_with_signers(app, 3)
    kill_worker_during_batch(
        app,
        petition_id,
        killed_while_sending_to("s1@example.org", after_recording=False),
        monkeypatch,
    )
    assert [m["To"] for m in smtp_sink.received] == ["s0@example.org"]
    assert delivery_states(app) == {
        "s0@example.org": DeliveryState.SENT,
        "s1@example.org": DeliveryState.SENDING,  # the server never had the final dot
        "s2@example.org": DeliveryState.SENDING,
    }
    with app.app_context():
        assert services.requeue_stalled() == 0  # a claim younger than its lease may be live
    run_jobs()  # the batch job the fan-out queued finds nothing left to claim
    assert len(smtp_sink.received) == 1
    with app.app_context():
        assert services.requeue_stalled(older_than=timedelta(0), lease=timedelta(0)) == 1
    run_jobs()
    assert sorted(m["To"] for m in smtp_sink.received) == [f"s{n}@example.org" for n in range(3)]


def test_a_message_recorded_as_sent_is_never_sent_again_even_if_the_worker_died_then(
    app, smtp_sink, run_jobs, monkeypatch
):
    petition_id = petition_with_signers(app, 3)
    kill_worker_during_batch(
        app,
        petition_id,
        killed_while_sending_to("s1@example.org", after_recording=True),
        monkeypatch,
    )
    assert delivery_states(app)["s1@example.org"] == DeliveryState.SENT
    with app.app_context():
        services.requeue_stalled(older_than=timedelta(0), lease=timedelta(0))
    run_jobs()
    assert sorted(m["To"] for m in smtp_sink.received) == [f"s{n}@example.org" for n in range(3)]


def test_the_one_copy_a_crash_after_the_final_dot_can_cause_is_the_same_message_again(
    app, smtp_sink, run_jobs, monkeypatch
):
    petition_id = petition_with_signers(app, 3)
    kill_worker_during_batch(
        app,
        petition_id,
        killed_while_sending_to("s1@example.org", after_recording=False, dot_written=True),
        monkeypatch,
    )
    assert [m["To"] for m in smtp_sink.received] == ["s0@example.org", "s1@example.org"]
    assert delivery_states(app)["s1@example.org"] == DeliveryState.SENDING  # never recorded
    with app.app_context():
        services.requeue_stalled(older_than=timedelta(0), lease=timedelta(0))
    run_jobs()
    sent = [(m["To"], m["Message-ID"]) for m in smtp_sink.received]
    assert sorted(to for to, _ in sent) == [f"s{n}@example.org" for n in (0, 1, 1, 2)]
    copies = [message_id for to, message_id in sent if to == "s1@example.org"]
    assert copies[0] == copies[1]  # a mailbox that merges by Message-ID shows it once
    assert len({message_id for _, message_id in sent}) == 3


def test_a_message_the_server_took_without_answering_is_kept_as_sent(app, smtp_sink, run_jobs):
    """The server has s1's message but the line drops before its reply: s1's message stays
    recorded as sent and is never sent again; the others are sent once, over a new session."""
    petition_id = petition_with_signers(app, 3)
    smtp_sink.hang_up.add("s1@example.org")
    post_update(app, petition_id)
    run_jobs()
    assert sorted(m["To"] for m in smtp_sink.received) == [f"s{n}@example.org" for n in range(3)]
    assert set(delivery_states(app).values()) == {DeliveryState.SENT}
    assert smtp_sink.connections == 2
    with app.app_context():
        assert services.requeue_stalled(older_than=timedelta(0), lease=timedelta(0)) == 0
    run_jobs()
    assert len(smtp_sink.received) == 3


@pytest.mark.parametrize(
    "fault",
    [
        JobTimeoutException("Task exceeded maximum timeout value (180 seconds)"),
        OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly")),
    ],
    ids=["out of time", "database error"],
)
def test_a_job_that_fails_midway_leaves_what_it_did_not_send_to_its_retry(
    app, outbox, run_jobs, monkeypatch, fault
):
    """Not the sweep, half an hour later: the job's own retry sends the rest at once."""
    petition_id = petition_with_signers(app, 3)
    render = services.render

    def fails_at_s1(delivery, spec, context):
        if delivery.email == "s1@example.org":  # RQ's alarm, or the database, fails then
            raise fault
        return render(delivery, spec, context)

    monkeypatch.setattr(services, "render", fails_at_s1)
    post_update(app, petition_id)
    run_jobs()
    assert sent_to(outbox) == ["s0@example.org"]
    assert delivery_states(app) == {
        "s0@example.org": DeliveryState.SENT,
        "s1@example.org": DeliveryState.PENDING,
        "s2@example.org": DeliveryState.PENDING,
    }
    monkeypatch.undo()
    assert release_scheduled(app) == 1  # the batch's retry
    run_jobs()
    assert sent_to(outbox) == [f"s{n}@example.org" for n in range(3)]


def test_a_job_out_of_time_just_after_handing_a_message_over_never_sends_it_again(
    app, outbox, run_jobs, monkeypatch
):
    petition_id = petition_with_signers(app, 3)
    send = mail.OutboxConnection.send

    def out_of_time_after_s1(self, message, handed_over=None):
        send(self, message, handed_over)
        if message["To"] == "s1@example.org":
            raise JobTimeoutException("Task exceeded maximum timeout value (180 seconds)")

    monkeypatch.setattr(mail.OutboxConnection, "send", out_of_time_after_s1)
    post_update(app, petition_id)
    run_jobs()
    assert delivery_states(app) == {
        "s0@example.org": DeliveryState.SENT,
        "s1@example.org": DeliveryState.SENT,
        "s2@example.org": DeliveryState.PENDING,
    }
    monkeypatch.undo()
    assert release_scheduled(app) == 1
    run_jobs()
    assert sent_to(outbox) == [f"s{n}@example.org" for n in range(3)]


# --- queues and headers ---------------------------------------------------------------


def test_high_queue_is_served_before_a_bulk_backlog(app, client, outbox, run_jobs):
    petition_id = petition_with_signers(app, services.BATCH_SIZE * 3)
    post_update(app, petition_id)
    with app.app_context():
        make_worker(simple=True).work(burst=True, max_jobs=1)  # fan-out: three bulk batches
        assert get_queue("bulk").count == 3
    url = f"/petitions/{petition_id}"
    submit(client, url, {"name": "Rui", "email": "rui@example.org", "city": "Porto"}, f"{url}/sign")
    with app.app_context():
        make_worker(simple=True).work(burst=True, max_jobs=1)  # the confirmation: one job
    assert sent_to(outbox) == ["rui@example.org"]
    run_jobs()
    assert len(outbox.messages()) == services.BATCH_SIZE * 3 + 1


def sign_as_guest(client, petition_id: int, name: str, email: str) -> None:
    url = f"/petitions/{petition_id}"
    submit(client, url, {"name": name, "email": email, "city": "Porto"}, f"{url}/sign")


def sign_as_guests(client, petition_id: int, names: list[str]) -> None:
    for name in names:
        sign_as_guest(client, petition_id, name.title(), f"{name}@example.org")


def test_a_surge_of_confirmations_waits_for_one_job_that_sends_them_together(
    app, client, smtp_sink, run_jobs
):
    petition_id = petition_with_signers(app, 0)
    names = ["rui", "ana", "eva", "ines", "joao"]
    sign_as_guests(client, petition_id, names)
    with app.app_context():
        queued = [job.func_name for job in get_queue("high").jobs]
        assert queued == ["notifications.jobs.send_transactional"]
    assert run_jobs() == 1
    assert sorted(m["To"] for m in smtp_sink.received) == sorted(f"{n}@example.org" for n in names)
    assert smtp_sink.connections == 1


def test_one_job_sends_everything_waiting_a_batch_at_a_time(
    app, client, smtp_sink, run_jobs, monkeypatch
):
    monkeypatch.setattr(services, "TRANSACTIONAL_BATCH", 2)
    claimed: list[list[int]] = []
    deliver = services.deliver
    monkeypatch.setattr(services, "deliver", lambda ids: claimed.append(ids) or deliver(ids))
    petition_id = petition_with_signers(app, 0)
    names = ["rui", "ana", "eva", "ines", "joao"]
    sign_as_guests(client, petition_id, names)
    assert run_jobs() == 1
    assert [len(batch) for batch in claimed] == [2, 2, 1]
    assert sorted(m["To"] for m in smtp_sink.received) == sorted(f"{n}@example.org" for n in names)


def test_a_sender_that_has_run_its_time_hands_over_to_a_new_job(
    app, client, smtp_sink, run_jobs, monkeypatch
):
    monkeypatch.setattr(services, "TRANSACTIONAL_BATCH", 2)
    monkeypatch.setattr(services, "TRANSACTIONAL_RUN_SECONDS", 0)
    petition_id = petition_with_signers(app, 0)
    names = ["rui", "ana", "eva", "ines", "joao"]
    sign_as_guests(client, petition_id, names)
    assert run_jobs() == 3  # 2 + 2 + 1, with whatever else is on high served between them
    assert sorted(m["To"] for m in smtp_sink.received) == sorted(f"{n}@example.org" for n in names)


def test_a_sender_waits_a_moment_for_more_mail_before_it_stops(app, redis):
    def add_later() -> None:
        time.sleep(0.2)
        redis.rpush(services.TRANSACTIONAL_WAITING, 7, 8)

    with app.app_context():
        assert services.next_transactional_batch(linger=0) == []
        adder = threading.Thread(target=add_later)
        adder.start()
        assert services.next_transactional_batch(linger=5) == [7, 8]
        adder.join()
        assert services.next_transactional_batch(linger=0.1) == []


def test_mail_added_while_a_sender_runs_needs_no_job_of_its_own(
    app, client, smtp_sink, redis, run_jobs, monkeypatch
):
    petition_id = petition_with_signers(app, 0)
    sign_as_guests(client, petition_id, ["rui"])
    deliver = services.deliver

    def deliver_then_sign(ids: list[int]) -> int:
        sent = deliver(ids)
        if len(smtp_sink.received) == 1:  # a second signer arrives while the job runs
            sign_as_guests(app.test_client(), petition_id, ["ana"])
            assert get_queue("high").count == 0
        return sent

    monkeypatch.setattr(services, "deliver", deliver_then_sign)
    assert run_jobs() == 1
    assert sorted(m["To"] for m in smtp_sink.received) == ["ana@example.org", "rui@example.org"]
    assert not redis.exists(services.TRANSACTIONAL_QUEUED)


def test_confirmations_whose_ids_a_dead_worker_took_are_sent_by_the_sweep(
    app, client, smtp_sink, redis, run_jobs
):
    petition_id = petition_with_signers(app, 0)
    sign_as_guests(client, petition_id, ["rui", "ana"])
    redis.lpop(services.TRANSACTIONAL_WAITING, 10)  # taken, then the worker died
    run_jobs()
    assert smtp_sink.received == []
    with app.app_context():
        assert services.requeue_stalled() == 0  # recent: they may still be on their way
        assert services.requeue_stalled(older_than=timedelta(0)) == 1
    run_jobs()
    assert sorted(m["To"] for m in smtp_sink.received) == ["ana@example.org", "rui@example.org"]


def test_a_batch_that_fails_goes_on_as_a_job_of_its_own_with_retries(
    app, client, smtp_sink, run_jobs
):
    petition_id = petition_with_signers(app, 0)
    smtp_sink.reply = "451 4.3.0 mailbox busy, try later"
    sign_as_guests(client, petition_id, ["rui", "ana"])
    run_jobs()
    with app.app_context():
        scheduled = ScheduledJobRegistry(queue=get_queue("high"))
        [job_id] = scheduled.get_job_ids()
        job = get_queue("high").fetch_job(job_id)
        assert job.func_name == "notifications.jobs.deliver" and job.retries_left == 4
        assert sorted(job.args[0]) == sorted(db.session.scalars(select(Delivery.id)))


def test_bulk_mail_has_one_click_unsubscribe_headers_and_transactional_mail_does_not(
    app, client, outbox, run_jobs
):
    petition_id = petition_with_signers(app, 0)
    url = f"/petitions/{petition_id}"
    form = {"name": "Rui", "email": "rui@example.org", "city": "Porto", "wants_updates": "y"}
    submit(client, url, form, f"{url}/sign")
    run_jobs()
    confirmation = outbox.last_to("rui@example.org")
    assert confirmation["List-Unsubscribe"] is None
    assert confirmation["List-Unsubscribe-Post"] is None
    submit(client, path_of(links_in(confirmation)[0]), {})
    post_update(app, petition_id)
    run_jobs()
    update = outbox.last_to("rui@example.org")
    assert update["Subject"].startswith("We meet the council")
    assert update["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert re.fullmatch(
        r"<http://localhost/notifications/unsubscribe/\S+>", update["List-Unsubscribe"]
    )
    body = update.get_body(("plain",)).get_content()
    assert "/notifications/preferences/" in body
    assert "/notifications/preferences/" in update.get_body(("html",)).get_content()


# --- unsubscribe and preferences ------------------------------------------------------


def _unsubscribe_path(message) -> str:
    return urlsplit(message["List-Unsubscribe"].strip("<>")).path


def test_one_click_unsubscribe_by_post_without_a_session(app, outbox, run_jobs):
    petition_id = petition_with_signers(app, 2)
    post_update(app, petition_id)
    run_jobs()
    path = _unsubscribe_path(outbox.last_to("s0@example.org"))

    mail_client = app.test_client()  # no cookies, no CSRF token: as a mail client posts
    assert mail_client.get(path).status_code == 200  # a GET changes nothing
    with app.app_context():
        assert services.frequency_for("email:s0@example.org", "petitions") == Frequency.IMMEDIATELY
    response = mail_client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200 and "You are unsubscribed" in response.text
    with app.app_context():
        assert services.frequency_for("email:s0@example.org", "petitions") == Frequency.OFF

    outbox.clear()
    post_update(app, petition_id, title="Second update")
    run_jobs()
    assert sent_to(outbox) == ["s1@example.org"]


def test_a_forged_unsubscribe_token_is_refused(app, client, outbox, run_jobs):
    petition_id = petition_with_signers(app, 1)
    post_update(app, petition_id)
    run_jobs()
    path = _unsubscribe_path(outbox.last_to("s0@example.org"))
    forged = path[:-3] + ("abc" if not path.endswith("abc") else "xyz")
    response = client.post(forged, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 404
    assert client.post("/notifications/unsubscribe/nonsense").status_code == 404
    with app.app_context():
        assert services.frequency_for("email:s0@example.org", "petitions") == Frequency.IMMEDIATELY


def test_guests_manage_preferences_through_the_emailed_link(app, client, outbox, run_jobs):
    petition_id = petition_with_signers(app, 1)
    post_update(app, petition_id)
    run_jobs()
    link = next(u for u in links_in(outbox.last_to("s0@example.org")) if "/preferences/" in u)
    response = submit(
        client,
        path_of(link),
        {"petitions": "off", "campaigns": "daily", "meetups": "immediately", "decisions": "off"},
    )
    assert response.status_code == 302
    with app.app_context():
        assert services.preferences_of("email:s0@example.org") == {
            "petitions": Frequency.OFF,
            "campaigns": Frequency.DAILY,
            "meetups": Frequency.IMMEDIATELY,
            "decisions": Frequency.OFF,
        }
    bad = submit(client, path_of(link), {"petitions": "hourly"})
    assert bad.status_code == 422 and "Not a valid choice" in bad.text
    assert client.get("/notifications/preferences/forged").status_code == 404


def test_off_means_nothing_and_daily_means_one_digest(app, client, auth, outbox, run_jobs):
    petition_id = petition_with_signers(app, 0)
    auth.member()
    # The member signs in one click, asking for updates, then chooses a daily digest.
    sign_for_updates(client, petition_id)
    prefs = {"petitions": "daily", "campaigns": "off", "meetups": "off", "decisions": "off"}
    assert submit(client, "/notifications/preferences", prefs).status_code == 302
    run_jobs()
    outbox.clear()

    post_update(app, petition_id, title="First update")
    post_update(app, petition_id, title="Second update")
    run_jobs()
    assert outbox.messages() == []  # held for the digest
    with app.app_context():
        assert services.send_daily_digests() == 1
        assert services.send_daily_digests() == 0  # nothing new: nothing sent
    run_jobs()
    digest = outbox.last_to("ana@example.org")
    assert len(outbox.messages()) == 1
    text = digest.get_body(("plain",)).get_content()
    # Each item on lines of its own: its headline, then its link.
    lines = text.splitlines()
    items = [(line, lines[n + 1]) for n, line in enumerate(lines) if line.startswith("- ")]
    assert [title for title, _ in items] == [
        "- Fair pay for couriers: First update",
        "- Fair pay for couriers: Second update",
    ], text
    assert all(link.startswith("  http://localhost/petitions/") for _, link in items)
    assert digest["List-Unsubscribe"] is not None

    # Held for tomorrow's digest, then turned off before it goes: nothing is sent.
    outbox.clear()
    post_update(app, petition_id, title="Third update")
    run_jobs()
    prefs["petitions"] = "off"
    submit(client, "/notifications/preferences", prefs)
    post_update(app, petition_id, title="Fourth update")
    run_jobs()
    with app.app_context():
        tomorrow = utcnow().date() + timedelta(days=1)
        assert services.send_daily_digests(today=tomorrow) == 0
        states = db.session.scalars(select(Delivery.state).order_by(Delivery.id)).all()
        assert states[-2:] == [DeliveryState.SKIPPED, DeliveryState.SKIPPED]
    run_jobs()
    assert outbox.messages() == []


def member_on_daily_digests(app, client, auth, outbox, run_jobs) -> int:
    """Ana, a member who signed a petition for updates and takes them in a daily digest."""
    petition_id = petition_with_signers(app, 0)
    auth.member()
    sign_for_updates(client, petition_id)
    prefs = {"petitions": "daily", "campaigns": "off", "meetups": "off", "decisions": "off"}
    assert submit(client, "/notifications/preferences", prefs).status_code == 302
    run_jobs()
    outbox.clear()
    return petition_id


def digest_texts(outbox) -> list[str]:
    return [m.get_body(("plain",)).get_content() for m in outbox.to("ana@example.org")]


@pytest.mark.parametrize("category", ["petitions", services.ALL_CATEGORIES])
def test_a_digest_waiting_to_go_leaves_out_news_turned_off_meanwhile(
    app, client, auth, outbox, run_jobs, category
):
    """The day's digest is queued behind other mail; Ana turns petition news (or all
    mail) off with a one-click link before it goes: it does not go."""
    petition_id = member_on_daily_digests(app, client, auth, outbox, run_jobs)
    post_update(app, petition_id, title="Morning update")
    run_jobs()
    with app.app_context():
        assert services.send_daily_digests() == 1
        ana = db.session.scalar(select(Delivery.member_id).where(Delivery.member_id.is_not(None)))
        services.unsubscribe(f"member:{ana}", category)
    run_jobs()
    assert digest_texts(outbox) == []


def test_what_is_held_after_the_days_digest_went_waits_for_the_next_digest(
    app, client, auth, outbox, run_jobs
):
    petition_id = member_on_daily_digests(app, client, auth, outbox, run_jobs)
    post_update(app, petition_id, title="Morning update")
    run_jobs()
    with app.app_context():
        assert services.send_daily_digests() == 1
    post_update(app, petition_id, title="Afternoon update")
    run_jobs()
    with app.app_context():
        assert services.send_daily_digests() == 0  # the job again, the same day: one a day
        assert update_delivery_state("Afternoon update") == DeliveryState.DIGEST
        assert services.send_daily_digests(today=utcnow().date() + timedelta(days=1)) == 1
    run_jobs()
    first, second = digest_texts(outbox)
    assert "Morning update" in first and "Afternoon update" not in first
    assert "Afternoon update" in second and "Morning update" not in second


def test_a_digest_another_run_sent_a_moment_before_leaves_what_it_lacks_held(
    app, client, auth, outbox, run_jobs, monkeypatch
):
    petition_id = member_on_daily_digests(app, client, auth, outbox, run_jobs)
    post_update(app, petition_id, title="Morning update")
    run_jobs()
    with app.app_context():
        assert services.send_daily_digests() == 1
    post_update(app, petition_id, title="Afternoon update")
    run_jobs()
    # The other run's digest is saved between this run's look for it and its own.
    monkeypatch.setattr(services, "_notified_before", lambda key: False)
    with app.app_context():
        assert services.send_daily_digests() == 0
        assert update_delivery_state("Morning update") == DeliveryState.DIGESTED
        assert update_delivery_state("Afternoon update") == DeliveryState.DIGEST


def test_held_petition_news_is_dropped_once_the_signer_withdrew_or_the_petition_was_hidden(
    app, client, auth, outbox, run_jobs
):
    petition_id = member_on_daily_digests(app, client, auth, outbox, run_jobs)
    other_id = petition_with_signers(app, 0)
    sign_for_updates(client, other_id)
    run_jobs()
    outbox.clear()
    post_update(app, petition_id, title="News of a petition about to be hidden")
    post_update(app, other_id, title="News for someone about to withdraw")
    run_jobs()
    with app.app_context():
        petitions.hide(db.session.get(Petition, petition_id), "Breaks the house rules")
        mine = select(Signature).where(Signature.petition_id == other_id)
        assert petitions.withdraw_signature(db.session.scalar(mine))
        assert services.send_daily_digests() == 0
        assert update_delivery_state("about to be hidden") == DeliveryState.SKIPPED
        assert update_delivery_state("about to withdraw") == DeliveryState.SKIPPED
    run_jobs()
    assert outbox.to("ana@example.org") == []


def test_an_update_recorded_before_a_signer_withdrew_is_not_sent_to_them(app, outbox, run_jobs):
    petition_id = petition_with_signers(app, 3)
    post_update(app, petition_id, title="Recorded for three")
    with app.app_context():
        services.fan_out(db.session.scalar(select(func.max(Notification.id))))
        leaving = select(Signature).where(Signature.email == "s1@example.org")
        assert petitions.withdraw_signature(db.session.scalar(leaving))
    run_jobs()
    assert sent_to(outbox) == ["s0@example.org", "s2@example.org"]
    with app.app_context():
        states = db.session.execute(
            select(Delivery.email, Delivery.state, Delivery.error).order_by(Delivery.email)
        ).all()
        assert ("s1@example.org", DeliveryState.SKIPPED, services.NO_LONGER_APPLIES) in states


def update_delivery_state(title: str) -> str:
    return db.session.scalar(
        select(Delivery.state).join(Notification).where(Notification.title.endswith(title))
    )


# --- digests at scale and on time ---------------------------------------------------------


def guests_on_daily_digests(app, run_jobs, count: int) -> list[str]:
    """``count`` guest signers who take petition news daily, each with an update held."""
    petition_id = petition_with_signers(app, count)
    addresses = [f"s{n}@example.org" for n in range(count)]
    with app.app_context():
        for address in addresses:
            subscriber = services.address_subscriber(address)
            services.set_preferences(subscriber, {Category.PETITIONS: Frequency.DAILY})
    post_update(app, petition_id)
    run_jobs()
    return addresses


def digests_to(outbox) -> list[str]:
    return sorted(m["To"] for m in outbox.messages() if "digest" in m["Subject"])


def at_eight_utc(monkeypatch):
    """The clock stands at 08:00 UTC today, after the digests' hour."""
    eight = utcnow().replace(hour=8, minute=0, second=0, microsecond=0)
    monkeypatch.setattr(services, "utcnow", lambda: eight)


def test_digests_go_a_slice_of_addresses_per_job_until_everyone_has_theirs(
    app, outbox, redis, run_jobs, monkeypatch
):
    addresses = guests_on_daily_digests(app, run_jobs, 5)
    monkeypatch.setattr(services, "DIGEST_SLICE", 2, raising=False)
    at_eight_utc(monkeypatch)
    with app.app_context():
        assert notification_jobs.send_daily_digests() == 2  # one slice, then it hands over
        carry_on = [
            job for job in get_queue("bulk").get_jobs() if job.func_name.endswith("digests_after")
        ]
        assert [job.args[1] for job in carry_on] == ["s1@example.org"]
        assert notification_jobs.send_daily_digests() == 0  # the day's walk is under way
    run_jobs()
    assert digests_to(outbox) == addresses
    with app.app_context():
        assert notification_jobs.send_daily_digests() == 0  # done for the day
        # A slice run again (a retry) sends no one a second digest.
        assert (
            notification_jobs.send_digests_after(utcnow().date().isoformat(), "s0@example.org") == 0
        )
        assert services.send_daily_digests() == 0
    run_jobs()
    assert digests_to(outbox) == addresses


def test_a_digest_job_that_has_run_its_time_hands_over_to_the_next(
    app, outbox, run_jobs, monkeypatch
):
    addresses = guests_on_daily_digests(app, run_jobs, 3)
    monkeypatch.setattr(services, "DIGEST_RUN_SECONDS", 0, raising=False)
    with app.app_context():
        assert services.send_daily_digests() == 1
    run_jobs()
    assert digests_to(outbox) == addresses


def test_a_digest_walk_whose_next_job_was_lost_starts_again_without_second_digests(
    app, outbox, redis, run_jobs, monkeypatch
):
    addresses = guests_on_daily_digests(app, run_jobs, 5)
    monkeypatch.setattr(services, "DIGEST_SLICE", 2, raising=False)
    at_eight_utc(monkeypatch)
    with app.app_context():
        assert notification_jobs.send_daily_digests() == 2
        for job in get_queue("bulk").get_jobs():
            if job.func_name.endswith("digests_after"):
                job.delete()  # lost, as when Redis loses it
        assert notification_jobs.send_daily_digests() == 0  # it may still be going
        # An hour without progress: the walk is taken for lost.
        redis.delete(services.DIGESTS_WALKING.format(day=utcnow().date().isoformat()))
        # Started again: the first two have theirs, so it carries on with the rest.
        assert notification_jobs.send_daily_digests() == 2
    run_jobs()
    assert digests_to(outbox) == addresses


@pytest.fixture(params=["America/New_York", "Asia/Kathmandu"])
def scheduler_time_zone(request, monkeypatch):
    """The scheduler's machine keeps local time in a zone hours (and minutes) off UTC."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def test_the_days_digests_go_at_seven_utc_whatever_the_schedulers_time_zone(
    app, client, auth, outbox, redis, run_jobs, monkeypatch, scheduler_time_zone
):
    petition_id = member_on_daily_digests(app, client, auth, outbox, run_jobs)
    post_update(app, petition_id, title="Morning update")
    run_jobs()
    (digests,) = [job for job in PERIODIC_JOBS if job.func is notification_jobs.send_daily_digests]
    # Scheduled as `flask cron` does, from midnight UTC on.
    schedule = CronScheduler(connection=redis).register(
        digests.func, digests.queue, interval=digests.interval, cron=digests.cron
    )
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    schedule.set_enqueue_time(midnight)
    sent_at = None
    while sent_at is None and schedule.next_enqueue_time < midnight + timedelta(days=1):
        moment = schedule.next_enqueue_time
        monkeypatch.setattr(services, "utcnow", lambda moment=moment: moment)
        with app.app_context():
            if notification_jobs.send_daily_digests():
                sent_at = moment
        schedule.set_enqueue_time(moment)
    assert sent_at == midnight.replace(hour=7)
    run_jobs()
    assert "Morning update" in digest_texts(outbox)[0]


# --- an address that changes hands ------------------------------------------------------


def test_an_address_given_up_takes_none_of_its_old_owners_mail_along(
    app, client, auth, outbox, run_jobs
):
    """Ana moves to a new address and Bob registers her old one: her news follows her, and
    nothing sent to her account shows in Bob's download or changes when he leaves."""
    petition_id = petition_with_signers(app, 0)
    auth.member()  # Ana, at ana@example.org
    sign_for_updates(client, petition_id)
    post_update(app, petition_id, title="News for Ana's old address")
    run_jobs()
    with app.app_context():
        ana = member_by_email("ana@example.org")
        members.change_email(ana, "ana.new@example.org")
        assert members.confirm_email(members.confirmation_token(ana)) is not None
        bob = make_member("ana@example.org", "Bob")
        assert [e["title"] for e in members.export_data(bob)["emails"]] == []
        members.delete_account(bob)
        ana_mail = db.session.execute(
            select(Delivery.email, Notification.kind)
            .join(Delivery.notification)
            .order_by(Delivery.id)
        ).all()
        assert ana_mail == [
            ("ana@example.org", "confirm_account"),
            ("ana@example.org", "signature_receipt"),
            ("ana@example.org", "petition_update"),
            ("ana.new@example.org", "confirm_account"),
        ]

    outbox.clear()
    post_update(app, petition_id, title="News for Ana's new address")
    run_jobs()
    assert sent_to(outbox) == ["ana.new@example.org"]


def test_mail_waiting_for_a_member_follows_them_to_the_address_they_confirm(
    app, client, auth, outbox, run_jobs
):
    petition_id = member_on_daily_digests(app, client, auth, outbox, run_jobs)
    post_update(app, petition_id, title="Held for the digest")
    run_jobs()
    prefs = {"petitions": "immediately", "campaigns": "off", "meetups": "off", "decisions": "off"}
    assert submit(client, "/notifications/preferences", prefs).status_code == 302
    # Recorded for the old address, not yet sent, when Ana moves.
    post_update(app, petition_id, title="Waiting for a worker")
    with app.app_context():
        notification_id = db.session.scalar(select(func.max(Notification.id)))
        services.fan_out(notification_id)
        assert (
            db.session.scalar(
                select(Delivery.email).where(Delivery.notification_id == notification_id)
            )
            == "ana@example.org"
        )
        ana = member_by_email("ana@example.org")
        members.change_email(ana, "ana.new@example.org")
        assert members.confirm_email(members.confirmation_token(ana)) is not None
        assert services.send_daily_digests() == 1
    run_jobs()

    assert outbox.to("ana@example.org") == []
    texts = [m.get_body(("plain",)).get_content() for m in outbox.to("ana.new@example.org")]
    assert sum("Held for the digest" in text for text in texts) == 1
    assert sum("Waiting for a worker" in text for text in texts) == 1


def test_waiting_mail_the_new_address_already_has_is_not_sent_twice(app, outbox, run_jobs):
    with app.app_context():
        ana = make_member("ana@example.org", "Ana")
        services.notify(
            "already_registered",
            title="One piece of news, to both of Ana's addresses",
            payload={"member_id": ana.id, "email": "ana.new@example.org"},
            recipients=[
                services.Recipient("ana@example.org", ana.id, "Ana"),
                services.Recipient("ana.new@example.org", None, "Ana"),
            ],
        )
        services.notify(
            "already_registered",
            title="One piece of news, to two of Ana's old addresses",
            payload={"member_id": ana.id, "email": "ana.new@example.org"},
            recipients=[
                services.Recipient("ana@example.org", ana.id, "Ana"),
                services.Recipient("ana.old@example.org", ana.id, "Ana"),
            ],
        )
        members.change_email(ana, "ana.new@example.org")
        assert members.confirm_email(members.confirmation_token(ana)) is not None
        news = select(Delivery.email, Delivery.state).join(Delivery.notification)
        assert sorted(
            db.session.execute(
                news.where(Notification.title.endswith("both of Ana's addresses"))
            ).all()
        ) == [
            ("ana.new@example.org", DeliveryState.PENDING),
            ("ana@example.org", DeliveryState.SKIPPED),
        ]
        two_old = news.where(Notification.title.endswith("two of Ana's old addresses"))
        assert sorted(db.session.execute(two_old).all()) == [
            ("ana.new@example.org", DeliveryState.PENDING),
            ("ana.old@example.org", DeliveryState.SKIPPED),
        ]


def test_a_link_mailed_before_registering_shows_and_saves_the_members_choices(
    app, client, auth, outbox, run_jobs
):
    petition_id = petition_with_signers(app, 0)
    guest_signs_for_updates(app, client, outbox, run_jobs, petition_id)
    post_update(app, petition_id, title="First update")
    run_jobs()
    old_link = next(u for u in links_in(outbox.last_to("ana@example.org")) if "/preferences/" in u)
    auth.member()  # Ana registers the address, and confirms it
    daily = {"petitions": "daily", "campaigns": "off", "meetups": "off", "decisions": "off"}
    submit(client, "/notifications/preferences", daily)

    by_link = app.test_client()
    assert CheckedChoices(by_link.get(path_of(old_link)).text).choices == daily
    at_once = {**daily, "petitions": "immediately"}
    assert submit(by_link, path_of(old_link), at_once).status_code == 302
    assert shown_preferences(client) == at_once
    outbox.clear()
    post_update(app, petition_id, title="Second update")
    run_jobs()
    assert sent_to(outbox) == ["ana@example.org"]


# --- news that expires ------------------------------------------------------------------


def post_expiring_update(app, petition_id: int, title: str, expires_in: timedelta) -> None:
    """An update told like post_update does, but worth reading only for ``expires_in``."""
    with app.app_context():
        news = PetitionUpdate(petition_id=petition_id, title=title, body=UPDATE["body"])
        db.session.add(news)
        db.session.flush()
        services.notify(
            "petition_update",
            title=f"Petition: {title}",
            payload={"update_id": news.id},
            audience="petition-update-signers",
            expires_at=utcnow() + expires_in,
        )


def clock_moved_on(monkeypatch, by: timedelta) -> None:
    """From here on, notifications are sent and digests built ``by`` later than now."""
    later = utcnow() + by
    monkeypatch.setattr(services, "utcnow", lambda: later)


def delivery_of(title: str) -> Delivery:
    return db.session.scalar(
        select(Delivery).join(Notification).where(Notification.title.endswith(title))
    )


def test_a_digest_holding_only_news_that_has_expired_is_not_sent(
    app, client, auth, outbox, run_jobs, monkeypatch
):
    petition_id = member_on_daily_digests(app, client, auth, outbox, run_jobs)
    post_expiring_update(app, petition_id, "Rally in an hour", timedelta(hours=1))
    run_jobs()
    with app.app_context():
        assert update_delivery_state("Rally in an hour") == DeliveryState.DIGEST
    clock_moved_on(monkeypatch, timedelta(days=1))
    with app.app_context():
        assert services.send_daily_digests() == 0
        delivery = delivery_of("Rally in an hour")
        assert (delivery.state, delivery.error) == (DeliveryState.SKIPPED, "expired")
        assert services.send_daily_digests() == 0  # not held for another day either
    run_jobs()
    assert outbox.messages() == []


def test_news_that_expires_while_the_digest_waits_for_a_worker_is_left_out_of_it(
    app, client, auth, outbox, run_jobs, monkeypatch
):
    petition_id = member_on_daily_digests(app, client, auth, outbox, run_jobs)
    post_update(app, petition_id, title="Lasting update")
    post_expiring_update(app, petition_id, "Rally in an hour", timedelta(hours=1))
    run_jobs()
    with app.app_context():
        assert services.send_daily_digests() == 1
    clock_moved_on(monkeypatch, timedelta(hours=2))  # the workers were down meanwhile
    run_jobs()
    (digest,) = digest_texts(outbox)
    assert "Lasting update" in digest and "Rally in an hour" not in digest


def test_mail_a_worker_reaches_after_it_expired_is_not_sent_and_other_news_still_is(
    app, outbox, run_jobs, monkeypatch
):
    petition_id = petition_with_signers(app, 2)
    post_expiring_update(app, petition_id, "Rally in an hour", timedelta(hours=1))
    post_update(app, petition_id, title="Lasting update")
    clock_moved_on(monkeypatch, timedelta(hours=3))  # the workers come back hours later
    run_jobs()
    assert sent_to(outbox) == ["s0@example.org", "s1@example.org"]
    assert all("Lasting update" in m["Subject"] for m in outbox.messages())
    with app.app_context():
        expired = db.session.scalars(
            select(Delivery)
            .join(Notification)
            .where(Notification.title.endswith("Rally in an hour"))
        ).all()
        assert {(d.state, d.error) for d in expired} == {(DeliveryState.SKIPPED, "expired")}
        assert len(expired) == 2


def test_transactional_mail_ignores_preferences(app, client, outbox, run_jobs):
    petition_id = petition_with_signers(app, 0)
    with app.app_context():
        services.unsubscribe("email:rui@example.org", services.ALL_CATEGORIES)
    url = f"/petitions/{petition_id}"
    submit(client, url, {"name": "Rui", "email": "rui@example.org", "city": "Porto"}, f"{url}/sign")
    run_jobs()
    assert outbox.last_to("rui@example.org")["Subject"].startswith("Confirm your signature")


def guest_signs_for_updates(app, client, outbox, run_jobs, petition_id: int) -> None:
    """Ana signs as a guest, asking for updates, and confirms her signature."""
    url = f"/petitions/{petition_id}"
    form = {"name": "Ana", "email": "ana@example.org", "city": "Lisbon", "wants_updates": "y"}
    submit(client, url, form, f"{url}/sign")
    run_jobs()
    submit(client, signature_confirm_link(outbox, "ana@example.org"), {})


def test_news_held_for_a_guest_follows_the_choices_of_the_member_they_become(
    app, client, auth, outbox, run_jobs
):
    """Ana takes petition news daily as a guest, registers with the same address and turns
    all news off on her own page: what was held for her as a guest is not sent."""
    petition_id = petition_with_signers(app, 0)
    guest_signs_for_updates(app, client, outbox, run_jobs, petition_id)
    with app.app_context():
        services.set_preferences("email:ana@example.org", {Category.PETITIONS: Frequency.DAILY})
    post_update(app, petition_id, title="Held for a guest")
    run_jobs()
    auth.member()  # registers and confirms ana@example.org
    prefs = {"petitions": "off", "campaigns": "off", "meetups": "off", "decisions": "off"}
    assert submit(client, "/notifications/preferences", prefs).status_code == 302
    outbox.clear()
    with app.app_context():
        assert services.send_daily_digests() == 0
    run_jobs()
    assert outbox.to("ana@example.org") == []


def test_a_reset_link_followed_takes_a_refused_address_back_for_bulk_mail(
    app, client, auth, outbox, run_jobs
):
    """Ana's server refused one message for good; following a reset link proves she reads
    the address again, so her news is sent to it again."""
    auth.member()
    with app.app_context():
        services.mark_failing("ana@example.org", "550 mailbox unavailable")
    auth.logout()
    submit(client, "/reset", {"email": "ana@example.org"})
    run_jobs()
    link = next(u for u in links_in(outbox.last_to("ana@example.org")) if "/reset/" in u)
    new_password = {"password": "another horse battery", "confirm": "another horse battery"}
    assert submit(client, path_of(link), new_password).status_code == 302
    with app.app_context():
        assert not services.is_failing("ana@example.org")


class CheckedChoices(HTMLParser):
    """The checked radio button of each group on a page, by name."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.choices: dict[str, str] = {}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "input" and attributes.get("type") == "radio" and "checked" in attributes:
            self.choices[attributes["name"]] = attributes["value"]


def shown_preferences(client) -> dict[str, str]:
    return CheckedChoices(client.get("/notifications/preferences").text).choices


def one_click_unsubscribe(app, path: str) -> None:
    response = app.test_client().post(path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200


def test_a_guests_unsubscribe_holds_after_they_register_with_that_address(
    app, client, auth, outbox, run_jobs
):
    petition_id = petition_with_signers(app, 0)
    guest_signs_for_updates(app, client, outbox, run_jobs, petition_id)
    post_update(app, petition_id, title="First update")
    run_jobs()
    one_click_unsubscribe(app, _unsubscribe_path(outbox.last_to("ana@example.org")))
    auth.member()  # registers and confirms the same address
    outbox.clear()
    post_update(app, petition_id, title="Second update")
    run_jobs()
    assert outbox.messages() == []
    with app.app_context():
        latest = db.session.scalar(select(Delivery).order_by(Delivery.id.desc()).limit(1))
        member = member_by_email("ana@example.org")
        assert (latest.member_id, latest.state) == (member.id, DeliveryState.SKIPPED)
        assert services.member_preferences(member)["petitions"] == Frequency.OFF


def test_an_unsubscribe_link_from_before_registering_still_works_for_the_member(
    app, client, auth, outbox, run_jobs
):
    petition_id = petition_with_signers(app, 0)
    guest_signs_for_updates(app, client, outbox, run_jobs, petition_id)
    post_update(app, petition_id, title="First update")
    run_jobs()
    older_link = _unsubscribe_path(outbox.last_to("ana@example.org"))
    auth.member()
    outbox.clear()
    post_update(app, petition_id, title="Second update")
    run_jobs()
    assert sent_to(outbox) == ["ana@example.org"]

    one_click_unsubscribe(app, older_link)
    outbox.clear()
    post_update(app, petition_id, title="Third update")
    run_jobs()
    assert outbox.messages() == []


def test_a_member_choosing_on_their_preferences_page_overrides_their_addresss_opt_out(
    app, client, auth, outbox, run_jobs
):
    petition_id = petition_with_signers(app, 0)
    guest_signs_for_updates(app, client, outbox, run_jobs, petition_id)
    with app.app_context():
        services.unsubscribe("email:ana@example.org", services.ALL_CATEGORIES)
    auth.member()
    assert set(shown_preferences(client).values()) == {"off"}
    prefs = {"petitions": "immediately", "campaigns": "off", "meetups": "off", "decisions": "off"}
    assert submit(client, "/notifications/preferences", prefs).status_code == 302
    outbox.clear()
    post_update(app, petition_id)
    run_jobs()
    assert sent_to(outbox) == ["ana@example.org"]


def test_the_preferences_link_in_a_members_email_shows_and_saves_what_reaches_them(
    app, client, auth, outbox, run_jobs
):
    """As a guest, Ana took petition news daily; as a member, the link in her email shows
    that choice, and choosing "immediately" there is what then reaches her."""
    petition_id = petition_with_signers(app, 0)
    guest_signs_for_updates(app, client, outbox, run_jobs, petition_id)
    with app.app_context():
        services.set_preferences("email:ana@example.org", {Category.PETITIONS: Frequency.DAILY})
    auth.member()
    post_update(app, petition_id, title="First update")
    run_jobs()
    with app.app_context():  # the update waited for her daily digest
        assert services.send_daily_digests() == 1
    run_jobs()
    link = next(u for u in links_in(outbox.last_to("ana@example.org")) if "/preferences/" in u)
    by_link = app.test_client()  # from the email, not logged in
    assert CheckedChoices(by_link.get(path_of(link)).text).choices["petitions"] == "daily"

    chosen = {"petitions": "immediately", "campaigns": "off", "meetups": "off", "decisions": "off"}
    assert submit(by_link, path_of(link), chosen).status_code == 302
    assert shown_preferences(client) == chosen
    outbox.clear()
    post_update(app, petition_id, title="Third update")
    run_jobs()
    assert sent_to(outbox) == ["ana@example.org"]


def test_a_members_data_download_holds_the_mail_sent_to_their_address_as_a_guest(
    app, client, auth, outbox, run_jobs
):
    petition_id = petition_with_signers(app, 0)
    guest_signs_for_updates(app, client, outbox, run_jobs, petition_id)
    post_update(app, petition_id, title="Before joining")
    run_jobs()
    auth.member()  # registers and confirms the same address
    emails = client.get("/account/data.json").get_json()["emails"]
    titles = {e["title"] for e in emails if e["to"] == "ana@example.org"}
    assert "Fair pay for couriers: Before joining" in titles
    assert any(title.startswith("Confirm your signature") for title in titles)


def test_registering_an_address_without_confirming_it_cannot_undo_its_opt_out(
    app, client, auth, outbox, run_jobs
):
    petition_id = petition_with_signers(app, 0)
    guest_signs_for_updates(app, client, outbox, run_jobs, petition_id)
    with app.app_context():
        services.unsubscribe("email:ana@example.org", "petitions")
    auth.register(name="Not Ana")  # never confirmed: the address may not be theirs
    run_jobs()
    auth.login()
    assert shown_preferences(client)["petitions"] == "immediately"  # not theirs to see
    prefs = {"petitions": "immediately", "campaigns": "off", "meetups": "off", "decisions": "off"}
    assert submit(client, "/notifications/preferences", prefs).status_code == 302
    outbox.clear()
    post_update(app, petition_id)
    run_jobs()
    assert outbox.to("ana@example.org") == []
    with app.app_context():
        assert services.frequency_for("email:ana@example.org", "petitions") == Frequency.OFF


# --- SMTP ------------------------------------------------------------------------------


def test_a_451_is_retried_and_the_message_sent_once(app, client, smtp_sink, run_jobs):
    petition_id = petition_with_signers(app, 0)
    smtp_sink.reply = "451 4.3.0 mailbox busy, try later"
    url = f"/petitions/{petition_id}"
    submit(client, url, {"name": "Rui", "email": "rui@example.org", "city": "Porto"}, f"{url}/sign")
    run_jobs()
    assert smtp_sink.received == []
    with app.app_context():
        high = get_queue("high")
        scheduled = ScheduledJobRegistry(queue=high)
        job_ids = scheduled.get_job_ids()
        assert len(job_ids) == 1  # waiting to be retried
        delivery = db.session.scalar(select(Delivery))
        assert delivery.state == DeliveryState.PENDING
        # Bring the retry forward; the server accepts this time.
        high.enqueue_job(high.fetch_job(job_ids[0]))
        scheduled.remove(job_ids[0])
    smtp_sink.reply = None
    run_jobs()
    run_jobs()
    assert [m["To"] for m in smtp_sink.received] == ["rui@example.org"]
    with app.app_context():  # the refused attempt and the accepted one are both on record
        delivery = db.session.scalar(select(Delivery))
        assert (delivery.state, delivery.attempts) == (DeliveryState.SENT, 2)
        assert delivery.sent_at is not None


def test_consecutive_jobs_share_one_smtp_session_and_a_dropped_one_is_replaced(
    app, client, smtp_sink, run_jobs
):
    petition_id = petition_with_signers(app, 0)
    url = f"/petitions/{petition_id}"

    def sign(name: str) -> None:
        form = {"name": name.title(), "email": f"{name}@example.org", "city": "Porto"}
        submit(client, url, form, f"{url}/sign")
        run_jobs()

    sign("rui")
    sign("ana")  # a job of its own, a moment later
    assert [m["To"] for m in smtp_sink.received] == ["rui@example.org", "ana@example.org"]
    assert smtp_sink.connections == 1
    for kept, _ in mail._kept.values():
        kept.smtp.sock.shutdown(socket.SHUT_RDWR)  # the session is lost while the worker waits
    sign("eva")
    assert [m["To"] for m in smtp_sink.received][-1] == "eva@example.org"
    assert smtp_sink.connections == 2


def test_a_550_is_not_retried_and_marks_the_address_failing(app, smtp_sink, outbox, run_jobs):
    petition_id = petition_with_signers(app, 2)
    smtp_sink.refuse = {"s0@example.org"}
    post_update(app, petition_id)
    run_jobs()
    assert [m["To"] for m in smtp_sink.received] == ["s1@example.org"]
    with app.app_context():
        failed = db.session.scalar(select(Delivery).where(Delivery.email == "s0@example.org"))
        assert failed.state == DeliveryState.FAILED and failed.error.startswith("550")
        assert db.session.get(FailingAddress, "s0@example.org") is not None
        assert ScheduledJobRegistry(queue=get_queue("bulk")).count == 0  # no retry

    # No more bulk mail to it, even once the server would accept...
    smtp_sink.refuse = set()
    smtp_sink.received.clear()
    post_update(app, petition_id, title="Another update")
    run_jobs()
    assert [m["To"] for m in smtp_sink.received] == ["s1@example.org"]

    # ...until the address is confirmed again, here by signing another petition.
    with app.app_context():
        other = make_petition(member_by_email("olga@example.org"), title="Another petition here")
        add_signature(other, "Signer 0", email="s0@example.org", wants_updates=True)
        assert db.session.get(FailingAddress, "s0@example.org") is None
    smtp_sink.received.clear()
    post_update(app, petition_id, title="Third update")
    run_jobs()
    assert sorted(m["To"] for m in smtp_sink.received) == ["s0@example.org", "s1@example.org"]


def test_one_smtp_connection_serves_a_whole_batch(app, smtp_sink, run_jobs):
    petition_id = petition_with_signers(app, 5)
    post_update(app, petition_id)
    run_jobs()
    assert len(smtp_sink.received) == 5
    assert smtp_sink.connections == 1


# --- the notification centre --------------------------------------------------------------


def _two_updates_for_a_member(app, client, auth, run_jobs) -> None:
    petition_id = petition_with_signers(app, 0)
    auth.member()
    sign_for_updates(client, petition_id)
    run_jobs()
    post_update(app, petition_id, title="First update")
    post_update(app, petition_id, title="Second update")
    run_jobs()


def test_members_see_notices_with_an_unread_count_and_mark_them_read(app, client, auth, run_jobs):
    _two_updates_for_a_member(app, client, auth, run_jobs)

    centre = client.get("/notifications")
    assert centre.status_code == 200
    assert centre.text.index("Second update") < centre.text.index("First update")  # newest first
    assert '<span class="count-badge">2<span class="visually-hidden"> unread</span>' in centre.text

    with app.app_context():
        member = member_by_email("ana@example.org")
        newest = services.notices_for(member)[0]
        notice_id, link = newest.id, newest.notification.link
    opened = client.post(
        f"/notifications/{notice_id}/read",
        data={"csrf_token": csrf_token(centre.text), "open": "1"},
    )
    assert opened.status_code == 302 and opened.headers["Location"] == link
    assert '<span class="count-badge">1<span' in client.get("/notifications").text

    client.post("/notifications/read-all", data={"csrf_token": csrf_token(centre.text)})
    assert "count-badge" not in client.get("/notifications").text
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(Notice.read_at.is_(None))) == 0


def test_a_members_data_download_holds_their_mail_choices_notices_and_emails(
    app, client, auth, run_jobs
):
    _two_updates_for_a_member(app, client, auth, run_jobs)
    with app.app_context():
        member = member_by_email("ana@example.org")
        services.set_member_preferences(member, {Category.CAMPAIGNS: Frequency.OFF})
    data = client.get("/account/data.json").get_json()
    assert data["notification_preferences"]["campaigns"] == "off"
    assert data["notification_preferences"]["petitions"] == "immediately"
    titles = [notice["title"] for notice in data["notices"]]
    assert titles == ["Fair pay for couriers: First update", "Fair pay for couriers: Second update"]
    sent = [e for e in data["emails"] if e["title"] in titles]
    assert [(e["to"], e["state"]) for e in sent] == [("ana@example.org", "sent")] * 2


class ButtonNames(HTMLParser):
    """The accessible name of every button on a page: all its text, hidden or not."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.names: list[str] = []
        self._text: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "button":
            self._text = []

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "button" and self._text is not None:
            self.names.append(" ".join("".join(self._text).split()))
            self._text = None


def test_each_notices_buttons_say_which_notice_they_act_on(app, client, auth, run_jobs):
    _two_updates_for_a_member(app, client, auth, run_jobs)
    names = ButtonNames(client.get("/notifications").text).names
    notice_buttons = [name for name in names if name.startswith(("Open", "Mark as read "))]
    assert sorted(notice_buttons) == [
        "Mark as read Fair pay for couriers: First update",
        "Mark as read Fair pay for couriers: Second update",
        "Open Fair pay for couriers: First update",
        "Open Fair pay for couriers: Second update",
    ]


def test_a_member_cannot_touch_another_members_notices(app, client, auth, run_jobs):
    petition_id = petition_with_signers(app, 0)
    auth.member()
    sign_for_updates(client, petition_id)
    run_jobs()
    post_update(app, petition_id)
    run_jobs()
    auth.logout()
    auth.member(email="bo@example.org", name="Bo")
    with app.app_context():
        notice_id = db.session.scalar(select(Notice.id))
    token = csrf_token(client.get("/notifications").text)
    client.post(f"/notifications/{notice_id}/read", data={"csrf_token": token})
    with app.app_context():
        assert db.session.get(Notice, notice_id).read_at is None


def test_the_notification_centre_needs_a_login(client):
    assert client.get("/notifications").status_code == 302
    assert client.get("/notifications/preferences").status_code == 302


# --- hardening -----------------------------------------------------------------------------


def test_the_unsubscribe_header_stays_on_one_raw_line(app, outbox, run_jobs):
    petition_id = petition_with_signers(app, 1)
    post_update(app, petition_id)
    run_jobs()
    raw = next(outbox.folder.glob("*.eml")).read_bytes()
    assert re.search(
        rb"^List-Unsubscribe: <http://localhost/notifications/unsubscribe/\S+>\r?$", raw, re.M
    )
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw


def test_plain_ascii_mail_goes_as_it_is_with_its_links_whole(app, client, outbox, run_jobs):
    petition_id = petition_with_signers(app, 0)
    sign_as_guests(client, petition_id, ["rui"])
    run_jobs()
    raw = next(outbox.folder.glob("*.eml")).read_bytes()
    assert raw.count(b"Content-Transfer-Encoding: 7bit") == 2  # the text and the HTML
    assert signature_confirm_link(outbox, "rui@example.org").encode() in raw


def test_non_ascii_text_arrives_intact_through_smtp_in_a_seven_bit_message(
    app, smtp_sink, run_jobs, monkeypatch
):
    sender = "Groundswell São Bento <noreply@groundswell.localhost>"
    monkeypatch.setitem(app.config, "MAIL_FROM", sender)
    petition_id = petition_with_signers(app, 1)
    body = "From Monday, the council — Câmara — listens.\n.A line that starts with a dot\n" + (
        "Signatures from Zürich, Kraków and Đà Nẵng. " * 6
    )
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        petitions.post_update(petition, title="Reunião na Câmara ✊🏽", body=body)
    run_jobs()
    [message] = smtp_sink.received
    assert message["Subject"].startswith("Reunião na Câmara ✊🏽 (")
    assert message["From"].addresses[0].display_name == "Groundswell São Bento"
    text, html = (message.get_body((part,)).get_content() for part in ("plain", "html"))
    for content in (text, html):
        assert "From Monday, the council — Câmara — listens." in content  # no ">From"
        assert "Zürich, Kraków and Đà Nẵng" in content
    assert "\r\n.A line that starts with a dot\r\n" in text
    raw = message.as_bytes()
    assert raw.isascii()  # readable by servers without 8BITMIME


def _sign_and_send(app, client, run_jobs, email: str) -> None:
    sign_as_guest(client, petition_with_signers(app, 0), "Zoë", email)
    run_jobs()


def test_an_international_domain_goes_in_ascii_so_any_server_takes_it(
    app, client, smtp_sink, run_jobs
):
    smtp_sink.restart(smtputf8=False)
    _sign_and_send(app, client, run_jobs, "ana@exämple.org")
    [(_, recipients, raw)] = smtp_sink.envelopes
    assert recipients == ["ana@xn--exmple-cua.org"]
    assert b"\r\nTo: ana@xn--exmple-cua.org\r\n" in raw
    assert raw.isascii()
    with app.app_context():  # the signature keeps the address as it was typed
        assert db.session.scalar(select(Signature.email)) == "ana@exämple.org"


def test_an_international_local_part_goes_as_utf8_where_the_server_offers_smtputf8(
    app, client, smtp_sink, run_jobs
):
    _sign_and_send(app, client, run_jobs, "zoë@exämple.org")
    [(_, recipients, raw)] = smtp_sink.envelopes
    assert recipients == ["zoë@exämple.org"]
    # RFC 6532: the address as UTF-8 in the header; an encoded word there is not an address.
    assert "\r\nTo: zoë@exämple.org\r\n".encode() in raw
    [to_line] = [line for line in raw.split(b"\r\n") if line.startswith(b"To:")]
    assert b"=?" not in to_line
    with app.app_context():
        delivery = db.session.scalar(select(Delivery))
        assert delivery.state == DeliveryState.SENT


def test_an_international_local_part_fails_for_good_where_the_server_cannot_take_it(
    app, client, smtp_sink, run_jobs
):
    smtp_sink.restart(smtputf8=False)
    _sign_and_send(app, client, run_jobs, "zoë@exämple.org")
    assert smtp_sink.envelopes == []
    with app.app_context():
        delivery = db.session.scalar(select(Delivery))
        assert delivery.state == DeliveryState.FAILED


def test_an_international_sender_domain_goes_in_ascii(
    app, client, smtp_sink, run_jobs, monkeypatch
):
    smtp_sink.restart(smtputf8=False)
    monkeypatch.setitem(app.config, "MAIL_FROM", "Groundswell São Bento <avisos@bairrô.pt>")
    _sign_and_send(app, client, run_jobs, "ana@example.org")
    [(sender, _, raw)] = smtp_sink.envelopes
    assert sender == "avisos@xn--bairr-bua.pt"
    [from_line] = [line for line in raw.split(b"\r\n") if line.startswith(b"From:")]
    assert from_line.endswith(b" <avisos@xn--bairr-bua.pt>")
    assert smtp_sink.received[0]["From"].addresses[0].display_name == "Groundswell São Bento"


def test_a_sender_with_an_international_local_part_goes_as_utf8(
    app, client, smtp_sink, run_jobs, monkeypatch
):
    monkeypatch.setitem(app.config, "MAIL_FROM", '"Bairro, São Bento" <avisós@bairrô.pt>')
    _sign_and_send(app, client, run_jobs, "ana@example.org")
    [(sender, recipients, raw)] = smtp_sink.envelopes
    assert (sender, recipients) == ("avisós@bairrô.pt", ["ana@example.org"])
    assert '\r\nFrom: "Bairro, São Bento" <avisós@bairrô.pt>\r\n'.encode() in raw


def test_a_5xx_about_the_message_fails_it_without_marking_the_address(app, smtp_sink, run_jobs):
    petition_id = petition_with_signers(app, 2)
    smtp_sink.reply = "554 5.7.1 message content rejected"
    post_update(app, petition_id)
    run_jobs()
    with app.app_context():
        states = db.session.scalars(select(Delivery.state)).all()
        assert states == [DeliveryState.FAILED, DeliveryState.FAILED]
        assert db.session.scalar(select(func.count()).select_from(FailingAddress)) == 0


def test_one_greylisted_recipient_does_not_hold_up_the_batch(app, smtp_sink, run_jobs):
    petition_id = petition_with_signers(app, 3)
    smtp_sink.defer = {"s0@example.org"}
    post_update(app, petition_id)
    run_jobs()
    assert sorted(m["To"] for m in smtp_sink.received) == ["s1@example.org", "s2@example.org"]
    with app.app_context():
        deferred = db.session.scalar(select(Delivery).where(Delivery.email == "s0@example.org"))
        assert deferred.state == DeliveryState.PENDING and deferred.attempts == 1
        bulk = get_queue("bulk")
        scheduled = ScheduledJobRegistry(queue=bulk)
        (job_id,) = scheduled.get_job_ids()
        bulk.enqueue_job(bulk.fetch_job(job_id))
        scheduled.remove(job_id)
    smtp_sink.defer = set()
    run_jobs()
    assert sorted(m["To"] for m in smtp_sink.received) == [f"s{n}@example.org" for n in range(3)]


def release_due_retries(app, now) -> None:
    """Move RQ's scheduled retries that are due by ``now`` onto their queues, as the
    worker's scheduler would."""
    with app.app_context():
        for name in ("high", "default", "bulk"):
            queue = get_queue(name)
            scheduled = ScheduledJobRegistry(queue=queue)
            for job_id in scheduled.get_job_ids():
                if scheduled.get_scheduled_time(job_id) <= now:
                    queue.enqueue_job(queue.fetch_job(job_id))
                    scheduled.remove(job_id)


def test_the_sweep_waits_longer_after_each_deferral(app, smtp_sink, run_jobs, monkeypatch):
    """A server deferring mail for hours sees it a few times, then gets it once."""
    petition_id = petition_with_signers(app, 1)
    smtp_sink.defer = {"s0@example.org"}
    post_update(app, petition_id)
    run_jobs()
    start, swept_at, tried_at = utcnow(), [], {}

    def attempts() -> tuple[str, int]:
        with app.app_context():
            delivery = db.session.scalar(select(Delivery))
            return delivery.state, delivery.attempts

    def five_minutes_later(minute: int) -> None:
        now = start + timedelta(minutes=minute)
        monkeypatch.setattr(services, "utcnow", lambda: now)
        release_due_retries(app, now)
        with app.app_context():
            if services.requeue_stalled():  # the sweep runs every five minutes
                swept_at.append(minute)
        run_jobs()
        tried_at.setdefault(attempts()[1], minute)

    for minute in range(5, 400, 5):
        five_minutes_later(minute)
    # RQ's four retries, the last 30 minutes on. RQ schedules by the real clock, which
    # stays near ``start`` here, so that retry comes due at minute 30, or at the next step
    # if the tries before it took over a second. The sweep waits 160 minutes after it.
    last_retry = tried_at[5]
    assert [tried_at[n] for n in (2, 3, 4)] == [5, 10, 15] and last_retry in (30, 35)
    assert (attempts(), swept_at) == ((DeliveryState.PENDING, 6), [last_retry + 160])
    assert smtp_sink.received == []

    smtp_sink.defer = set()
    for minute in range(400, 24 * 60, 5):
        five_minutes_later(minute)
    assert swept_at == [last_retry + 160, last_retry + 160 + 320]  # 320 after the sixth try
    assert attempts() == (DeliveryState.SENT, 7)
    assert [m["To"] for m in smtp_sink.received] == ["s0@example.org"]


def test_a_broken_message_fails_alone_and_the_batch_goes_on(app, outbox, run_jobs):
    petition_id = petition_with_signers(app, 2)
    with app.app_context():
        # One signer's stored address cannot be written in a header (data from elsewhere).
        db.session.execute(
            insert(Signature),
            {
                "petition_id": petition_id,
                "name": "Broken",
                "email": "bad\nheader@example.org",
                "email_key": "bad\nheader@example.org",
                "city": "Lisbon",
                "city_slug": "lisbon",
                "show_name": False,
                "wants_updates": True,
                "state": SignatureState.CONFIRMED,
                "counted": False,
                "created_at": utcnow(),
                "confirmed_at": utcnow(),
            },
        )
        db.session.commit()
    post_update(app, petition_id)
    run_jobs()
    assert sent_to(outbox) == ["s0@example.org", "s1@example.org"]
    with app.app_context():
        broken = db.session.scalar(select(Delivery).where(Delivery.email.like("bad%")))
        assert broken.state == DeliveryState.FAILED


def test_line_breaks_are_refused_in_one_line_fields(app, client, auth):
    auth.member()
    response = submit(
        client,
        "/petitions/new",
        {"title": "A title\r\nBcc: everyone@example.org", "ask": "x" * 40, "topic": "other"},
    )
    assert response.status_code == 422
    assert "unusual characters" in response.text.split('id="title-error"', 1)[1][:200]


def test_a_members_preferences_apply_when_they_sign_as_a_guest(app, client, auth, outbox, run_jobs):
    petition_id = petition_with_signers(app, 0)
    auth.member()
    prefs = {"petitions": "off", "campaigns": "off", "meetups": "off", "decisions": "off"}
    submit(client, "/notifications/preferences", prefs)
    auth.logout()
    url = f"/petitions/{petition_id}"
    form = {"name": "Ana", "email": "ana@example.org", "city": "Lisbon", "wants_updates": "y"}
    submit(client, url, form, f"{url}/sign")
    run_jobs()
    submit(client, signature_confirm_link(outbox, "ana@example.org"), {})
    outbox.clear()
    post_update(app, petition_id)
    run_jobs()
    assert outbox.messages() == []
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Notice)) == 1  # still in the app


NOTIFICATION_TABLES = (Notification, Delivery, Notice, Preference, FailingAddress)


def tables_naming(address: str) -> set[str]:
    """The notification tables with a row that holds ``address`` in any column."""
    return {
        model.__tablename__
        for model in NOTIFICATION_TABLES
        for row in db.session.execute(select(model.__table__))
        if address in repr(tuple(row)).lower()
    }


def delete_account(client) -> None:
    token = csrf_token(client.get("/account").text)
    client.post(
        "/account/delete",
        data={"csrf_token": token, "current_password": "correct horse battery", "understood": "y"},
    )


def test_deleting_an_account_stops_its_mail_and_forgets_its_address(
    app, client, auth, smtp_sink, run_jobs
):
    petition_id = petition_with_signers(app, 0)
    with app.app_context():
        make_member("ana@example.org", name="Ana")
    auth.login()
    sign_for_updates(client, petition_id)
    prefs = {"petitions": "daily", "campaigns": "off", "meetups": "off", "decisions": "off"}
    submit(client, "/notifications/preferences", prefs)
    post_update(app, petition_id)  # held for her digest
    with app.app_context():
        services.unsubscribe("email:ana@example.org", "meetups")  # through an older email
        # Account mail the server refused, in a reply naming the address...
        smtp_sink.reply = "554 5.7.1 <ana@example.org>: message refused"
        members.request_password_reset("ana@example.org", "198.51.100.7")
        run_jobs()
        # ...and then refused the address itself: it is marked failing.
        smtp_sink.reply, smtp_sink.refuse = None, {"ana@example.org"}
        members.register(
            display_name="Someone", email="ana@example.org", password="x" * 12, city="Porto"
        )
        run_jobs()
        assert tables_naming("ana@example.org") == {
            "notifications",  # the account mails' payloads
            "notification_deliveries",
            "notification_preferences",
            "notification_failing_addresses",
        }
    delete_account(client)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Preference)) == 0
        assert tables_naming("ana@example.org") == set()
        assert services.send_daily_digests() == 0
    assert smtp_sink.received == []


def test_deleting_an_account_forgets_the_keys_of_its_digests(app, client, auth, outbox, run_jobs):
    petition_id = member_on_daily_digests(app, client, auth, outbox, run_jobs)
    post_update(app, petition_id)
    run_jobs()
    with app.app_context():
        assert services.send_daily_digests() == 1
        run_jobs()
        # Each digest's key is made from the address it went to.
        hashed = services._address_key("ana@example.org")
        assert tables_naming(hashed) == {"notifications"}
    delete_account(client)
    with app.app_context():
        assert tables_naming(hashed) == set()


def ana_signed_for_updates(app, client, auth, run_jobs) -> int:
    """A petition with one guest signer, s0, and Ana, a member, who both want its news."""
    petition_id = petition_with_signers(app, 1)
    with app.app_context():
        make_member("ana@example.org", name="Ana")
    auth.login()
    sign_for_updates(client, petition_id)
    run_jobs()
    return petition_id


def test_mail_a_dead_worker_left_claimed_is_never_sent_once_its_account_is_deleted(
    app, client, auth, smtp_sink, run_jobs, monkeypatch
):
    petition_id = ana_signed_for_updates(app, client, auth, run_jobs)
    smtp_sink.received.clear()
    kill_worker_during_batch(
        app,
        petition_id,
        killed_while_sending_to("ana@example.org", after_recording=False),
        monkeypatch,
    )
    assert delivery_states(app)["ana@example.org"] == DeliveryState.SENDING
    delete_account(client)
    with app.app_context():
        services.requeue_stalled(older_than=timedelta(0), lease=timedelta(0))
    run_jobs()
    assert [m["To"] for m in smtp_sink.received] == ["s0@example.org"]
    assert set(delivery_states(app).values()) == {DeliveryState.SENT, DeliveryState.SKIPPED}


def test_an_account_deleted_while_a_batch_is_sending_its_mail_gets_none(
    app, client, auth, smtp_sink, run_jobs, monkeypatch
):
    petition_id = ana_signed_for_updates(app, client, auth, run_jobs)
    smtp_sink.received.clear()
    real_render = services.render

    def render_then_delete_the_account(delivery, spec, context):
        message = real_render(delivery, spec, context)
        if delivery.email == "ana@example.org":
            with app.app_context():  # her request, in a session of its own
                members.delete_account(member_by_email("ana@example.org"))
        return message

    monkeypatch.setattr(services, "render", render_then_delete_the_account)
    post_update(app, petition_id)
    run_jobs()
    assert [m["To"] for m in smtp_sink.received] == ["s0@example.org"]
    with app.app_context():
        news = db.session.scalars(
            select(Delivery)
            .join(Notification)
            .where(Notification.kind == "petition_update")
            .order_by(Delivery.id)
        ).all()
        assert [(d.email, d.state) for d in news] == [
            ("s0@example.org", DeliveryState.SENT),
            (f"deleted-{news[1].id}@invalid", DeliveryState.SKIPPED),
        ]


def test_registering_an_existing_address_cannot_flood_its_inbox(app, auth, outbox, run_jobs):
    auth.member()
    auth.logout()
    outbox.clear()
    for _ in range(12):
        auth.register(name="Someone else")
    run_jobs()
    # The notices have their own limit of 5 an hour, apart from the confirmation emails.
    assert len(outbox.to("ana@example.org")) == 5


@pytest.fixture
def small_pages(app, monkeypatch):
    """Fan-outs walk pages of 100, so a few hundred signers make several page jobs."""
    monkeypatch.setitem(app.config, "FAN_OUT_PAGE", 100)


def test_a_large_fan_out_goes_page_by_page_and_lets_confirmations_through(
    app, client, outbox, run_jobs, small_pages
):
    petition_id = petition_with_signers(app, 350)
    post_update(app, petition_id)
    with app.app_context():
        make_worker(simple=True).work(burst=True, max_jobs=1)  # the first page only
        assert db.session.scalar(select(func.count()).select_from(Delivery)) == 100
    url = f"/petitions/{petition_id}"
    form = {"name": "Rui", "email": "rui@example.org", "city": "Porto"}
    submit(client, url, form, f"{url}/sign")
    with app.app_context():
        make_worker(simple=True).work(burst=True, max_jobs=2)  # confirmation, then send
    assert sent_to(outbox) == ["rui@example.org"]
    run_jobs()
    with app.app_context():
        # Re-running the first page (a retry) changes nothing.
        notification_jobs.fan_out(db.session.scalar(select(Notification.id)))
    run_jobs()
    addresses = [m["To"] for m in outbox.messages() if m["To"] != "rui@example.org"]
    assert len(addresses) == len(set(addresses)) == 350


def test_the_sweep_carries_on_a_fan_out_whose_next_page_was_lost(
    app, outbox, run_jobs, small_pages
):
    petition_id = petition_with_signers(app, 250)
    post_update(app, petition_id)
    with app.app_context():
        make_worker(simple=True).work(burst=True, max_jobs=1)  # the first page only
        bulk = get_queue("bulk")
        next_pages = [job for job in bulk.get_jobs() if job.func_name.endswith("fan_out")]
        assert len(next_pages) == 1
        next_pages[0].delete()  # lost, as when Redis loses it or its worker dies
    run_jobs()
    assert len(outbox.messages()) == 100
    with app.app_context():
        services.requeue_stalled(older_than=timedelta(0))
        # A late retry of a page already recorded changes nothing.
        notification_jobs.fan_out(db.session.scalar(select(Notification.id)))
    run_jobs()
    addresses = [message["To"] for message in outbox.messages()]
    assert len(addresses) == len(set(addresses)) == 250
    with app.app_context():
        notification = db.session.scalar(select(Notification))
        assert notification.fanned_out_at is not None
        assert services.requeue_stalled(older_than=timedelta(0)) == 0
