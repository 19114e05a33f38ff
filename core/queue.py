"""RQ plumbing: named queues, a job class that runs inside an app context, periodic jobs.

Queues:
- ``high``: transactional mail that someone is waiting for;
- ``default``: everything else, such as tallies;
- ``bulk``: fan-out to many recipients, so it never delays ``high``.

Jobs are plain functions of ids. Periodic jobs are declared with ``@periodic`` beside the
feature that owns them and enqueued by ``flask cron``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app, has_app_context
from rq import Queue, Retry, SimpleWorker, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from core.extensions import redis_store

QUEUE_NAMES = ("high", "default", "bulk")

# Raised inside a job that has run its time. A job lets it go, whatever it catches
# otherwise, so that RQ retries the job, rather than taking it for one item's failure.
JobTimeout = JobTimeoutException

_worker_app: Flask | None = None


def bind_worker_app(app: Flask) -> None:
    """Make ``app`` the one every job of this process runs in."""
    global _worker_app
    _worker_app = app


def _app_for_job() -> Flask:
    if _worker_app is not None:
        return _worker_app
    if has_app_context():
        return current_app._get_current_object()  # type: ignore[attr-defined]
    from core.app import create_app

    bind_worker_app(create_app())
    return _worker_app  # type: ignore[return-value]


class AppJob(Job):
    """A job that runs inside its own app context, and so gets its own database session."""

    def perform(self) -> Any:
        app = _app_for_job()
        with app.app_context():
            return super().perform()


def get_queue(name: str = "default") -> Queue:
    """The named queue on the app's Redis."""
    return Queue(name, connection=redis_store.connection, job_class=AppJob)


def all_queues() -> list[Queue]:
    """Every queue, highest priority first."""
    return [get_queue(name) for name in QUEUE_NAMES]


def enqueue(
    func: Callable[..., Any],
    *args: Any,
    queue: str = "default",
    retry: Retry | None = None,
    job_id: str | None = None,
    at: datetime | None = None,
    delay: timedelta | None = None,
    **job_options: Any,
) -> Job:
    """Queue ``func(*args)``; with ``at`` or a ``delay`` above zero it waits for RQ's
    scheduler."""
    q = get_queue(queue)
    options = {"retry": retry, "job_id": job_id, "failure_ttl": 7 * 24 * 3600, **job_options}
    if at is not None:
        return q.enqueue_at(at, func, *args, **options)
    if delay:  # a zero delay runs at once, as if none were given
        return q.enqueue_in(delay, func, *args, **options)
    return q.enqueue(func, *args, **options)


def cancel_job(job_id: str) -> bool:
    """Remove a queued or scheduled job, if it is still there."""
    try:
        Job.fetch(job_id, connection=redis_store.connection).delete()
    except NoSuchJobError:
        return False
    return True


def make_worker(
    *, simple: bool = False, name: str | None = None, queues: tuple[str, ...] = QUEUE_NAMES
) -> Worker:
    """A worker on ``queues`` (all of them, highest priority first), jobs in an app context."""
    cls = SimpleWorker if simple else Worker
    chosen = [get_queue(queue) for queue in QUEUE_NAMES if queue in queues]
    return cls(chosen, connection=redis_store.connection, job_class=AppJob, name=name)


def default_retry() -> Retry:
    """Retry a failing job with growing pauses: 10 s, 1 min, 5 min, 30 min."""
    return Retry(max=4, interval=[10, 60, 300, 1800])


@dataclass(frozen=True)
class PeriodicJob:
    func: Callable[..., Any]
    queue: str
    interval: int | None = None
    cron: str | None = None


PERIODIC_JOBS: list[PeriodicJob] = []


def periodic(
    *, queue: str = "default", interval: int | None = None, cron: str | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a job that ``flask cron`` enqueues every ``interval`` seconds or on ``cron``."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        PERIODIC_JOBS.append(PeriodicJob(func, queue, interval, cron))
        return func

    return register
