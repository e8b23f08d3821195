"""The contract every backend of the service's tables passes (api/store/protocols.py), one body per
table run over each backend through the fixtures. SQLite in a temporary data folder backs every table;
PostgreSQL (a real server, tests/postgres.py; a fresh database a test) backs those ported so far, listed
in the ``keys``, ``feeds``, ``job_queue`` and ``standing`` fixtures."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from api.errors import FeedNotFoundError, KeyTakenError, QueueFullError, WatchLimitError, WatchNotFoundError
from api.store.feeds import FeedRegistry, PollReport
from api.store.jobs import JobTable
from api.store.keys import KeyRing
from api.store.postgres import PostgresFeeds, PostgresJobs, PostgresKeys, migrate, open_pool
from api.store.postgres_watches import PostgresAlerts, PostgresOutbox, PostgresWatches
from api.store.protocols import AlertStore, DeliveryStore, FeedStore, JobStore, KeyStore, WatchStore
from api.store.records import Alert, Found
from api.store.standing import WatchTables
from index import ArticleError, IngestReport
from index.errors import ConfigError
from index.feeds import FeedError
from tests.postgres import fresh_database, postgres_server
from tests.servers import free_port

Standing = tuple[KeyStore, WatchStore, AlertStore, DeliveryStore]
"""The keys and the three tables of standing questions, on one backend (a revoked key stops its watches)."""


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def _postgres_keys(server: str) -> tuple[KeyStore, Callable[[], None]]:
    pool = open_pool(fresh_database(server))
    return PostgresKeys(pool), pool.close


@pytest.fixture(params=["sqlite", "postgresql"])
def keys(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    if request.param == "sqlite":
        ring = KeyRing(tmp_path / "service.sqlite")
        yield ring
        ring.close()
        return
    store, close = _postgres_keys(request.getfixturevalue("postgres"))
    yield store
    store.close()
    close()


@pytest.fixture(params=["sqlite", "postgresql"])
def job_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[int], JobStore]]:
    """Opens the job table with a queue of the given length."""
    if request.param == "sqlite":
        yield lambda waiting: JobTable(tmp_path / "service.sqlite", max_waiting=waiting)
        return
    pool = open_pool(fresh_database(request.getfixturevalue("postgres")))
    yield lambda waiting: PostgresJobs(pool, max_waiting=waiting)
    pool.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def feeds(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeedStore]:
    if request.param == "sqlite":
        registry = FeedRegistry(tmp_path / "service.sqlite")
        yield registry
        registry.close()
        return
    pool = open_pool(fresh_database(request.getfixturevalue("postgres")))
    yield PostgresFeeds(pool)
    pool.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def standing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Standing]:
    if request.param == "sqlite":
        path = tmp_path / "service.sqlite"
        ring, tables = KeyRing(path), WatchTables.open(path)
        yield ring, tables.watches, tables.alerts, tables.outbox
        tables.close()
        ring.close()
        return
    pool = open_pool(fresh_database(request.getfixturevalue("postgres")))
    yield PostgresKeys(pool), PostgresWatches(pool), PostgresAlerts(pool), PostgresOutbox(pool)
    pool.close()


def _found(watch_id: str, story: str) -> Found:
    answer: dict[str, Any] = {"answer": f"about {story}", "citations": []}
    return Found(watch_id, story, f"{story}-article", answer, confidence=0.9)


def test_keys_revoked_at_once_and_names_stay_taken(keys: KeyStore) -> None:
    token = keys.add("desk", "ask", origins=["https://intranet.example"], per_minute=20)
    found = keys.lookup(token)
    assert found is not None
    assert (found.name, found.scope, found.per_minute) == ("desk", "ask", 20)
    assert keys.lookup(token + "x") is None
    keys.revoke("desk")
    assert keys.lookup(token) is None
    assert [k.name for k in keys.keys()] == ["desk"]  # noqa: SIM118 - a KeyStore
    assert keys.active() == []
    with pytest.raises(KeyTakenError):
        keys.add("desk", "admin")


def test_keys_keep_their_daily_usage(keys: KeyStore) -> None:
    keys.add("desk", "ask", per_day=100)
    day = date(2026, 12, 8)
    keys.save_usage(day, {"desk": 7})
    keys.save_usage(day, {"desk": 9})
    assert keys.usage(day) == {"desk": 9}


def test_feeds_found_by_id_or_address_and_ids_never_reused(feeds: FeedStore) -> None:
    first = feeds.add("https://news.example/rss", "News", "rss", 900)
    assert feeds.get(str(first.id)) == feeds.get("https://news.example/rss")
    with pytest.raises(FeedError):
        feeds.add("https://news.example/rss", "Again", "rss", 900)
    assert [f.id for f in feeds.due(now=first.next_poll + 1)] == [first.id]
    assert feeds.lease(first, 60)
    assert not feeds.lease(first, 60)  # one poll at a time
    feeds.remove(str(first.id))
    with pytest.raises(FeedNotFoundError):
        feeds.get(str(first.id))
    second = feeds.add("https://other.example/rss", "Other", "rss", 900)
    assert second.id != first.id
    assert [f.url for f in feeds.feeds()] == ["https://other.example/rss"]


def test_watches_belong_to_their_owner_and_their_feed_token(standing: Standing) -> None:
    watches = standing[1]
    before = watches.version()
    made = watches.add("Who won the harbour race?", "carol", limit=1)
    assert watches.version() != before
    with pytest.raises(WatchLimitError):
        watches.add("Another question?", "carol", limit=1)
    assert [w.id for w in watches.watches("carol")] == [made.watch.id]
    assert watches.watches("dave") == []
    with pytest.raises(WatchNotFoundError):
        watches.get(made.watch.id, "dave", everyone=False)
    assert watches.feed_watch(made.watch.id, made.feed_token).id == made.watch.id
    with pytest.raises(WatchNotFoundError):
        watches.feed_watch(made.watch.id, made.feed_token + "x")
    watches.revoke_feed(made.watch.id)
    with pytest.raises(WatchNotFoundError):
        watches.feed_watch(made.watch.id, made.feed_token)
    assert watches.count() == 1
    watches.remove(made.watch.id)
    assert watches.count() == 0


def test_alerts_stored_once_and_the_cursor_moved_by_one_checker(standing: Standing) -> None:
    _, watches, alerts, _ = standing
    watch = watches.add("Who won the harbour race?", None).watch
    assert alerts.cursor() is None
    stored = alerts.advance(None, 10, [_found(watch.id, "race"), _found(watch.id, "race")])
    assert stored is not None
    assert [a.seq for a in stored] == [1]
    assert alerts.advance(None, 20, [_found(watch.id, "ferry")]) is None  # another checker moved it
    assert alerts.cursor() == 10
    assert alerts.told([(watch.id, "race"), (watch.id, "ferry")]) == {(watch.id, "race")}
    again = alerts.advance(10, 20, [_found(watch.id, "race"), _found(watch.id, "ferry")])
    assert again is not None
    assert [a.story for a in again] == ["ferry"]
    assert [a.seq for a in alerts.alerts(watch.id)] == [2, 1]
    assert [a.seq for a in alerts.alerts(watch.id, after_seq=1, oldest_first=True)] == [2]


def test_the_outbox_leases_each_delivery_and_keeps_its_outcome(standing: Standing) -> None:
    _, watches, alerts, outbox = standing
    hooked = watches.add("Who won the harbour race?", None, webhook="http://127.0.0.1:9/hook").watch
    quiet = watches.add("When does the ferry run?", None).watch
    stored = alerts.advance(None, 5, [_found(hooked.id, "race"), _found(quiet.id, "ferry")])
    assert stored is not None
    assert len(stored) == 2
    now = outbox.next_due()
    assert now is not None
    pending = outbox.pending(now)
    assert [(alert_id, url) for alert_id, url, _ in pending] == [(stored[0].id, "http://127.0.0.1:9/hook")]
    delivery = outbox.claim(stored[0].id, now)
    assert delivery is not None
    assert outbox.claim(stored[0].id, now) is None  # leased
    outbox.failed(delivery, "refused", retry_at=None)
    assert outbox.deliveries(hooked.id) == {"delivered": 0, "pending": 0, "given_up": 1}
    assert watches.get(hooked.id).failing


def test_jobs_queue_in_order_and_refuse_past_the_limit(job_queue: Callable[[int], JobStore]) -> None:
    jobs = job_queue(2)
    first = jobs.submit([ArticleError("a.json", "no title")])
    second = jobs.submit([ArticleError("b.json", "no text"), ArticleError("c.json", "no text")])
    with pytest.raises(QueueFullError):
        jobs.submit([])
    assert jobs.waiting() == 2
    taken = jobs.take()
    assert taken is not None
    assert taken[0] == first.id
    assert [str(item) for item in taken[1]] == ["a.json: no title"]
    assert jobs.requeue() == 1  # a writer that died leaves it to the next
    taken = jobs.take()
    assert taken is not None
    jobs.progress(first.id, 1)
    jobs.finish(first.id, IngestReport(failed=("a.json: no title",)))
    done = jobs.get(first.id)
    assert done is not None
    assert (done.status, done.done, done.report) == ("done", 1, IngestReport(failed=("a.json: no title",)))
    jobs.finish(second.id, None, "the ingest failed")
    failed = jobs.get(second.id)
    assert failed is not None
    assert (failed.status, failed.error) == ("failed", "the ingest failed")
    assert jobs.get("no-such-job") is None
    jobs.close()


def test_a_database_that_cannot_be_reached_stops_start_up_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="RAG_STATE_URL"):
        open_pool(f"postgresql://rag@127.0.0.1:{free_port()}/nothing")
    with pytest.raises(ConfigError, match="RAG_STATE_URL"):
        open_pool("postgresql://rag@127.0.0.1:notaport/x")


def test_servers_starting_at_once_migrate_once(postgres: str) -> None:
    url = fresh_database(postgres)
    pools = [open_pool(url) for _ in range(2)]  # each migrates at its start: the second finds it done
    try:
        versions: list[int] = []
        threads = [threading.Thread(target=lambda p=p: versions.append(migrate(p))) for p in pools]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(versions) == 2
        assert len(set(versions)) == 1
        with pools[0].connection() as db:
            rows = db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, versions[0] + 1))
    finally:
        for pool in pools:
            pool.close()


def test_a_job_is_taken_by_one_writer_when_two_take_at_once(job_queue: Callable[[int], JobStore]) -> None:
    first, second = job_queue(8), job_queue(8)  # as two servers would open the queue
    made = first.submit([ArticleError("a.json", "no title")])
    start = threading.Barrier(2)
    taken: list[str | None] = []

    def take(queue: JobStore) -> None:
        start.wait(30)
        got = queue.take()
        taken.append(None if got is None else got[0])

    threads = [threading.Thread(target=take, args=(queue,)) for queue in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(taken, key=str) == sorted([made.id, None], key=str)
    first.close()
    second.close()


def test_a_poll_leaves_its_feed_due_again_and_its_entries_recorded(feeds: FeedStore) -> None:
    feed = feeds.add("https://news.example/rss", "News\nDesk", "rss", 900)
    assert feed.name == "News Desk"
    assert feeds.lease(feed, 60)
    feeds.record_entries(feed, [("https://news.example/a", "2026-12-08", '"e1"', None, "a-1")])
    feeds.record_entries(feed, [("https://news.example/a", "2026-12-09", '"e2"', None, "a-1")])
    assert feeds.entry(feed, "https://news.example/a") == ("2026-12-09", '"e2"', None, "a-1")
    assert feeds.entry(feed, "https://news.example/b") is None
    feeds.finish(PollReport(feed, added=["a-1"]), '"feed-etag"', None)
    polled = feeds.get(str(feed.id))
    assert (polled.etag, polled.last_status, polled.added, polled.failures) == ('"feed-etag"', "ok", 1, 0)
    assert polled.next_poll > feed.next_poll
    assert feeds.lease(polled, 60)  # the finished poll let go of its lease
    feeds.finish(PollReport(polled, status="failed", error="refused"), None, None)
    failed = feeds.get(str(feed.id))
    assert (failed.failures, failed.etag, failed.last_error) == (1, '"feed-etag"', "refused")
    feeds.ask(feed.id)
    assert [f.id for f in feeds.due(now=0.0)] == [feed.id]  # asked for: due at once


def test_a_revoked_key_stops_its_watches_unless_they_are_kept(standing: Standing) -> None:
    keys, watches, alerts, outbox = standing
    for name in ("carol", "dave"):
        keys.add(name, "watch")
    carols = watches.add("Who won the harbour race?", "carol", webhook="http://127.0.0.1:9/hook")
    daves = watches.add("When does the ferry run?", "dave")
    alerts.advance(None, 0, [])
    before = watches.version()
    keys.revoke("carol")
    keys.revoke("dave", keep_watches=True)
    assert watches.version() != before  # the matcher reads the watches again
    assert [q.id for q in watches.questions()] == [daves.watch.id]
    assert not watches.get(carols.watch.id).active
    with pytest.raises(WatchNotFoundError):
        watches.feed_watch(carols.watch.id, carols.feed_token)
    stored = alerts.advance(0, 5, [_found(carols.watch.id, "race"), _found(daves.watch.id, "ferry")])
    assert [a.watch_id for a in stored or []] == [daves.watch.id]
    assert outbox.next_due() is None


def test_two_checkers_at_once_store_each_alert_once(standing: Standing) -> None:
    _, watches, alerts, _ = standing
    watch = watches.add("Who won the harbour race?", None).watch
    alerts.advance(None, 0, [])
    start = threading.Barrier(2)
    results: list[list[Alert] | None] = []

    def check() -> None:
        start.wait(30)
        results.append(alerts.advance(0, 10, [_found(watch.id, "race")]))

    threads = [threading.Thread(target=check) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(len(r) if r is not None else -1 for r in results) == [-1, 1]
    assert [a.story for a in alerts.alerts(watch.id)] == ["race"]
