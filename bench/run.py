"""``make bench``: the signature surge and the update fan-out, each against its bare baseline.

Runs on PostgreSQL and Redis (``DATABASE_URL`` and ``REDIS_URL`` when set, otherwise the
servers on this machine) and resets the database it is given. Every figure is printed
beside the baseline measured in the same run, as a ratio. Settings, all optional:

    BENCH_SECONDS=15        length of each timed load phase
    BENCH_CLIENTS=32        concurrent signers (and baseline clients)
    BENCH_READERS=8         extra clients only viewing the petition page
    WEB_CONCURRENCY=4       gunicorn workers (gunicorn.conf.py: two per core)
    BENCH_RQ_WORKERS=4      RQ workers (two per core: jobs wait on SMTP and PostgreSQL)
    BENCH_FANOUT=15000      signers who receive the update (100000 for the full-size run)
    BENCH_SKIP=fanout       skip scenarios: signing, cost, fanout, kill (the second fan-out)
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage

import psycopg
import redis

from bench import load
from bench.cost import request_costs
from bench.sink import COPIES, RECEIVED, TOTAL
from bench.stack import (
    ROOT,
    Stack,
    cpu_seconds,
    descendants,
    free_port,
    peak_resident_mb,
    pids_named,
    process_tree,
    tool,
    wait_for_port,
)

DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/groundswell_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"
QUEUES = ("high", "default", "bulk")
RESULTS = ROOT / "instance" / "bench" / "results.json"


@dataclass
class Settings:
    seconds: float = float(os.environ.get("BENCH_SECONDS", 15))
    clients: int = int(os.environ.get("BENCH_CLIENTS", 32))
    readers: int = int(os.environ.get("BENCH_READERS", 8))
    web_workers: int = int(os.environ.get("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1)))
    rq_workers: int = int(os.environ.get("BENCH_RQ_WORKERS", 2 * (os.cpu_count() or 1)))
    fanout: int = int(os.environ.get("BENCH_FANOUT", 15_000))
    skip: set[str] = field(
        default_factory=lambda: set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))
    )
    database_url: str = os.environ.get("DATABASE_URL", DEFAULT_DATABASE)
    redis_url: str = os.environ.get("REDIS_URL", DEFAULT_REDIS)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- setting up ------------------------------------------------------------------------


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def reset_database(url: str) -> None:
    """Create the database if it is missing, then empty it."""
    target = libpq_url(url)
    name = psycopg.conninfo.conninfo_to_dict(target)["dbname"]
    try:
        connection = psycopg.connect(target, autocommit=True)
    except psycopg.OperationalError:
        with psycopg.connect(target.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        connection = psycopg.connect(target, autocommit=True)
    with connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")


def environment(settings: Settings, web_port: int, sink_port: int) -> dict[str, str]:
    """What every process of the run sees: production settings on loopback."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "MAIL_URL": f"smtp://127.0.0.1:{sink_port}",
        "BASE_URL": f"http://127.0.0.1:{web_port}",
        "SECRET_KEY": os.environ.get("SECRET_KEY", secrets.token_urlsafe(32)),
        "WEB_CONCURRENCY": str(settings.web_workers),
        "BIND": f"127.0.0.1:{web_port}",
        # Every client comes from 127.0.0.1; the per-address limit would stop them all.
        "SIGN_LIMIT_PER_ADDRESS": "1000000 per minute",
        "INSTANCE_PATH": str(ROOT / "instance" / "bench"),
    }


