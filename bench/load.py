"""The load generator: asyncio clients on aiohttp, on loopback, bounded in time.

Signers walk the real flow: GET the petition page (cookie and CSRF token), POST the
signature, wait for the confirmation link to reach the mail sink, POST the confirmation.
Readers only GET the petition page. The baselines drive the bare app the same way.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field

import aiohttp
import redis.asyncio as aioredis

from bench.sink import LINKS

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|'
                  r'name="csrf_token" value="([^"]+)"')  # fmt: skip
MAIL_WAIT_SECONDS = 30


@dataclass
class Tally:
    """Latencies (seconds) and failures per kind of request, with wall-clock bounds."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    in_window: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    signed: set[str] = field(default_factory=set)
    confirmed: set[str] = field(default_factory=set)
    started: float = 0.0
    deadline: float = 0.0

    def record(self, kind: str, began: float, ok: bool) -> None:
        ended = time.perf_counter()
        if not ok:
            self.failures[kind] += 1
            return
        self.latencies[kind].append(ended - began)
        self.in_window[kind] += ended <= self.deadline

    def rate(self, kind: str) -> float:
        """Completions per second within the timed window; the tail after it is not counted."""
        return self.in_window[kind] / max(self.deadline - self.started, 1e-9)

    def percentile(self, kind: str, share: float) -> float:
        values = sorted(self.latencies[kind])
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(share * len(values)))]


def _csrf(page: str) -> str:
    found = CSRF.search(page)
    if not found:
        raise ValueError("no CSRF token on the page")
    return found.group(1) or found.group(2)


async def _request(tally: Tally, kind: str, request, expect: int) -> str | None:
    """Send ``request`` (an aiohttp request not yet entered) and time it."""
    began = time.perf_counter()
    try:
        async with request as response:
            body = await response.text()
            ok = response.status == expect
    except (aiohttp.ClientError, TimeoutError):
        ok, body = False, None
    tally.record(kind, began, ok)
    return body if ok else None


async def _signer(
    number: int,
    base: str,
    petition_id: int,
    connector: aiohttp.BaseConnector,
    mail: aioredis.Redis,
    tally: Tally,
    deadline: float,
) -> None:
    page_url = f"{base}/petitions/{petition_id}"
    sequence = 0
    while time.perf_counter() < deadline:
        sequence += 1
        email = f"signer{number}-{sequence}@bench.example"
        async with aiohttp.ClientSession(
            connector=connector,
            connector_owner=False,
            timeout=aiohttp.ClientTimeout(total=30),
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # keep cookies from 127.0.0.1
        ) as session:
            page = await _request(tally, "page", session.get(page_url), 200)
            if page is None:
                continue
            token = _csrf(page)
            form = {
                "csrf_token": token,
                "name": f"Signer {number} {sequence}",
                "email": email,
                "city": ("Lisbon", "Porto", "Berlin", "Leeds")[number % 4],
                "show_name": "y",
                "wants_updates": "y",
                "website": "",
            }
            signed = await _request(
                tally,
                "sign",
                session.post(f"{page_url}/sign", data=form, allow_redirects=False),
                302,
            )
            if signed is None:
                continue
            tally.signed.add(email)
            began = time.perf_counter()
            arrived = await mail.blpop([LINKS + email], timeout=MAIL_WAIT_SECONDS)
            tally.record("mail", began, arrived is not None)
            if arrived is None:
                continue
            link = arrived[1].decode()
            confirmed = await _request(
                tally,
                "confirm",
                session.post(link, data={"csrf_token": token}, allow_redirects=False),
                302,
            )
            if confirmed is not None:
                tally.confirmed.add(email)


async def _reader(
    url: str, connector: aiohttp.BaseConnector, tally: Tally, deadline: float, kind: str
) -> None:
    async with aiohttp.ClientSession(connector=connector, connector_owner=False) as session:
        while time.perf_counter() < deadline:
            await _request(tally, kind, session.get(url), 200)


async def _poster(
    url: str, connector: aiohttp.BaseConnector, tally: Tally, deadline: float, number: int
) -> None:
    async with aiohttp.ClientSession(connector=connector, connector_owner=False) as session:
        sequence = 0
        while time.perf_counter() < deadline:
            sequence += 1
            data = {"email": f"row{number}-{sequence}@bench.example"}
            await _request(tally, "insert", session.post(url, data=data), 201)


async def _bare_signer(
    base: str, connector: aiohttp.BaseConnector, tally: Tally, deadline: float, number: int
) -> None:
    """The signing flow's shape on the bare app: a page, an insert, then its confirmation."""
    async with aiohttp.ClientSession(connector=connector, connector_owner=False) as session:
        sequence = 0
        while time.perf_counter() < deadline:
            sequence += 1
            if await _request(tally, "page", session.get(f"{base}/page"), 200) is None:
                continue
            data = {"email": f"flow{number}-{sequence}@bench.example"}
            row_id = await _request(tally, "insert", session.post(f"{base}/rows", data=data), 201)
            if row_id is None:
                continue
            confirm = session.post(f"{base}/rows/{row_id}/confirm")
            if await _request(tally, "confirm", confirm, 204) is not None:
                tally.confirmed.add(row_id)


def _connector(clients: int) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=clients, force_close=True)


async def _run(tasks_for, clients: int, seconds: float) -> Tally:
    tally = Tally()
    connector = _connector(clients)
    tally.started = time.perf_counter()
    tally.deadline = tally.started + seconds
    try:
        await asyncio.gather(*tasks_for(connector, tally, tally.deadline))
    finally:
        await connector.close()
    return tally


def bare_inserts(base: str, clients: int, seconds: float) -> Tally:
    """The baseline: ``clients`` clients POSTing one row each, as fast as they can."""

    def tasks(connector, tally, deadline):
        return [_poster(f"{base}/rows", connector, tally, deadline, n) for n in range(clients)]

    return asyncio.run(_run(tasks, clients, seconds))


def bare_gets(base: str, clients: int, seconds: float) -> Tally:
    """The baseline: ``clients`` clients GETting a small page."""

    def tasks(connector, tally, deadline):
        return [_reader(f"{base}/page", connector, tally, deadline, "page") for _ in range(clients)]

    return asyncio.run(_run(tasks, clients, seconds))


def bare_flow(base: str, signers: int, readers: int, seconds: float) -> Tally:
    """The baseline for the whole flow: the surge's clients, on the bare app."""

    def tasks(connector, tally, deadline):
        return [
            *(_bare_signer(base, connector, tally, deadline, n) for n in range(signers)),
            *(_reader(f"{base}/page", connector, tally, deadline, "read") for _ in range(readers)),
        ]

    return asyncio.run(_run(tasks, signers + readers, seconds))


def signing_surge(
    base: str, petition_id: int, redis_url: str, signers: int, readers: int, seconds: float
) -> Tally:
    """``signers`` walking the whole signing flow and ``readers`` viewing the page."""

    async def run() -> Tally:
        mail = aioredis.Redis.from_url(redis_url)
        page_url = f"{base}/petitions/{petition_id}"

        def tasks(connector, tally, deadline):
            return [
                *(
                    _signer(n, base, petition_id, connector, mail, tally, deadline)
                    for n in range(signers)
                ),
                *(_reader(page_url, connector, tally, deadline, "read") for _ in range(readers)),
            ]

        try:
            return await _run(tasks, signers + readers, seconds)
        finally:
            await mail.aclose()

    return asyncio.run(run())
