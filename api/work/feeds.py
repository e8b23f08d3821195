"""Feeds inside `rag serve`: one background worker that polls what is due (never inside a request), a few
feeds at a time and one at a time per host, so a site that answers slowly delays only its own feeds; the
admin routes that manage feeds are api/web/feeds.py."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from api.config import DEFAULT_FEEDS_CHECK_SECONDS
from api.metrics import FEED_ARTICLES, FEED_POLLS, FEEDS_PAUSED
from api.store.feeds import Feed
from api.work.poll import Poller
from index.fetch import host_key

log = logging.getLogger("api.work.poll")
DEFAULT_POLLS = 4
"""Feeds polled at once (threads: a poll mostly waits on the network)."""


class FeedWorker:
    """Polls due feeds, and feeds asked for, up to ``polls`` at once and one at a time per host (its
    fetcher also waits between two requests to a host), from a thread of its own (``start``: only in
    the process that writes; any process may ``ask``)."""

    def __init__(
        self,
        poller: Poller,
        check_seconds: float = DEFAULT_FEEDS_CHECK_SECONDS,
        polls: int = DEFAULT_POLLS,
    ) -> None:
        """``after_poll``: told after each poll that added or replaced articles."""
        self.poller = poller
        self._check = check_seconds
        self._polls = max(polls, 1)
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._hosts: set[str] = set()
        """Hosts with a poll in flight."""

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self._polls, thread_name_prefix="feed-poll")
        self._thread = threading.Thread(target=self._run, name="feeds", daemon=True)
        self._thread.start()

    def ask(self, feed: Feed) -> None:
        """Poll ``feed`` soon, due or not (the writing process sees it at its next check)."""
        self.poller.registry.ask(feed.id)
        self._wake.set()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # each fetch ends by its deadline
        self.poller.fetcher.close()
        self.poller.registry.close()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                self._pass()
            except Exception:
                log.exception("a feed poll failed")
            self._wake.wait(self._check)

    def _pass(self) -> None:
        registry = self.poller.registry
        for feed in registry.due(time.time()):
            if self._stopping or self._pool is None:
                return
            host = host_key(feed.url)
            with self._lock:
                if host in self._hosts or len(self._hosts) >= self._polls:
                    continue
                self._hosts.add(host)
            self._pool.submit(self._poll, feed, host)
        FEEDS_PAUSED.set(sum(1 for f in registry.feeds() if f.paused))

    def _poll(self, feed: Feed, host: str) -> None:
        try:
            report = self.poller.poll(feed)
            FEED_POLLS.labels(report.status).inc()
            FEED_ARTICLES.inc(len(report.added) + len(report.replaced))
            log.info(
                "feed %s: %s, %d added, %d replaced, %d unchanged, %d skipped%s",
                feed.id,
                report.status,
                len(report.added),
                len(report.replaced),
                report.unchanged,
                len(report.skipped),
                f" ({report.error})" if report.error else "",
            )
        except Exception:
            log.exception("polling feed %s failed", feed.id)
        finally:
            with self._lock:
                self._hosts.discard(host)
            self._wake.set()  # the host's next feed, or one that waited for a free poll
