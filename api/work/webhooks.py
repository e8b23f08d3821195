"""Webhook delivery: every alert of a watch with a webhook waits in the outbox (api/store/watches.py) until
a try succeeds, and tries run side by side so that no receiver holds up another's.

Webhooks follow the Standard Webhooks specification, signed by its library (``standardwebhooks``):
``webhook-id`` (the alert's id: receivers dedupe by it, since an alert is delivered at least once),
``webhook-timestamp`` and ``webhook-signature`` (HMAC-SHA256 over ``id.timestamp.body`` with the watch's
secret). A try goes through the service's outbound door (api/work/outbound.py), so a webhook reaches
only the addresses feeds may be fetched from, checked again on the connected socket, and is cut at
``WEBHOOK_LIMITS``' deadline (a receiver that trickles its answer a byte at a time holds a try for
15 s, not a minute).

Fairness: each receiver (host and port, ``host_key``) is a lane with at most one try in flight, and tries
run on a bounded pool of threads, so a receiver that hangs delays only its own deliveries. Lanes whose
last try failed may hold at most half of the pool between them, and so may the watches of one key (a key
may keep 100 watches, each on a receiver of its own), so neither many failing receivers nor one key's can
leave the others waiting; lanes that work are started first. A try that fails is tried again after
``retry_seconds * 2**tries`` (scheduled in the outbox, not queued behind others); after ``tries`` tries
the watch is marked failing with the reason.

Written by hand, not a task queue: the outbox is the queue (a row per delivery, claimed with a lease so two
processes never send one twice), and what is added here is only the choice of which due rows start now.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from api.config import DEFAULT_WEBHOOK_RETRY_SECONDS, DEFAULT_WEBHOOK_TRIES
from api.metrics import WEBHOOK_DELIVERIES
from api.store.records import Delivery
from api.store.standing import WatchTables
from index.fetch import Fetcher, FetchError, host_key

log = logging.getLogger("api.work.webhooks")
DEFAULT_SENDERS = 32
"""Tries in flight at once (threads: a try mostly waits on the network)."""


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


class WebhookSender:
    """Starts the due deliveries whose receiver has no try in flight, on a pool of ``senders`` threads;
    ``on_done`` is told after each try (the caller dispatches again then). Thread-safe."""

    def __init__(
        self,
        store: WatchTables,
        poster: Fetcher,
        retry_seconds: float = DEFAULT_WEBHOOK_RETRY_SECONDS,
        tries: int = DEFAULT_WEBHOOK_TRIES,
        senders: int = DEFAULT_SENDERS,
        on_done: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.poster = poster
        self._retry = retry_seconds
        self._tries = tries
        self._senders = max(senders, 1)
        self._pool = ThreadPoolExecutor(max_workers=self._senders, thread_name_prefix="webhook")
        self._on_done = on_done
        self._lock = threading.Condition()
        self._busy: dict[str, tuple[bool, str | None]] = {}
        """Lanes with a try in flight, each with whether it is failing and the watch's owner."""
        self._failing: set[str] = set()
        """Lanes whose last try failed."""
        self.delivered = 0

    def dispatch(self, now: float | None = None, skip: set[str] | None = None) -> list[str]:
        """Start tries for deliveries due by ``now`` (default: now), at most one per receiver and none
        in ``skip``; the alert ids started."""
        now = time.time() if now is None else now
        share = max(self._senders // 2, 1)
        started: list[str] = []
        due = [(alert_id, host_key(url), owner) for alert_id, url, owner in self.store.outbox.pending(now)]
        with self._lock:
            due.sort(key=lambda row: row[1] in self._failing)  # stable: soonest first within each
        for alert_id, receiver, owner in due:
            if skip is not None and alert_id in skip:
                continue
            with self._lock:
                failing = receiver in self._failing
                if receiver in self._busy or len(self._busy) >= self._senders:
                    continue
                if failing and sum(f for f, _ in self._busy.values()) >= share:
                    continue
                if sum(o == owner for _, o in self._busy.values()) >= share:
                    continue
                delivery = self.store.outbox.claim(alert_id, now)
                if delivery is None:  # taken by another process, delivered or removed meanwhile
                    continue
                self._busy[receiver] = (failing, owner)
            started.append(alert_id)
            self._pool.submit(self._try, delivery, receiver)
        return started

    def running(self) -> int:
        with self._lock:
            return len(self._busy)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until some try in flight ends (True), or none is in flight (False at once)."""
        with self._lock:
            before = len(self._busy)
            if not before:
                return False
            return self._lock.wait_for(lambda: len(self._busy) < before, timeout)

    def close(self) -> None:
        """Wait for the tries in flight (each ends by its deadline) and stop the pool."""
        self._pool.shutdown(wait=True)

    def _try(self, delivery: Delivery, receiver: str) -> None:
        ok = False
        try:
            ok = self._send(delivery)
        except Exception:  # a bug must not keep the lane busy for good
            log.exception("delivering the webhook of alert %s failed", delivery.alert_id)
        finally:
            with self._lock:
                if ok:
                    self._failing.discard(receiver)
                else:
                    self._failing.add(receiver)
                self._busy.pop(receiver, None)
                self._lock.notify_all()
            if self._on_done is not None:
                self._on_done.set()

    def _send(self, delivery: Delivery) -> bool:
        try:
            status = self.poster.post(delivery.url, delivery.body.encode(), signed_headers(delivery))
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except FetchError as exc:
            error = str(exc)
        if error is None:
            self.store.outbox.delivered(delivery.alert_id, delivery.watch_id)
            WEBHOOK_DELIVERIES.labels("delivered").inc()
            with self._lock:
                self.delivered += 1
            return True
        attempt = delivery.attempts + 1
        retry_at = None if attempt >= self._tries else time.time() + self._retry * 2 ** (attempt - 1)
        self.store.outbox.failed(delivery, error, retry_at)
        WEBHOOK_DELIVERIES.labels("failed" if retry_at is not None else "given_up").inc()
        log.warning(
            "webhook of watch %s, alert %s: %s (%s)",
            delivery.watch_id,
            delivery.alert_id,
            error,
            "given up" if retry_at is None else f"try {attempt + 1} in {retry_at - time.time():.1f} s",
        )
        return False


def deliver_due(store: WatchTables, poster: Fetcher, retry_seconds: float, tries: int, now: float) -> int:
    """Try every delivery due by ``now`` once (`rag watch check`), side by side as the server does, and
    wait for the tries; how many succeeded."""
    sender = WebhookSender(store, poster, retry_seconds, tries)
    tried: set[str] = set()
    try:
        while True:
            tried.update(sender.dispatch(now, skip=tried))
            if not sender.wait():
                break
    finally:
        sender.close()
    return sender.delivered
