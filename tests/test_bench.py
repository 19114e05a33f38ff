"""The benchmark itself, run small: the production processes start, the flow completes,
nothing is lost or sent twice (a worker killed halfway may resend the one message in
flight, as the same message), and everything stops.

Runs only against PostgreSQL (``TEST_DATABASE_URL``), on a database of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.run import RESULTS
from bench.stack import ROOT, command_line, descendants

DATABASE = os.environ.get("TEST_DATABASE_URL", "")

pytestmark = pytest.mark.skipif(
    not DATABASE.startswith("postgresql"), reason="the benchmark runs on PostgreSQL"
)


BENCH_PROCESSES = ("bench.sink", "bench.baseline:app", "wsgi worker --log-level WARNING")


def bench_processes() -> dict[int, str]:
    """Processes on this machine that look like the benchmark's, by pid."""
    lines = {pid: command_line(pid) for pid in descendants(1)}
    return {pid: line for pid, line in lines.items() if any(m in line for m in BENCH_PROCESSES)}


def test_a_small_benchmark_loses_nothing_sends_nothing_twice_and_stops_everything():
    # Only processes this run started count: another run on the machine is not its concern.
    already_running = bench_processes()
    database = DATABASE.rsplit("/", 1)[0] + "/groundswell_bench_check"
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15").rsplit("/", 1)[0]
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "REDIS_URL": f"{redis_url}/13",
        "BENCH_SECONDS": "2",
        "BENCH_CLIENTS": "4",
        "BENCH_READERS": "1",
        "WEB_CONCURRENCY": "2",
        "BENCH_FANOUT": "600",
        "FAN_OUT_PAGE": "50",  # many page jobs, so the kill may land on one
    }
    run = subprocess.run(
        [sys.executable, "-m", "bench.run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads(RESULTS.read_text())

    assert results["baseline"]["insert_rate"] > 0 and results["baseline"]["get_rate"] > 0
    bare_flow = results["baseline"]["flow"]
    assert bare_flow["confirmed_by_clients"] > 0
    assert bare_flow["confirmed_rows"] == bare_flow["confirmed_by_clients"], bare_flow
    surge = results["signing"]
    assert surge["confirmed_by_clients"] > 0
    assert surge["confirmed_rows"] == surge["confirmed_by_clients"]
    assert (surge["lost"], surge["duplicate_rows"], surge["duplicate_confirmation_emails"]) == (
        0,
        0,
        0,
    )
    assert surge["final_public"] == surge["final_confirmed"]
    assert not surge["count_went_backwards"]
    memory = surge["peak_memory_mb"]  # role: pid: MB
    assert len(memory["web workers"]) == 2 and len(memory["gunicorn master"]) == 1, memory
    assert len(memory["RQ workers"]) == 2 * os.cpu_count(), memory
    assert all(mb > 0 for by_pid in memory.values() for mb in by_pid.values()), memory
    cost = results["cost"]
    assert all(ratio > 0 for ratio in cost["ratios"].values()), cost
    # A signature is saved with its email in four statements, a confirmation in three.
    assert cost["statements"]["sign"] <= 4 and cost["statements"]["confirm"] <= 3, cost
    fan_out, killed = results["fanout"], results["fanout_killed"]
    assert fan_out["finished"] and killed["finished"], (fan_out, killed)
    assert (fan_out["duplicates"], fan_out["losses"]) == (0, 0), fan_out
    assert killed["killed_after"] is not None
    assert killed["losses"] == 0, killed
    # The kill may land between a final dot and the commit of its record: at most that one
    # message arrives twice, as the same message (its Message-ID), never as another.
    assert killed["duplicates"] == killed["resent_copies"] <= 1, killed

    left_running = {
        pid: line for pid, line in bench_processes().items() if pid not in already_running
    }
    assert not left_running, left_running
    assert "all processes stopped" in run.stdout
