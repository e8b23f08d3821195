"""The composition root: the service's parts built from typed settings, once, in one place.

``build_service`` makes a frozen ``Service`` with every part a request needs (nothing optional, nothing
checked per request); ``Startup`` builds it in the background at start-up so that ``/health`` can say
"not ready" meanwhile, and holds what belongs to the process (its worker slot, its draining flag). The
index backend is chosen by ``index.open_index`` (this machine, or a Ray cluster when
``settings.index.cluster`` is set). Nothing here imports the web side: it receives how an answer is
rendered in an alert (``Render``) from it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from api.config import Settings
from api.store.counts import Counts
from api.store.feeds import FeedRegistry
from api.store.jobs import JobTable
from api.store.keys import KeyRing
from api.store.layout import migrate
from api.store.limits import Buckets, DailyCaps, Doorkeeper
from api.store.standing import WatchTables
from api.work.alerts import AlertWorker
from api.work.feeds import FeedWorker
from api.work.jobs import JobRunner
from api.work.matching import Render, WatchMatcher
from api.work.outbound import feed_fetcher, webhook_poster
from api.work.poll import Poller
from api.work.writer import WriterLock
from index import Embedder, Ingestor, make_ingestor, open_index, packaged_embedder
from index.embed import BatchingEmbedder
from index.errors import ConfigError, IndexNotReadyError, RagError
from index.fetch import parse_networks
from index.tokens import encoding
from rag import Answerer
from rag.answer import make_composer, make_condenser

log = logging.getLogger("api")
DEFAULT_HEARTBEAT_SECONDS = 10.0


def prepare_data_folder(settings: Settings) -> None:
    """Move a data folder of the first layout (index files and keys together) to the current one."""
    if settings.index.cluster is None:
        migrate(settings.service.data_dir, settings.service.state_path)


def open_keys(settings: Settings) -> KeyRing:
    """The service's API keys (``service.sqlite``)."""
    prepare_data_folder(settings)
    return KeyRing(settings.service.state_path)


def build_answerer(
    settings: Settings, embedder: Embedder | None = None, batching: bool = False, threads: int = 1
) -> Answerer:
    """An Answerer over the index the settings name; its answers are generated (and checked) when a
    language model is configured (which then also rewrites follow-ups), quoted otherwise.
    ``batching``: concurrent questions share model calls (the server); ``threads``: the model's
    threads (`rag serve --threads`)."""
    prepare_data_folder(settings)
    model: Embedder = embedder or packaged_embedder(settings.index, threads)
    if batching:
        model = BatchingEmbedder(model)
    store = open_index(settings.index, model)
    tokens = encoding(settings.index.tiktoken_cache_dir)
    composer = make_composer(settings.answers, model, tokens)
    condenser = make_condenser(settings.answers)
    return Answerer(store, model, settings.answers, composer=composer, condenser=condenser)


def build_ingestor(settings: Settings, answerer: Answerer) -> Ingestor:
    """The ingest path over the Answerer's own index and model."""
    return make_ingestor(settings.index, answerer.index, answerer.embedder)


@dataclass(frozen=True)
class Service:
    """Every part a request needs, built once by ``build_service``."""

    settings: Settings
    answerer: Answerer
    ingestor: Ingestor
    jobs: JobRunner
    feeds: FeedWorker
    watches: WatchTables
    alerts: AlertWorker
    door: Doorkeeper
    """What the guard consults: the keys, the limits, the open hosts."""
    writer: WriterLock
    """Held by one process of the data folder at a time, which then runs the background work."""

    @property
    def writing(self) -> bool:
        """Whether this process runs the background work (and so rings its own alerts' bell)."""
        return self.writer.held

    def close(self) -> None:
        # The background work stops first; only then may another process take it over.
        self.writer.stop_waiting()
        self.alerts.close()
        self.watches.close()
        self.feeds.close()
        self.jobs.close()
        self.writer.close()
        self.door.close()


def build_service(settings: Settings, answerer: Answerer, render: Render, open_without_keys: bool) -> Service:
    """The service over ``answerer``, its background work started in whichever process of the data
    folder takes the writer lock. ``render``: an answer as ``/ask`` gives it (the web side's);
    ``open_without_keys``: answer without a key while none is configured (loopback or --insecure)."""
    answerer.index.follow()
    ingestor = build_ingestor(settings, answerer)
    keys = open_keys(settings)
    service = settings.service
    try:
        proxies = parse_networks(",".join(service.trusted_proxies))
    except RagError as exc:
        raise ConfigError(f"a trusted proxy is not an address or network: {exc}") from None
    # A job commits about one request budget of text at a time, so its progress moves as it goes.
    jobs = JobRunner(
        JobTable(service.state_path),
        lambda items, done: ingestor.ingest(
            items, progress=False, on_batch=done, batch_chars=service.ingest_sync_chars
        ),
    )
    feeds = FeedWorker(
        Poller(FeedRegistry(service.state_path), feed_fetcher(settings), ingestor),
        service.feeds_check_seconds,
    )
    matcher = WatchMatcher(WatchTables.open(service.state_path), answerer, render, service.watch_near)
    alerts = AlertWorker(
        matcher,
        webhook_poster(settings),
        service.watch_check_seconds,
        service.webhook_retry_seconds,
        service.webhook_tries,
    )
    counts = Counts(service.limits_path)
    door = Doorkeeper(
        keys,
        DailyCaps(keys, counts),
        open_without_keys,
        service.rate_per_address,
        proxies,
        frozenset(h.lower() for h in service.allowed_hosts),
        Buckets(counts),
    )

    def write() -> None:
        """This process holds the writer lock: run the background work here."""
        jobs.start()
        feeds.start()
        alerts.start()

    writer = WriterLock(service.state_path.parent, write)
    built = Service(
        settings, answerer, ingestor, jobs, feeds, WatchTables.open(service.state_path), alerts, door, writer
    )
    writer.start()
    return built


@dataclass
class Startup:
    """This process's service: built in the background (``load``) while ``/health`` says "not ready",
    and what belongs to the process itself."""

    settings: Settings
    open_without_keys: bool = True
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    """How long a stream may stay silent before a ``: keepalive`` comment is sent."""
    worker: int | None = None
    """This process's slot among `rag serve --workers N` (None: serving alone)."""
    draining: threading.Event = field(default_factory=threading.Event)
    """Set when a worker stops: answers close their connections, event streams end."""
    service: Service | None = None
    error: str | None = None

    def load(
        self, opener: Callable[[Settings], Answerer], render: Render, on_error: Callable[[str], None] | None
    ) -> None:
        try:
            self.service = build_service(self.settings, opener(self.settings), render, self.open_without_keys)
        except RagError as exc:
            self.error = str(exc)
            log.error("the index could not be loaded: %s", exc)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("the index could not be loaded")
        if self.error is not None and on_error is not None:
            on_error(self.error)

    def require(self) -> Service:
        """The service once built; IndexNotReadyError before, or when building it failed."""
        if self.service is None:
            if self.error:
                raise IndexNotReadyError("the index could not be loaded; the server log says why")
            raise IndexNotReadyError("the index is still loading; retry in a few seconds")
        return self.service

    def door(self) -> Doorkeeper | None:
        """What the guard consults, once built (the guard refuses with 503 before)."""
        return None if self.service is None else self.service.door

    def close(self) -> None:
        if self.service is not None:
            self.service.close()
