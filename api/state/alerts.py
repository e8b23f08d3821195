"""Alerts inside `rag serve`: one thread matches after commits, another delivers webhooks, and a bell
wakes the event streams. An ingest never waits for either: it only rings the matcher's wake-up.

Webhooks follow the Standard Webhooks specification, signed by its library (``standardwebhooks``):
``webhook-id`` (the alert's id: receivers dedupe by it, since an alert is delivered at least once),
``webhook-timestamp`` and ``webhook-signature`` (HMAC-SHA256 over ``id.timestamp.body`` with the watch's
secret). A delivery goes through the feed fetcher (index/fetch.py), so a webhook reaches only the
addresses feeds may be fetched from. A try that fails (no answer, a refused address, any status but
2xx) is tried again after ``retry_seconds * 2**tries``; after ``tries`` tries the watch is marked
failing with the reason. Deliveries wait in the outbox (api/state/watches.py) until they succeed, so a
server killed between the commit and the delivery delivers after its restart.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from api.metrics import WATCH_ALERTS, WEBHOOK_DELIVERIES
from api.state.alert_records import Delivery
from api.state.matching import WatchMatcher
from api.state.watches import WatchStore
from index.fetch import Fetcher, FetchError

log = logging.getLogger("api.state.alerts")
DEFAULT_CHECK_SECONDS = 2.0
DEFAULT_RETRY_SECONDS = 10.0
DEFAULT_TRIES = 8


class Bell:
    """Wakes every async listener (an event stream) from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def listen(self) -> asyncio.Event:
        """An event set at the next ring; call from a coroutine, and ``leave`` when done."""
        event = asyncio.Event()
        with self._lock:
            self._listeners.add((asyncio.get_running_loop(), event))
        return event

    def leave(self, event: asyncio.Event) -> None:
        with self._lock:
            self._listeners = {pair for pair in self._listeners if pair[1] is not event}

    def ring(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for loop, event in listeners:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)


def signed_headers(delivery: Delivery, now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one delivery."""
    stamp = now or datetime.now(UTC)
    signature = Webhook(delivery.secret).sign(delivery.alert_id, stamp, delivery.body)
    return {
        "content-type": "application/json",
        "webhook-id": delivery.alert_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
    }


def deliver(store: WatchStore, poster: Fetcher, retry_seconds: float, tries: int, now: float) -> int:
    """Try every delivery due by ``now`` once; how many succeeded."""
    done = 0
    for delivery in store.due(now):
        try:
            status = poster.post(delivery.url, delivery.body.encode(), signed_headers(delivery))
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except FetchError as exc:
            error = str(exc)
        if error is None:
            store.delivered(delivery.alert_id, delivery.watch_id)
            WEBHOOK_DELIVERIES.labels("delivered").inc()
            done += 1
            continue
        attempt = delivery.attempts + 1
        retry_at = None if attempt >= tries else time.time() + retry_seconds * 2 ** (attempt - 1)
        store.failed(delivery, error, retry_at)
        WEBHOOK_DELIVERIES.labels("failed" if retry_at is not None else "given_up").inc()
        log.warning(
            "webhook of watch %s, alert %s: %s (%s)",
            delivery.watch_id,
            delivery.alert_id,
            error,
            "given up" if retry_at is None else f"try {attempt + 1} in {retry_at - time.time():.1f} s",
        )
    return done


class AlertWorker:
    """Matches after each commit (woken by ``committed``, and every ``check_seconds`` for other
    processes' commits) and delivers webhooks, each in its own thread, once ``start`` is called."""

    def __init__(
        self,
        matcher: WatchMatcher,
        poster: Fetcher,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        tries: int = DEFAULT_TRIES,
    ) -> None:
        self.matcher = matcher
        self.store = matcher.store
        self.poster = poster
        self.bell = Bell()
        self._check = check_seconds
        self._retry = retry_seconds
        self._tries = tries
        self._wake = threading.Event()
        self._send = threading.Event()
        self._stopping = threading.Event()
        self._generation = -1
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Match and deliver here (only the process that writes does)."""
        self._threads = [
            threading.Thread(target=self._match_loop, name="watches", daemon=True),
            threading.Thread(target=self._deliver_loop, name="webhooks", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def committed(self) -> None:
        """Something was committed in this process: check it soon."""
        self._wake.set()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._send.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self.poster.close()
        self.store.close()

    def _match_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                generation = self.matcher.answerer.index.reader().generation
                if generation != self._generation:
                    alerts = self.matcher.check()
                    self._generation = generation
                    if alerts:
                        WATCH_ALERTS.inc(len(alerts))
                        log.info(
                            "%d alert(s) for %d watch(es)", len(alerts), len({a.watch_id for a in alerts})
                        )
                        self.bell.ring()
                        self._send.set()
            except Exception:
                log.exception("matching the watches failed")
            self._wake.wait(self._check)
            self._wake.clear()

    def _deliver_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                deliver(self.store, self.poster, self._retry, self._tries, time.time())
                due = self.store.next_due()
            except Exception:
                log.exception("delivering webhooks failed")
                due = None
            wait = self._check if due is None else min(self._check, max(due - time.time(), 0.0))
            self._send.wait(wait)
            self._send.clear()
