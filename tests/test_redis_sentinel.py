"""Redis behind Sentinel: real redis-server processes, a primary, a replica and a sentinel.

The app finds the primary through the sentinel, and after a failover its writes, rate
limits and queued jobs reach the new primary without the app being rebuilt.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from core.app import create_app
from core.extensions import redis_store
from core.queue import get_queue, make_worker
from core.ratelimit import hit
from core.redis import sentinel_addresses

SERVICE = "groundswell"

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs the redis-server binary"
)


def _free_ports(count: int) -> list[int]:
    """Distinct free ports: every probe stays bound until all are chosen."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _wait_for(condition: Callable[[], object], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, RedisConnectionError):
            pass  # still starting, or loading its data
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Cluster:
    """A primary, one replica and one sentinel, each a real redis-server process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.primary, self.replica, self.sentinel = _free_ports(3)
        self.processes: list[subprocess.Popen] = []

    def _serve(self, *args: str) -> None:
        self.processes.append(
            subprocess.Popen(
                ["redis-server", *args],
                cwd=self.folder,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def client(self, port: int) -> Redis:
        return Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)

    def start(self) -> None:
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._serve("--port", str(self.primary), *common)
        self._serve(
            "--port", str(self.replica), "--replicaof", "127.0.0.1", str(self.primary), *common
        )
        # The sentinel starts only once both servers are up, and waits long before it
        # calls a busy primary down, so that only the test's own failover promotes.
        replica = self.client(self.replica)
        _wait_for(lambda: replica.info("replication").get("master_link_status") == "up", "sync")
        config = self.folder / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel}\nbind 127.0.0.1\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 10000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"sentinel known-replica {SERVICE} 127.0.0.1 {self.replica}\n"
        )
        self._serve(str(config), "--sentinel")
        _wait_for(self._sentinel_knows_the_replica, "the sentinel to find the replica")

    def _sentinel_knows_the_replica(self) -> bool:
        replicas = self.client(self.sentinel).sentinel_slaves(SERVICE)
        return any(int(r["port"]) == self.replica and "s_down" not in r["flags"] for r in replicas)

    def primary_port(self) -> int:
        _, port = self.client(self.sentinel).sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def _ask_for_failover(self) -> bool:
        try:
            return bool(self.client(self.sentinel).execute_command("SENTINEL FAILOVER", SERVICE))
        except ResponseError as error:
            if "NOGOODSLAVE" in str(error):
                return False  # the sentinel's view of the replica is not fresh enough yet
            raise

    def fail_over(self) -> int:
        """Promote the replica; returns the new primary's port."""
        old = self.primary_port()
        _wait_for(self._ask_for_failover, "the sentinel to accept a failover")
        _wait_for(lambda: self.primary_port() != old, "the replica to be promoted")
        new = self.primary_port()
        _wait_for(lambda: self._role(new) == "master", "the promotion")
        # Until the sentinel demotes the old primary it still takes writes, which Redis
        # then drops: that window is Sentinel's, so the test waits it out.
        _wait_for(lambda: self._role(old) == "slave", "the old primary to follow")
        return new

    def _role(self, port: int) -> str:
        return self.client(port).info("replication")["role"]

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("sentinel"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def sentinel_app(app: Flask, cluster: Cluster) -> Flask:
    """The test app's settings, but with Redis found through the sentinel."""
    return create_app(
        {
            **{key: app.config[key] for key in ("TESTING", "SQLALCHEMY_DATABASE_URI")},
            "REDIS_URL": "redis://127.0.0.1:1/0",  # never used while sentinels are listed
            "REDIS_SENTINELS": f"127.0.0.1:{cluster.sentinel}",
            "REDIS_SENTINEL_SERVICE": SERVICE,
        }
    )


def test_sentinel_addresses_are_read_from_a_comma_separated_list():
    assert sentinel_addresses(" a.example:26379, 10.0.0.2:26380 ,[::1]:26381,") == [
        ("a.example", 26379),
        ("10.0.0.2", 26380),
        ("::1", 26381),
    ]
    with pytest.raises(ValueError, match="not host:port"):
        sentinel_addresses("a.example")


def test_the_app_writes_to_the_primary_the_sentinel_names(sentinel_app, cluster):
    with sentinel_app.app_context():
        redis_store.connection.set("where", "primary")
    assert cluster.client(cluster.primary_port()).get("where") == "primary"


def test_after_a_failover_writes_limits_and_jobs_reach_the_new_primary(sentinel_app, cluster):
    with sentinel_app.app_context():
        redis_store.connection.set("before", "1")
        assert hit("2 per minute", "failover")
        promoted = cluster.client(cluster.fail_over())

        redis_store.connection.set("after", "1")
        assert hit("2 per minute", "failover")
        assert not hit("2 per minute", "failover"), "the window survived the failover"
        job = get_queue("default").enqueue("operator.add", 2, 3)
        make_worker(simple=True).work(burst=True)
        assert job.return_value() == 5

    assert promoted.get("before") == "1" and promoted.get("after") == "1"