def gunicorn(app: str) -> list[str]:
    return [tool("gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), app]


def flask(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "wsgi", *args]


# --- watching --------------------------------------------------------------------------


def cpu_by_part(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by each part of the system, this load generator included."""
    parts = {
        "web": stack.pids("web"),
        "rq workers": stack.pids("worker"),
        "smtp sink": stack.pids("sink"),
        "postgresql": pids_named("postgres"),
        "redis": pids_named("redis-server"),
        "load generator": [os.getpid()],
    }
    return {part: sum(cpu_seconds(pid) for pid in pids) for part, pids in parts.items()}


def cores_used(before: dict[str, float], after: dict[str, float], seconds: float) -> dict:
    """How many cores each part kept busy over ``seconds``."""
    return {part: round((after[part] - before[part]) / seconds, 2) for part in after}


# What the processes under each name are: the one the bench started, then its children.
ROLES = {"web": ("gunicorn master", "web workers"), "worker": ("RQ workers", "RQ scheduler")}


def watched_processes(stack: Stack) -> dict[int, str]:
    """The role of every live web and RQ process, by pid."""
    roles, tree = {}, process_tree()
    for prefix, (started, children) in ROLES.items():
        for root in stack.roots(prefix):
            roles[root] = started
            roles.update(dict.fromkeys(descendants(root, tree), children))
    return roles


def memory_by_role(peaks: dict[str, dict[int, float]]) -> str:
    """Each process's peak, by role: "web workers 98, 99; RQ workers 97 MB"."""
    groups = (
        f"{role} " + ", ".join(f"{mb:.0f}" for mb in sorted(by_pid.values()))
        for role, by_pid in peaks.items()
    )
    return "; ".join(groups) + " MB"


def largest_process_mb(peaks: dict[str, dict[int, float]]) -> float:
    return max((mb for by_pid in peaks.values() for mb in by_pid.values()), default=0)


class Watcher(threading.Thread):
    """Samples queue depths, the tally and memory twice a second while a scenario runs."""

    def __init__(self, settings: Settings, stack: Stack, petition_id: int | None) -> None:
        super().__init__(daemon=True)
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.database_url = libpq_url(settings.database_url)
        self.stack, self.petition_id = stack, petition_id
        self.started = time.monotonic()
        self.samples: list[dict] = []
        self.peak_memory: dict[str, dict[int, float]] = defaultdict(dict)  # role: pid: MB
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            while not self.done.wait(0.5):
                self.samples.append(self.sample(connection))

    def sample(self, connection: psycopg.Connection) -> dict:
        sample = {"t": round(time.monotonic() - self.started, 1)}
        sample.update({name: self.redis.llen(f"rq:queue:{name}") for name in QUEUES})
        if self.petition_id is not None:
            sample.update(tally_state(connection, self.petition_id))
        for pid, role in watched_processes(self.stack).items():
            if (peak := peak_resident_mb(pid)) is not None:
                peaks = self.peak_memory[role]
                peaks[pid] = max(peaks.get(pid, 0.0), peak)
        return sample

    def memory_by_process(self) -> dict[str, dict[int, float]]:
        return {
            role: {pid: round(mb, 1) for pid, mb in by_pid.items()}
            for role, by_pid in self.peak_memory.items()
        }

    def stop(self) -> None:
        self.done.set()
        self.join()


def tally_state(connection: psycopg.Connection, petition_id: int) -> dict:
    """The public count, the confirmed rows, and how long the oldest uncounted one has waited."""
    public, confirmed, waiting = connection.execute(
        """
        SELECT p.signature_count,
               (SELECT count(*) FROM signatures s
                 WHERE s.petition_id = p.id AND s.state = 'confirmed'),
               (SELECT extract(epoch FROM now() - min(s.confirmed_at)) FROM signatures s
                 WHERE s.petition_id = p.id AND s.state = 'confirmed' AND NOT s.counted)
          FROM petitions p WHERE p.id = %s
        """,
        (petition_id,),
    ).fetchone()
    return {"public": public, "confirmed": confirmed, "lag_s": float(waiting or 0)}


def queues_idle(connection: redis.Redis) -> bool:
    """Nothing waiting and nothing running, scheduled jobs aside."""
    return all(
        connection.llen(f"rq:queue:{name}") == 0 and connection.zcard(f"rq:wip:{name}") == 0
        for name in QUEUES
    )


def wait_until(condition, timeout: float, step: float = 0.25) -> float | None:
    """Seconds until ``condition()`` held, or None if it never did within ``timeout``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if condition():
            return time.monotonic() - began
        time.sleep(step)
    return None


# --- scenarios -------------------------------------------------------------------------


def baselines(settings: Settings, stack: Stack, port: int) -> dict:
    """The bare app under the same gunicorn settings: inserts, GETs, then the bare flow."""
    from bench.baseline import prepare

    prepare()
    stack.start("web-bare", gunicorn("bench.baseline:app"))
    wait_for_port(port)
    base = f"http://127.0.0.1:{port}"
    load.bare_gets(base, settings.clients, 2)  # warm up
    inserts = load.bare_inserts(base, settings.clients, settings.seconds)
    gets = load.bare_gets(base, settings.clients, settings.seconds)
    log(f"bare insert {inserts.rate('insert'):.0f}/s, bare GET {gets.rate('page'):.0f}/s")
    results = {
        "insert_rate": inserts.rate("insert"),
        "insert_p50_ms": inserts.percentile("insert", 0.50) * 1000,
        "insert_p95_ms": inserts.percentile("insert", 0.95) * 1000,
        "insert_p99_ms": inserts.percentile("insert", 0.99) * 1000,
        "get_rate": gets.rate("page"),
        "failures": dict(inserts.failures) | dict(gets.failures),
    }
    if "signing" not in settings.skip:  # only the signing figures are compared with it
        results["flow"] = bare_flow(settings, base)
    stack.stop("web-bare")
    return results


def bare_flow(settings: Settings, base: str) -> dict:
    """The signing scenario's clients walking the flow's three steps on the bare app."""
    flow = load.bare_flow(base, settings.clients, settings.readers, settings.seconds)
    log(f"bare flow {flow.rate('confirm'):.0f}/s")
    with psycopg.connect(libpq_url(settings.database_url)) as connection:
        confirmed_rows = connection.execute(
            "SELECT count(*) FROM bench_rows WHERE confirmed"
        ).fetchone()[0]
    return {
        "insert_rate": flow.rate("insert"),
        "confirm_rate": flow.rate("confirm"),
        "page_rate": flow.rate("page") + flow.rate("read"),
        "insert_p99_ms": flow.percentile("insert", 0.99) * 1000,
        "confirmed_by_clients": len(flow.confirmed),
        "confirmed_rows": confirmed_rows,
        "failures": dict(flow.failures),
    }


def seed_petition(title: str) -> int:
    """An open petition by a demo organiser, made through the petition services."""
    from flask import current_app

    from core.db import utcnow
    from core.extensions import db
    from members.models import Member
    from petitions import services

    organiser = db.session.query(Member).filter_by(email="organiser@bench.example").first()
    if organiser is None:
        organiser = Member(
            display_name="Bench Organiser",
            email="organiser@bench.example",
            password=secrets.token_urlsafe(16),
            city="Lisbon",
        )
        organiser.email_confirmed_at = utcnow()
        db.session.add(organiser)
        db.session.commit()
    petition = services.create_petition(
        organiser,
        title=title,
        ask="Set a minimum rate per delivery for every platform in the city.",
        decision_maker_name="Carla Mendes",
        decision_maker_role="Mayor of Lisbon",
        city="Lisbon",
        topic="delivery",
        goal=1_000_000,
        closes_at=utcnow() + timedelta(days=30),
    )
    services.publish(petition)
    # Publishing keeps the page out of the shared cache for PAGE_CACHE_SECONDS, so that a
    # page rendered before the change is not stored after it. Measure once that has passed,
    # as it will have for any petition people have heard of.
    time.sleep(current_app.config["PAGE_CACHE_SECONDS"])
    return petition.id


def start_platform(settings: Settings, stack: Stack, port: int, sink_port: int) -> None:
    """The production shape: the mail sink, gunicorn and the RQ workers."""
    stack.start("sink", [sys.executable, "-m", "bench.sink", "--port", str(sink_port),
                         "--redis", settings.redis_url])  # fmt: skip
    wait_for_port(sink_port)
    for number in range(settings.rq_workers):
        stack.start(f"worker-{number}", flask("worker", "--log-level", "WARNING"))
    stack.start("web", gunicorn("wsgi:app"))
    wait_for_port(port)
    wait_until_started(stack)


def wait_until_started(stack: Stack, timeout: float = 30) -> None:
    """Wait until the web and RQ workers have loaded the app and gone idle.

    The port opens before gunicorn's workers import the app, and nothing marks an RQ
    worker as loaded; a baseline measured while they start would share the cores.
    """

    def busy(window: float = 0.5) -> float:
        before = cpu_by_part(stack)
        time.sleep(window)
        used = cores_used(before, cpu_by_part(stack), window)
        return used["web"] + used["rq workers"]

    if wait_until(lambda: busy() < 0.05, timeout, step=0) is None:
        raise RuntimeError(f"the web and RQ workers were still busy after {timeout} s")


def signing(settings: Settings, stack: Stack, app, port: int, bare: dict) -> dict:
    """The surge: signers through the whole flow while readers view the page."""
    with app.app_context():
        petition_id = seed_petition("Minimum pay per delivery in Lisbon")
    base = f"http://127.0.0.1:{port}"
    load.bare_gets(f"{base}/petitions/{petition_id}", 4, 1)  # warm up the page
    watcher = Watcher(settings, stack, petition_id)
    watcher.start()
    cpu_before = cpu_by_part(stack)
    tally = load.signing_surge(
        base, petition_id, settings.redis_url, settings.clients, settings.readers, settings.seconds
    )
    surge_ended = time.monotonic() - watcher.started
    cores = cores_used(cpu_before, cpu_by_part(stack), surge_ended)
    store = redis.Redis.from_url(settings.redis_url)
    with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as connection:
        drained_in = wait_until(
            lambda: (
                queues_idle(store)
                and (lambda s: s["public"] == s["confirmed"])(tally_state(connection, petition_id))
            ),
            timeout=120,
        )
        watcher.stop()
        final = tally_state(connection, petition_id)
        rows = connection.execute(
            "SELECT email, state FROM signatures WHERE petition_id = %s", (petition_id,)
        ).fetchall()
        duplicate_rows = connection.execute(
            "SELECT count(*) - count(DISTINCT email_key) FROM signatures WHERE petition_id = %s",
            (petition_id,),
        ).fetchone()[0]
    confirmed_rows = {email for email, state in rows if state == "confirmed"}
    received = store.hgetall(RECEIVED)
    during = [s for s in watcher.samples if s["t"] <= surge_ended]
    return {
        "petition_id": petition_id,
        "sign_rate": tally.rate("sign"),
        "sign_p50_ms": tally.percentile("sign", 0.50) * 1000,
        "sign_p95_ms": tally.percentile("sign", 0.95) * 1000,
        "sign_p99_ms": tally.percentile("sign", 0.99) * 1000,
        "confirm_rate": tally.rate("confirm"),
        "confirm_p99_ms": tally.percentile("confirm", 0.99) * 1000,
        "mail_p50_ms": tally.percentile("mail", 0.50) * 1000,
        "mail_p99_ms": tally.percentile("mail", 0.99) * 1000,
        "page_rate": tally.rate("page") + tally.rate("read"),
        "page_p99_ms": tally.percentile("read", 0.99) * 1000,
        "failures": dict(tally.failures),
        "signed": len(tally.signed),
        "confirmed_by_clients": len(tally.confirmed),
        "confirmed_rows": len(confirmed_rows),
        "lost": len(tally.confirmed - confirmed_rows),
        "unexpected_rows": len(confirmed_rows - tally.confirmed),
        "duplicate_rows": duplicate_rows,
        "duplicate_confirmation_emails": sum(
            int(received.get(email.encode(), 0)) > 1 for email in tally.signed
        ),
        "lag_peak_s": max((s["lag_s"] for s in during), default=0.0),
        "lag_peak_rows": max((s["confirmed"] - s["public"] for s in during), default=0),
        "count_went_backwards": any(
            later["public"] < earlier["public"]
            for earlier, later in zip(watcher.samples, watcher.samples[1:], strict=False)
        ),
        "drained_in_s": drained_in,
        "final_public": final["public"],
        "final_confirmed": final["confirmed"],
        "final_lag_rows": final["confirmed"] - final["public"],
        "queue_depth": _depth_series(watcher.samples),
        "cores_used": cores,
        "peak_memory_mb": watcher.memory_by_process(),
        "ratios": {
            "sign": tally.rate("sign") / bare["insert_rate"],
            "confirm": tally.rate("confirm") / bare["insert_rate"],
            "page": (tally.rate("page") + tally.rate("read")) / bare["get_rate"],
        },
        "flow_ratios": {
            "sign": tally.rate("sign") / bare["flow"]["insert_rate"],
            "confirm": tally.rate("confirm") / bare["flow"]["confirm_rate"],
            "page": (tally.rate("page") + tally.rate("read")) / bare["flow"]["page_rate"],
        },
    }


def request_cost(app) -> dict:
    """CPU and SQL statements per request of the flow, against a bare insert."""
    with app.app_context():
        petition_id = seed_petition("Licences for every ride-hailing driver in Porto")
    return request_costs(app, petition_id)


def _depth_series(samples: list[dict]) -> list[tuple[float, int, int, int]]:
    """Queue depths about every two seconds: (t, high, default, bulk)."""
    series, next_t = [], 0.0
    for sample in samples:
        if sample["t"] >= next_t:
            series.append((sample["t"], *(sample[name] for name in QUEUES)))
            next_t = sample["t"] + 2
    return series


def bare_smtp_rate(sink_port: int, seconds: float) -> float:
    """A plain smtplib loop over one connection to the same sink: the fan-out's ceiling."""
    message = EmailMessage()
    message["From"] = "bench@bench.example"
    message["Subject"] = "News from the petition"
    message.set_content("A short update.\n" * 20)
    sent, began = 0, time.monotonic()
    with smtplib.SMTP("127.0.0.1", sink_port) as server:
        while time.monotonic() - began < seconds:
            del message["To"]
            message["To"] = f"bare{sent}@bench.example"
            server.send_message(message)
            sent += 1
    return sent / (time.monotonic() - began)


def seed_signers(settings: Settings, petition_id: int, count: int) -> None:
    """``count`` confirmed signers who asked for updates, inserted in one statement."""
    with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as connection:
        connection.execute(
            """
            INSERT INTO signatures (petition_id, name, email, email_key, city, city_slug,
                                    show_name, wants_updates, state, counted, created_at,
                                    confirmed_at)
            SELECT %(petition)s, 'Signer ' || n, 'fan' || n || '@bench.example',
                   'fan' || n || '@bench.example', 'Lisbon', 'lisbon', false, true,
                   'confirmed', false, now(), now()
              FROM generate_series(1, %(count)s) AS n
            """,
            {"petition": petition_id, "count": count},
        )


def fan_out(settings: Settings, stack: Stack, app, *, kill_halfway: bool) -> dict:
    """Post an update to ``BENCH_FANOUT`` signers and wait until every one is settled."""
    from notifications.services import requeue_stalled
    from petitions import services
    from petitions.models import Petition

    store = redis.Redis.from_url(settings.redis_url)
    with app.app_context():
        petition_id = seed_petition("Cap short-term rentals in Lisbon's historic centre")
    seed_signers(settings, petition_id, settings.fanout)
    store.delete(RECEIVED, COPIES, TOTAL)
    watcher = Watcher(settings, stack, None)
    watcher.start()
    began = time.monotonic()
    with app.app_context():
        petition = app.extensions["sqlalchemy"].session.get(Petition, petition_id)
        update = services.post_update(
            petition, title="We meet the council on Monday", body="Here is the plan. " * 20
        )
        update_id = update.id
    killed, recovered = None, 0
    database = psycopg.connect(libpq_url(settings.database_url), autocommit=True)

    def unsettled() -> int:
        """Deliveries not yet recorded, or recorded but not yet sent or settled."""
        recorded, waiting = database.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE d.state IN ('pending', 'sending'))
              FROM notification_deliveries d JOIN notifications n ON n.id = d.notification_id
             WHERE n.kind = 'petition_update' AND n.payload->>'update_id' = %s
            """,
            (str(update_id),),
        ).fetchone()
        return settings.fanout - recorded + waiting

    progress = {"unsettled": -1, "since": time.monotonic()}

    def stuck(remaining: int) -> bool:
        """No delivery has settled for two seconds, though some are left."""
        if remaining != progress["unsettled"]:
            progress.update(unsettled=remaining, since=time.monotonic())
        return time.monotonic() - progress["since"] > 2

    def settled() -> bool:
        nonlocal killed, recovered
        total = int(store.get(TOTAL) or 0)
        if kill_halfway and killed is None and total >= settings.fanout // 2:
            stack.kill("worker-0")
            killed = total
            log(f"killed worker-0 after {total} emails; a new one starts, as a supervisor would")
            stack.start("worker-restarted", flask("worker", "--log-level", "WARNING"))
        remaining = unsettled()
        if remaining == 0 and queues_empty(store):
            return True  # every delivery settled; the sink's counts say what arrived
        if killed is not None and stuck(remaining) and queues_empty(store):
            # What the dead worker had claimed waits for the sweep. It would run after the
            # claims' lease; with every live job finished, run it now.
            with app.app_context():
                recovered += requeue_stalled(older_than=timedelta(0), lease=timedelta(0))
            progress["since"] = time.monotonic()
        return False

    cpu_before = cpu_by_part(stack)
    finished = wait_until(settled, timeout=900, step=0.5)
    elapsed = time.monotonic() - began
    # A killed worker takes its CPU time with it, so that run's split is not reported.
    cores = None if kill_halfway else cores_used(cpu_before, cpu_by_part(stack), elapsed)
    watcher.stop()
    received = store.hgetall(RECEIVED)
    counts = [int(n) for n in received.values()]
    copies = [int(n) for n in store.hgetall(COPIES).values()]
    states = dict(
        database.execute(
            """
            SELECT d.state, count(*) FROM notification_deliveries d JOIN notifications n
                ON n.id = d.notification_id
             WHERE n.kind = 'petition_update' AND n.payload->>'update_id' = %s
             GROUP BY d.state
            """,
            (str(update_id),),
        ).fetchall()
    )
    database.close()
    return {
        "recipients": settings.fanout,
        "finished": finished is not None,
        "seconds": elapsed,
        "rate": sum(counts) / elapsed,
        "received_addresses": len(counts),
        "duplicates": sum(n - 1 for n in counts if n > 1),
        # Of those, copies of a message already received (the same Message-ID): the most
        # a crash between the final dot and the commit of its record can cause.
        "resent_copies": sum(n - 1 for n in copies if n > 1),
        "losses": settings.fanout - len(counts),
        "killed_after": killed,
        "recovery_jobs": recovered,
        "delivery_states": states,
        "cores_used": cores,
        "queue_depth": _depth_series(watcher.samples),
        "peak_memory_mb": watcher.memory_by_process(),
    }


def queues_empty(store: redis.Redis) -> bool:
    return all(store.llen(f"rq:queue:{name}") == 0 for name in QUEUES)


# --- reporting -------------------------------------------------------------------------


def report(settings: Settings, results: dict) -> None:
    bare, surge = results["baseline"], results.get("signing")
    lines = [
        "",
        f"machine: {os.cpu_count()} cores; {settings.clients} signers + {settings.readers} "
        f"readers for {settings.seconds:.0f} s; gunicorn {settings.web_workers} sync workers; "
        f"{settings.rq_workers} RQ workers",
        f"baseline  bare insert {bare['insert_rate']:.0f}/s (p99 {bare['insert_p99_ms']:.0f} ms)"
        f"   bare GET {bare['get_rate']:.0f}/s",
    ]
    if surge:
        r, flow = surge["ratios"], bare["flow"]
        lines += [
            f"bare flow {flow['confirm_rate']:.0f}/s (the same clients: page, insert, then "
            f"confirm; p99 of the insert {flow['insert_p99_ms']:.0f} ms)",
            f"signature POST   {surge['sign_rate']:7.0f}/s  = {r['sign']:.2f} x bare insert   "
            f"p50 {surge['sign_p50_ms']:.0f} ms  p95 {surge['sign_p95_ms']:.0f} ms  "
            f"p99 {surge['sign_p99_ms']:.0f} ms   target >= 0.60, p99 < 150 ms",
            f"confirmation     {surge['confirm_rate']:7.0f}/s  = {r['confirm']:.2f} x bare insert"
            f"   target >= 0.60",
            f"petition page    {surge['page_rate']:7.0f}/s  = {r['page']:.2f} x bare GET      "
            f"target >= 0.40",
            "against the bare flow: "
            + ", ".join(f"{kind} {ratio:.2f}" for kind, ratio in surge["flow_ratios"].items())
            + "   (no target: the same three steps and readers on the bare app)",
            f"confirmation email arrives: p50 {surge['mail_p50_ms']:.0f} ms, "
            f"p99 {surge['mail_p99_ms']:.0f} ms after the POST",
            f"tally lag        peak {surge['lag_peak_s']:.1f} s ({surge['lag_peak_rows']} rows), "
            f"after draining {surge['final_lag_rows']} rows (drained in "
            f"{surge['drained_in_s'] if surge['drained_in_s'] is None else round(surge['drained_in_s'], 1)} s)"  # noqa: E501
            f"   target <= 5 s, then 0",
            f"signatures       {surge['confirmed_by_clients']} confirmed by clients, "
            f"{surge['confirmed_rows']} confirmed rows, lost {surge['lost']}, duplicate rows "
            f"{surge['duplicate_rows']}, duplicate emails {surge['duplicate_confirmation_emails']}"
            f", count went backwards: {surge['count_went_backwards']}",
            f"failed requests  {surge['failures'] or 'none'}",
            f"peak memory      {memory_by_role(surge['peak_memory_mb'])}   target <= 150 MB each",
            "cores kept busy  " + ", ".join(f"{k} {v}" for k, v in surge["cores_used"].items()),
            "queue depth (t, high, default, bulk): "
            + " ".join(f"{t:.0f}s:{h}/{d}/{b}" for t, h, d, b in surge["queue_depth"]),
        ]
    if cost := results.get("cost"):
        ratios, sql = cost["ratios"], cost["statements"]
        lines.append(
            f"request cost     in-process CPU as a multiple of one bare insert "
            f"({cost['bare_insert_ms']:.1f} ms), median of blocks: "
            + ", ".join(f"{kind} {ratios[kind]:.2f} ({sql[kind]} SQL)" for kind in ratios)
        )
    if "bare_smtp_rate" in results:
        lines.append(f"bare smtplib     {results['bare_smtp_rate']:7.0f} emails/s")
    for name in ("fanout", "fanout_killed"):
        if run := results.get(name):
            ratio = run["rate"] / results["bare_smtp_rate"]
            lines.append(
                f"{name:16} {run['rate']:7.0f} emails/s = {ratio:.2f} x bare smtplib   "
                f"{run['recipients']} recipients in {run['seconds']:.0f} s, duplicates "
                f"{run['duplicates']} (resent copies {run['resent_copies']}), losses "
                f"{run['losses']}"
                + (f", killed after {run['killed_after']}" if run["killed_after"] else "")
                + f"   peak memory {largest_process_mb(run['peak_memory_mb']):.0f} MB"
            )
            if run["cores_used"]:
                lines.append(
                    "                 cores: "
                    + ", ".join(f"{k} {v}" for k, v in run["cores_used"].items())
                )
    print("\n".join(lines), flush=True)


def _stop_on_sigterm(signum, frame) -> None:
    raise SystemExit(1)  # unwinds through the Stack, which stops every process it started


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    settings = Settings()
    (ROOT / "instance" / "bench").mkdir(parents=True, exist_ok=True)
    web_port, sink_port = free_port(), free_port()
    env = environment(settings, web_port, sink_port)
    os.environ.update(env)  # this process seeds through the app, with the same settings
    log(f"resetting {settings.database_url} and {settings.redis_url}")
    reset_database(settings.database_url)
    redis.Redis.from_url(settings.redis_url).flushdb()
    subprocess.run(flask("db", "upgrade"), cwd=ROOT, env=env, check=True, capture_output=True)

    from core.app import create_app

    app = create_app()
    results: dict = {"settings": {k: str(v) for k, v in vars(settings).items()}}
    with Stack(env) as stack:
        log("baselines")
        results["baseline"] = baselines(settings, stack, web_port)
        log("starting gunicorn, RQ workers and the mail sink")
        start_platform(settings, stack, web_port, sink_port)
        if "signing" not in settings.skip:
            log("signature surge")
            results["signing"] = signing(settings, stack, app, web_port, results["baseline"])
        if "cost" not in settings.skip:
            log("cost of each request, in-process")
            results["cost"] = request_cost(app)
        if "fanout" not in settings.skip:
            results["bare_smtp_rate"] = bare_smtp_rate(sink_port, 5)
            log(f"fan-out to {settings.fanout}")
            results["fanout"] = fan_out(settings, stack, app, kill_halfway=False)
            if "kill" not in settings.skip:
                log(f"fan-out to {settings.fanout}, killing a worker halfway")
                results["fanout_killed"] = fan_out(settings, stack, app, kill_halfway=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str))
    report(settings, results)
    log(f"all processes stopped; details in {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
