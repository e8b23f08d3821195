"""Feeds inside `rag serve`: one background worker that polls what is due (never inside a request); the
admin routes that manage feeds are api/web/feeds.py."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from api.metrics import FEED_ARTICLES, FEED_POLLS, FEEDS_PAUSED
from api.state.feeds import Feed, Poller

log = logging.getLogger("api.state.feeds")
DEFAULT_CHECK_SECONDS = 1.0
_ADMIN: dict[str, Any] = {"scope": "admin"}
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]


class FeedWorker:
    """Polls due feeds, and feeds asked for, one at a time in its own thread (``start``: only in the
    process that writes; any process may ``ask``)."""

    def __init__(
        self,
        poller: Poller,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
        after_poll: Callable[[], None] | None = None,
    ) -> None:
        """``after_poll``: told after each poll that added or replaced articles."""
        self.poller = poller
        self._after_poll = after_poll
        self._check = check_seconds
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
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
        self.poller.fetcher.close()
        self.poller.registry.close()

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._pass()
            except Exception:
                log.exception("a feed poll failed")
            self._wake.wait(self._check)
            self._wake.clear()

    def _pass(self) -> None:
        registry = self.poller.registry
        for feed in registry.due(time.time()):
            if self._stopping:
                return
            report = self.poller.poll(feed)
            FEED_POLLS.labels(report.status).inc()
            FEED_ARTICLES.inc(len(report.added) + len(report.replaced))
            if (report.added or report.replaced) and self._after_poll is not None:
                self._after_poll()
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
        FEEDS_PAUSED.set(sum(1 for f in registry.feeds() if f.paused))
