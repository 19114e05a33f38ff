"""What one request of the signing flow costs, as a ratio to one bare insert.

The load scenarios swing by up to 40% from run to run on a shared machine. CPU time
spent in this process on a single request swings much less, so this measures each
request of the flow in-process through Flask's test client, in blocks that alternate
with bare inserts (``bench/baseline.py``) through the same client. It reports the
median CPU of each kind of request as a ratio to the median of the bare inserts, and
the SQL statements each request sends.
Both apps talk to the same PostgreSQL and Redis as the rest of the run.
"""

from __future__ import annotations

import re
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

from sqlalchemy import event

KINDS = ("page", "sign", "confirm")
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


class _Meter:
    """CPU seconds and SQL statements per kind of request."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.statements: dict[str, int] = defaultdict(int)
        self.current: str | None = None

    def count_statement(self, *_args) -> None:
        if self.current:
            self.statements[self.current] += 1

    def time(self, kind: str, request: Callable[[], object]) -> object:
        self.current, began = kind, time.process_time()
        try:
            return request()
        finally:
            self.cpu[kind] += time.process_time() - began
            self.current = None


def _signing_flow(app, petition_id: int, number: int, meter: _Meter) -> None:
    """One signer: the page, the signature and the confirmation, as a browser sends them."""
    from core.extensions import db
    from petitions.models import Signature
    from petitions.services import confirmation_token

    client = app.test_client()
    page = meter.time("page", lambda: client.get(f"/petitions/{petition_id}"))
    token = CSRF.search(page.text).group(1)
    email = f"cost-{number}@bench.example"
    form = {"csrf_token": token, "name": f"Signer {number}", "email": email, "city": "Lisbon",
            "show_name": "y", "wants_updates": "y", "website": ""}  # fmt: skip
    signed = meter.time("sign", lambda: client.post(f"/petitions/{petition_id}/sign", data=form))
    if signed.status_code != 302:
        raise RuntimeError(f"signing answered {signed.status_code}")
    with app.app_context():  # the link the email carries, read outside the timed request
        signature = db.session.scalar(db.select(Signature).filter_by(email=email))
        link = f"/petitions/signatures/{confirmation_token(signature)}/confirm"
    confirmed = meter.time("confirm", lambda: client.post(link, data={"csrf_token": token}))
    if confirmed.status_code != 302:
        raise RuntimeError(f"confirming answered {confirmed.status_code}")


def _bare_inserts(client, count: int) -> None:
    for number in range(count):
        client.post("/rows", data={"email": f"row-{number}@bench.example"})


def request_costs(app, petition_id: int, blocks: int = 8, flows: int = 20) -> dict:
    """CPU per request of the flow over ``blocks``, each as a ratio to a bare insert."""
    from bench import baseline
    from core.extensions import db

    baseline.prepare()
    bare = baseline.app.test_client()
    meter = _Meter()
    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", meter.count_statement)
    numbers = iter(range(1, 10**9))
    try:
        for _ in range(flows):  # warm up both apps
            _signing_flow(app, petition_id, next(numbers), meter)
            _bare_inserts(bare, 1)
        per_request: dict[str, list[float]] = {kind: [] for kind in (*KINDS, "bare")}
        statements: dict[str, int] = {}
        for _ in range(blocks):
            meter.cpu.clear()
            meter.statements.clear()
            for _ in range(flows):
                _signing_flow(app, petition_id, next(numbers), meter)
            meter.time("bare", lambda: _bare_inserts(bare, flows))
            for kind in per_request:
                per_request[kind].append(meter.cpu[kind] / flows)
            statements = {kind: meter.statements[kind] // flows for kind in KINDS}
    finally:
        event.remove(engine, "before_cursor_execute", meter.count_statement)
    bare_cpu = statistics.median(per_request["bare"])
    return {
        "ratios": {kind: statistics.median(per_request[kind]) / bare_cpu for kind in KINDS},
        "statements": statements,
        "bare_insert_ms": bare_cpu * 1000,
    }
