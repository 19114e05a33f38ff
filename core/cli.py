"""Command-line tools: ``flask --app wsgi worker | cron | dev | seed-demo``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from rq.cron import CronScheduler
from werkzeug.serving import run_simple

from core.extensions import db, redis_store
from core.queue import PERIODIC_JOBS, QUEUE_NAMES, bind_worker_app, make_worker

DemoSeeder = Callable[[], list[str]]
DEMO_SEEDERS: list[tuple[int, DemoSeeder]] = []


def demo_seeder(order: int) -> Callable[[DemoSeeder], DemoSeeder]:
    """Register a function that adds demo data and returns lines to print; lower runs first."""

    def register(func: DemoSeeder) -> DemoSeeder:
        DEMO_SEEDERS.append((order, func))
        return func

    return register


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option(
    "--fork",
    is_flag=True,
    help="Run each job in a forked child: more isolation, far fewer jobs per second.",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    help="WARNING keeps busy workers from writing lines for every job.",
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    type=click.Choice(QUEUE_NAMES),
    help="Serve only this queue (repeatable); by default high, default and bulk.",
)
@with_appcontext
def worker_command(burst: bool, fork: bool, log_level: str, queues: tuple[str, ...]) -> None:
    """Run an RQ worker on the high, default and bulk queues, with RQ's scheduler.

    Jobs run in the worker's own process by default, reusing its database and mail
    connections; forking for every job costs more than a confirmation email does.
    """
    bind_worker_app(current_app._get_current_object())
    db.engine.dispose()  # connections are opened afresh in the worker (or its children)
    make_worker(simple=not fork, queues=queues or QUEUE_NAMES).work(
        burst=burst, with_scheduler=True, logging_level=log_level.upper()
    )


@click.command("cron")
@with_appcontext
def cron_command() -> None:
    """Enqueue the periodic jobs (closing, purging, reconciling) on their schedules.

    Run exactly one of these per deployment.
    """
    scheduler = CronScheduler(connection=redis_store.connection)
    for job in PERIODIC_JOBS:
        scheduler.register(job.func, job.queue, interval=job.interval, cron=job.cron)
    scheduler.start()


@click.command("seed-demo")
@with_appcontext
def seed_demo_command() -> None:
    """Load demo data on the first run; print the demo login on every run."""
    login_file = Path(current_app.instance_path) / "demo-login.txt"
    if not login_file.exists():
        lines: list[str] = []
        for _, seeder in sorted(DEMO_SEEDERS, key=lambda pair: pair[0]):
            lines.extend(seeder())
        db.session.commit()
        login_file.write_text("\n".join(lines) + "\n")
    click.echo(login_file.read_text(), nl=False)


@click.command("dev")
@click.option(
    "--port", type=int, default=lambda: int(os.environ.get("PORT", 5000)), show_default="5000"
)
@with_appcontext
def dev_command(port: int) -> None:
    """Serve the app on 127.0.0.1 with a worker and the scheduler beside it; Ctrl-C stops all."""
    app: Flask = current_app._get_current_object()
    redis_store.connection.ping()  # start the embedded Redis before the helpers look for it
    env = dict(os.environ)
    if "BASE_URL" not in env:  # links in pages and emails follow the chosen port
        env["BASE_URL"] = app.config["BASE_URL"] = f"http://127.0.0.1:{port}"
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    helpers = [subprocess.Popen([*flask, command], env=env) for command in ("worker", "cron")]
    click.echo(f"Groundswell is running on http://127.0.0.1:{port}  (Ctrl-C to stop)")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        app.debug = True  # development server: tracebacks in the browser, /dev/outbox
        run_simple("127.0.0.1", port, app, threaded=True, use_debugger=True)
    finally:
        for helper in helpers:
            helper.terminate()
        for helper in helpers:
            try:
                helper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                helper.kill()


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def register(app: Flask) -> None:
    """Add the commands to ``app``."""
    for command in (worker_command, cron_command, seed_demo_command, dev_command):
        app.cli.add_command(command)
