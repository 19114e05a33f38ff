"""A local SMTP sink for the benchmark, run in its own process.

It accepts every message and records, in Redis, how many each address received, how many
copies of each Message-ID it received, and the first link in each message, so the load
generator can read its confirmation link.

    python -m bench.sink --port 2525 --redis redis://127.0.0.1:6379/14
"""

from __future__ import annotations

import argparse
import re
import signal
import threading

import redis
from aiosmtpd.controller import Controller

RECEIVED = "bench:received"  # hash: address -> messages received
COPIES = "bench:copies"  # hash: "address message-id" -> copies received
TOTAL = "bench:total"  # messages received in all
LINKS = "bench:links:"  # list per address: links in arrival order
LINK = re.compile(rb"http://\S+/petitions/signatures/[^/\s]+/confirm")
MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


class RecordingHandler:
    """Counts each message per recipient and keeps any confirmation link."""

    def __init__(self, store: redis.Redis) -> None:
        self.store = store

    async def handle_DATA(self, server, session, envelope) -> str:
        pipe = self.store.pipeline(transaction=False)
        pipe.incr(TOTAL)
        link = LINK.search(envelope.content)
        found = MESSAGE_ID.search(envelope.content)
        message_id = found.group(1).decode() if found else "-"
        for address in envelope.rcpt_tos:
            pipe.hincrby(RECEIVED, address.lower(), 1)
            pipe.hincrby(COPIES, f"{address.lower()} {message_id}", 1)
            if link:
                pipe.rpush(LINKS + address.lower(), link.group().decode())
        pipe.execute()
        return "250 OK"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    handler = RecordingHandler(redis.Redis.from_url(args.redis))
    controller = Controller(handler, hostname="127.0.0.1", port=args.port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"sink listening on 127.0.0.1:{args.port}", flush=True)
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
