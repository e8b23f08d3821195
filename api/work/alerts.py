"""Alerts inside `rag serve`: one thread matches after commits, another starts webhook tries as they come
due (api/work/webhooks.py sends them side by side, a lane per receiver), and a bell wakes the event
streams. An ingest never waits for either: it only rings the matcher's wake-up. Deliveries wait in the
outbox (api/store/watches.py) until they succeed, so a server killed between the commit and the delivery
delivers after its restart.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from api.config import DEFAULT_WATCH_CHECK_SECONDS, DEFAULT_WEBHOOK_RETRY_SECONDS, DEFAULT_WEBHOOK_TRIES
from api.metrics import WATCH_ALERTS
from api.work.matching import WatchMatcher
from api.work.webhooks import DEFAULT_SENDERS, WebhookSender
from index.fetch import Fetcher

log = logging.getLogger("api.work.alerts")


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


class AlertWorker:
    """Matches after each publish of the index (woken by its listener: this process's commits, and other
    processes' once followed; and every ``check_seconds`` regardless) and starts webhook tries as they
    come due (woken by new alerts and by each try that ends), each loop in its own thread, once ``start``
    is called."""

    def __init__(
        self,
        matcher: WatchMatcher,
        poster: Fetcher,
        check_seconds: float = DEFAULT_WATCH_CHECK_SECONDS,
        retry_seconds: float = DEFAULT_WEBHOOK_RETRY_SECONDS,
        tries: int = DEFAULT_WEBHOOK_TRIES,
        senders: int = DEFAULT_SENDERS,
    ) -> None:
        self.matcher = matcher
        self.store = matcher.store
        self.poster = poster
        self.bell = Bell()
        self._check = check_seconds
        self._wake = threading.Event()
        self._send = threading.Event()
        self.sender = WebhookSender(self.store, poster, retry_seconds, tries, senders, on_done=self._send)
        self._stopping = threading.Event()
        self._generation = -1
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Match and deliver here (only the process that writes does)."""
        self.matcher.answerer.index.on_publish(lambda _: self._wake.set())
        self._threads = [
            threading.Thread(target=self._match_loop, name="watches", daemon=True),
            threading.Thread(target=self._deliver_loop, name="webhooks", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._send.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self.sender.close()  # the tries in flight end by their deadline
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
            self._send.clear()  # before looking: a try that ends from now on wakes the wait below
            try:
                self.sender.dispatch()
                due = self.store.outbox.next_due()
            except Exception:
                log.exception("delivering webhooks failed")
                due = None
            now = time.time()
            # Due and not started: its receiver has a try in flight, whose end wakes us.
            wait = self._check if due is None or due <= now else min(self._check, due - now)
            self._send.wait(wait)
