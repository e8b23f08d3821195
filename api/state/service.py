"""The running service's parts, loaded in the background at start-up so that /health can say "not
ready" meanwhile: the Answerer, the Ingestor, background jobs, the feed worker, the watches and their
alert worker, and the guard's Doorkeeper."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from litestar import Request

from api.config import Settings
from api.root import build_ingestor, open_keys
from api.store.counts import Counts
from api.store.feeds import FeedRegistry
from api.store.jobs import JobTable
from api.store.limits import Buckets, DailyCaps, Doorkeeper
from api.store.standing import WatchTables
from api.work.alerts import AlertWorker
from api.work.feeds import FeedWorker
from api.work.jobs import JobRunner
from api.work.matching import Render, WatchMatcher
from api.work.poll import Poller
from api.work.poll import fetcher as feed_fetcher
from api.work.webhooks import webhook_poster
from api.work.writer import WriterLock
from index import Ingestor
from index.errors import ConfigError, IndexNotReadyError, RagError
from index.fetch import parse_networks
from rag import Answerer

log = logging.getLogger("api")
DEFAULT_HEARTBEAT_SECONDS = 10.0


def service_of(request: Request[Any, Any, Any]) -> Service:
    """The Service of the app that ``request`` reached."""
    service: Service = request.app.state.service
    return service


@dataclass
class Service:
    """What the handlers need; filled in by a background load so /health can say 'not ready' meanwhile."""

    settings: Settings
    open_without_keys: bool = True
    answerer: Answerer | None = None
    ingestor: Ingestor | None = None
    jobs: JobRunner | None = None
    feeds: FeedWorker | None = None
    door: Doorkeeper | None = None
    watches: WatchTables | None = None
    alerts: AlertWorker | None = None
    render: Render | None = None
    """How an answer is written in an alert: as ``/ask`` gives it (the app passes its own)."""
    error: str | None = None
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    """How long a stream may stay silent before a ``: keepalive`` comment is sent."""
    ready: threading.Event = field(default_factory=threading.Event)
    writer: WriterLock | None = None
    worker: int | None = None
    """This process's slot among `rag serve --workers N` (None: serving alone)."""
    draining: threading.Event = field(default_factory=threading.Event)
    """Set when a worker stops: answers close their connections, event streams end."""

    def load(self, opener: Callable[[Settings], Answerer], on_error: Callable[[str], None] | None) -> None:
        try:
            answerer = opener(self.settings)
            answerer.index.follow()
            ingestor = build_ingestor(self.settings, answerer)
            keys = open_keys(self.settings)
            service = self.settings.service
            try:
                proxies = parse_networks(",".join(service.trusted_proxies))
            except RagError as exc:
                raise ConfigError(f"a trusted proxy is not an address or network: {exc}") from None
            # A job commits about one request budget of text at a time, so its progress moves as it goes.
            budget = service.ingest_sync_chars
            self.jobs = JobRunner(
                JobTable(service.state_path),
                lambda items, done: ingestor.ingest(items, progress=False, on_batch=done, batch_chars=budget),
            )
            self.feeds = FeedWorker(
                Poller(FeedRegistry(service.state_path), feed_fetcher(self.settings), ingestor),
                service.feeds_check_seconds,
            )
            self.watches = WatchTables.open(service.state_path)
            if self.render is not None:
                matcher = WatchMatcher(
                    WatchTables.open(service.state_path), answerer, self.render, service.watch_near
                )
                self.alerts = AlertWorker(
                    matcher,
                    webhook_poster(self.settings),
                    service.watch_check_seconds,
                    service.webhook_retry_seconds,
                    service.webhook_tries,
                )
            self.ingestor = ingestor
            self.answerer = answerer
            counts = Counts(service.limits_path)
            self.door = Doorkeeper(
                keys,
                DailyCaps(keys, counts),
                self.open_without_keys,
                service.rate_per_address,
                proxies,
                frozenset(h.lower() for h in service.allowed_hosts),
                Buckets(counts),
            )
            self.writer = WriterLock(service.state_path.parent, self._write)
            self.writer.start()
            self.ready.set()
        except RagError as exc:
            self.error = str(exc)
            log.error("the index could not be loaded: %s", exc)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("the index could not be loaded")
        if self.error is not None and on_error is not None:
            on_error(self.error)

    def _write(self) -> None:
        """This process holds the writer lock: run the background writes here."""
        for part in (self.jobs, self.feeds, self.alerts):
            if part is not None:
                part.start()

    @property
    def writing(self) -> bool:
        """Whether this process runs the background writes (and so rings its own alerts' bell)."""
        return self.writer is not None and self.writer.held

    def require(self) -> tuple[Answerer, Ingestor]:
        """The Answerer and Ingestor once every part a request needs is loaded (the guard's keys and
        limits, the jobs, the watches: ``ready``); IndexNotReadyError before, or when loading failed."""
        if not self.ready.is_set() or self.answerer is None or self.ingestor is None:
            if self.error:
                raise IndexNotReadyError("the index could not be loaded; the server log says why")
            raise IndexNotReadyError("the index is still loading; retry in a few seconds")
        return self.answerer, self.ingestor

    def close(self) -> None:
        # The background writes stop first; only then may another process take them over.
        if self.writer is not None:
            self.writer.stop_waiting()
        if self.alerts is not None:
            self.alerts.close()
        if self.watches is not None:
            self.watches.close()
        if self.feeds is not None:
            self.feeds.close()
        if self.jobs is not None:
            self.jobs.close()
        if self.writer is not None:
            self.writer.close()
        if self.door is not None:
            self.door.close()
