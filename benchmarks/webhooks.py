"""A healthy webhook receiver beside bad ones: how long after its alert its first try arrives.

    .venv/bin/python benchmarks/webhooks.py [--hanging 5] [--trickling 5] [--crowd 100]

Receivers on 127.0.0.1, each its own server: a healthy one that answers 200 after 3 s (as in the report
that opened issue 40), ``--hanging`` ones that read the request and never answer, and ``--trickling``
ones that answer a header byte a second (no read timeout ever trips; only a deadline ends them). Every
receiver has a watch and the bad receivers' alerts are stored first, then the healthy one's; the store
(a real WatchTables in a temporary folder) and the fetcher are the served ones.

1. One at a time (the design before issue 40, as a baseline in the same run): one sender, a try's
   deadline 60 s, one hanging and one trickling receiver ahead of the healthy one.
2. Lanes: the served sender (api/work/webhooks.py), the bad receivers of ``--hanging`` and ``--trickling``
   ahead of the healthy one, all watches of one key.
3. A crowd: one key's ``--crowd`` watches on as many hanging receivers (the most a key may keep), and
   another key's healthy receiver.

Prints each healthy receiver's delay (its first try's arrival minus the alert's commit) and the ratio of
the baseline to each.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.store.records import Found  # noqa: E402
from api.store.standing import WatchTables  # noqa: E402
from api.work.outbound import WEBHOOK_LIMITS  # noqa: E402
from api.work.webhooks import WebhookSender  # noqa: E402
from index.fetch import Fetcher, Limits, parse_networks  # noqa: E402

BEFORE = Limits(connect_seconds=5.0, read_seconds=10.0, total_seconds=60.0)
"""A try's bounds before issue 40 (the feed fetcher's)."""


class Receiver:
    """One webhook receiver on 127.0.0.1: ``healthy`` (200 after 3 s), ``hanging`` or ``trickling``."""

    def __init__(self, how: str) -> None:
        self.first: float | None = None
        self.arrived = threading.Event()
        self.stop = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                if receiver.first is None:
                    receiver.first = time.monotonic()
                    receiver.arrived.set()
                if how == "hanging":
                    receiver.stop.wait(600)
                    return
                if how == "trickling":
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 600:
                        if receiver.stop.wait(1.0):
                            return
                        try:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                time.sleep(3.0)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        with contextlib.suppress(OSError):
            self.server.server_close()


def run(
    name: str, bad: list[str], owners: tuple[str, str], senders: int, limits: Limits, folder: Path
) -> float:
    """The healthy receiver's delay in seconds, with ``bad`` receivers' alerts stored before its own."""
    store = WatchTables.open(folder / f"{name}.sqlite")
    poster = Fetcher(parse_networks("127.0.0.0/8"), limits)
    receivers = [Receiver(how) for how in bad]
    healthy = Receiver("healthy")
    sender = WebhookSender(store, poster, senders=senders)
    try:
        watches = [
            store.watches.add(f"question {n}?", owners[0], webhook=r.url).watch
            for n, r in enumerate(receivers)
        ]
        mine = store.watches.add("When will the lighthouse open?", owners[1], webhook=healthy.url).watch
        store.alerts.advance(None, 0, [])
        store.alerts.advance(
            0, 1, [Found(w.id, f"s{n}", f"a{n}", {"answer": "x [1]"}, 0.9) for n, w in enumerate(watches)]
        )
        committed = time.monotonic()
        store.alerts.advance(1, 2, [Found(mine.id, "s", "a", {"answer": "1 June [1]"}, 0.9)])
        done = threading.Event()
        while not healthy.arrived.is_set():
            sender.dispatch()
            sender.wait(0.2)
        del done
        assert healthy.first is not None
        return healthy.first - committed
    finally:
        for receiver in [*receivers, healthy]:
            receiver.close()
        sender.close()
        poster.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hanging", type=int, default=5)
    parser.add_argument("--trickling", type=int, default=5)
    parser.add_argument("--crowd", type=int, default=100)
    args = parser.parse_args()
    logging.getLogger("api.work.webhooks").setLevel(logging.ERROR)  # every bad try says so otherwise
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = [
            ("one at a time, 60 s a try (before)", ["hanging", "trickling"], ("k", "k"), 1, BEFORE),
            (
                f"lanes, {args.hanging} hanging + {args.trickling} trickling",
                ["hanging"] * args.hanging + ["trickling"] * args.trickling,
                ("k", "k"),
                32,
                WEBHOOK_LIMITS,
            ),
            (
                f"lanes, one key's {args.crowd} hanging",
                ["hanging"] * args.crowd,
                ("mallory", "alice"),
                32,
                WEBHOOK_LIMITS,
            ),
        ]
        results = []
        for n, (label, bad, owners, senders, limits) in enumerate(rows):
            delay = run(f"run{n}", bad, owners, senders, limits, folder)
            results.append((label, delay))
            print(f"{label:<45} healthy receiver's first try {delay:6.2f} s after its alert", flush=True)
    baseline = results[0][1]
    print()
    print("| setup | bad receivers ahead | healthy receiver's first try after its alert | baseline / this |")
    print("|---|---|---|---|")
    for (label, delay), (_, bad, _, _, _) in zip(results, rows, strict=True):
        print(f"| {label} | {len(bad)} | {delay:.2f} s | {baseline / delay:.1f}x |")


if __name__ == "__main__":
    main()
