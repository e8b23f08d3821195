"""The service's tables in PostgreSQL (``RAG_STATE_URL=postgresql://...``), for several API machines on one
state: one connection pool a process (psycopg 3), the schema created and migrated at start, and the
backends of the store protocols (api/store/protocols.py), which pass the same contract suite as SQLite's
(tests/test_store_tables.py).

Migrations are numbered SQL run in order, each once, recorded in ``schema_version``; the whole run holds a
transaction-level advisory lock, so two servers starting at once migrate one after the other and the
second finds nothing left to do.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from api.errors import FeedNotFoundError, KeyTakenError, QueueFullError
from api.metrics import INGEST_JOBS
from api.store.feeds import COLUMNS as FEED_COLUMNS
from api.store.feeds import Feed, PollReport, due_now, finished, outlet_name
from api.store.jobs import (
    DEFAULT_MAX_WAITING,
    KEEP_FINISHED,
    Items,
    Job,
    items_of,
    job_of_row,
    new_job,
    now,
    report_blob,
)
from api.store.keys import ApiKey, checked_key, hash_token, key_of_row, new_token
from index import ArticleError, IngestReport
from index.errors import ConfigError, NotFoundError
from index.feeds import FeedError
from index.records import Article

CONNECT_SECONDS = 10.0
"""How long start-up waits for the database before it stops with an error."""
_MIGRATING = 4_200_042
"""The advisory lock id held while the schema is migrated."""
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE api_keys (
        name TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, scope TEXT NOT NULL, origins TEXT NOT NULL,
        per_minute INTEGER, per_day INTEGER, created_at TEXT NOT NULL, revoked_at TEXT,
        prefix TEXT NOT NULL, keeps_watches BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE TABLE api_key_usage (
        name TEXT NOT NULL, day TEXT NOT NULL, used INTEGER NOT NULL, PRIMARY KEY (name, day)
    );
    """,
    """
    CREATE TABLE ingest_jobs (
        seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, status TEXT NOT NULL, total INTEGER NOT NULL,
        done INTEGER NOT NULL DEFAULT 0, submitted_at TEXT NOT NULL, finished_at TEXT, report BYTEA,
        error TEXT, items BYTEA
    );
    CREATE INDEX ingest_jobs_waiting ON ingest_jobs (seq) WHERE status IN ('queued', 'running');
    """,
    """
    CREATE TABLE feeds (
        id BIGSERIAL PRIMARY KEY, url TEXT NOT NULL UNIQUE, name TEXT NOT NULL, kind TEXT NOT NULL,
        every_seconds INTEGER NOT NULL, etag TEXT, last_modified TEXT, last_poll TEXT, last_status TEXT,
        last_error TEXT, failures INTEGER NOT NULL DEFAULT 0, next_poll DOUBLE PRECISION NOT NULL DEFAULT 0,
        added INTEGER NOT NULL DEFAULT 0, lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        lease_holder TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE feed_entries (
        feed_id BIGINT NOT NULL REFERENCES feeds (id) ON DELETE CASCADE, url TEXT NOT NULL, updated TEXT,
        etag TEXT, last_modified TEXT, article_id TEXT NOT NULL, PRIMARY KEY (feed_id, url)
    );
    """,
    """
    CREATE TABLE watches (
        seq BIGSERIAL, id TEXT PRIMARY KEY, owner TEXT, question TEXT NOT NULL, sources TEXT NOT NULL,
        webhook TEXT, webhook_secret TEXT, min_confidence DOUBLE PRECISION NOT NULL, feed_token_hash TEXT,
        vector BYTEA, after_chunk BIGINT NOT NULL, created_at TEXT NOT NULL, failing TEXT,
        alerts INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE watch_alerts (
        id TEXT PRIMARY KEY, watch_id TEXT NOT NULL, seq INTEGER NOT NULL, story TEXT NOT NULL,
        article_id TEXT NOT NULL, created_at TEXT NOT NULL, body TEXT NOT NULL,
        UNIQUE (watch_id, story), UNIQUE (watch_id, seq)
    );
    CREATE TABLE watch_outbox (
        alert_id TEXT PRIMARY KEY, watch_id TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION NOT NULL, last_error TEXT, delivered_at TEXT,
        given_up BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX watch_outbox_due ON watch_outbox (next_at) WHERE delivered_at IS NULL;
    CREATE TABLE watch_state (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO watch_state VALUES ('version', 0);
    """,
)
"""The schema, one step a version; a new version is a new entry at the end (never an edit)."""
_QUEUEING = 4_200_043
"""The advisory lock id held while a job is queued (the count of waiting jobs and the insert as one)."""


def open_pool(url: str, size: int = 8) -> ConnectionPool:
    """A pool on the state database with its schema migrated; ConfigError (start-up stops) when the URL is
    not one or the database cannot be reached."""
    try:
        pool = ConnectionPool(
            url, min_size=1, max_size=size, timeout=CONNECT_SECONDS, kwargs={"autocommit": True}, open=False
        )
        pool.open(wait=True, timeout=CONNECT_SECONDS)
    except (psycopg.Error, PoolTimeout) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"the state database (RAG_STATE_URL) cannot be reached: {reason}") from None
    migrate(pool)
    return pool


def migrate(pool: ConnectionPool) -> int:
    """Run the migrations this database lacks; the version it is at afterwards."""
    with pool.connection() as db, db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATING,))
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
        row = db.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        current = int(row[0]) if row else 0
        for version in range(current + 1, len(MIGRATIONS) + 1):
            db.execute(MIGRATIONS[version - 1])
            db.execute("INSERT INTO schema_version VALUES (%s)", (version,))
    return len(MIGRATIONS)


_KEY_COLUMNS = "name, scope, origins, per_minute, per_day, created_at, revoked_at, prefix"


class PostgresKeys:
    """API keys in PostgreSQL; every lookup reads the table, so a revocation through any server is seen
    by all at once."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def add(
        self,
        name: str,
        scope: str,
        origins: Sequence[str] = (),
        per_minute: int | None = None,
        per_day: int | None = None,
    ) -> str:
        normalized = checked_key(name, scope, origins, per_minute, per_day)
        token = new_token()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._pool.connection() as db:
            made = db.execute(
                "INSERT INTO api_keys (name, hash, scope, origins, per_minute, per_day, created_at, prefix) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING name",
                (name, hash_token(token), scope, json.dumps(normalized), per_minute, per_day, now, token[:8]),
            ).fetchone()
        if made is None:
            raise KeyTakenError(f"a key named {name!r} exists; revoke it or choose another name")
        return token

    def revoke(self, name: str, keep_watches: bool = False) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._pool.connection() as db:
            changed = db.execute(
                "UPDATE api_keys SET revoked_at = %s, keeps_watches = %s "
                "WHERE name = %s AND revoked_at IS NULL",
                (now, keep_watches, name),
            ).rowcount
        if not changed:
            raise NotFoundError(f"no active key named {name!r}")

    def keys(self) -> list[ApiKey]:
        with self._pool.connection() as db:
            rows = db.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, name").fetchall()
        return [key_of_row(row) for row in rows]

    def lookup(self, token: str) -> ApiKey | None:
        with self._pool.connection() as db:
            row = db.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE hash = %s AND revoked_at IS NULL",
                (hash_token(token),),
            ).fetchone()
        return None if row is None else key_of_row(row)

    def active(self) -> list[ApiKey]:
        return [key for key in self.keys() if key.revoked_at is None]

    def usage(self, day: date) -> dict[str, int]:
        with self._pool.connection() as db:
            rows = db.execute("SELECT name, used FROM api_key_usage WHERE day = %s", (day.isoformat(),))
            return {str(name): int(used) for name, used in rows}

    def save_usage(self, day: date, used: dict[str, int]) -> None:
        if not used:
            return
        with self._pool.connection() as db, db.transaction():
            db.execute("DELETE FROM api_key_usage WHERE day < %s", (day.isoformat(),))
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO api_key_usage VALUES (%s, %s, %s) ON CONFLICT (name, day) "
                    "DO UPDATE SET used = greatest(api_key_usage.used, excluded.used)",
                    [(name, day.isoformat(), count) for name, count in used.items()],
                )

    def close(self) -> None:
        """The pool is the service's, closed with it."""


class PostgresJobs:
    """The queue of ingest jobs in PostgreSQL, shared by every API server; a job is taken by one writer
    at a time (``FOR UPDATE SKIP LOCKED``)."""

    def __init__(self, pool: ConnectionPool, max_waiting: int = DEFAULT_MAX_WAITING) -> None:
        self._pool = pool
        self._max_waiting = max_waiting

    def submit(self, items: Items) -> Job:
        job, blob = new_job(items)
        with self._pool.connection() as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_QUEUEING,))
            row = db.execute(
                "SELECT count(*) FROM ingest_jobs WHERE status IN ('queued', 'running')"
            ).fetchone()
            if row is not None and int(row[0]) >= self._max_waiting:
                raise QueueFullError(f"{self._max_waiting} ingest jobs are already waiting")
            db.execute(
                "INSERT INTO ingest_jobs (id, status, total, submitted_at, items) "
                "VALUES (%s, 'queued', %s, %s, %s)",
                (job.id, job.total, job.submitted_at, blob),
            )
            db.execute(
                "DELETE FROM ingest_jobs WHERE status IN ('done', 'failed') AND seq <= "
                "(SELECT seq FROM ingest_jobs WHERE status IN ('done', 'failed') "
                "ORDER BY seq DESC LIMIT 1 OFFSET %s)",
                (KEEP_FINISHED,),
            )
        INGEST_JOBS.labels("queued").inc()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._pool.connection() as db:
            row = db.execute(
                "SELECT id, total, status, done, submitted_at, finished_at, report, error "
                "FROM ingest_jobs WHERE id = %s",
                (job_id,),
            ).fetchone()
        return None if row is None else job_of_row(row)

    def waiting(self) -> int:
        with self._pool.connection() as db:
            row = db.execute(
                "SELECT count(*) FROM ingest_jobs WHERE status IN ('queued', 'running')"
            ).fetchone()
        return 0 if row is None else int(row[0])

    def requeue(self) -> int:
        with self._pool.connection() as db:
            return int(
                db.execute("UPDATE ingest_jobs SET status = 'queued' WHERE status = 'running'").rowcount
            )

    def take(self) -> tuple[str, list[Article | ArticleError]] | None:
        with self._pool.connection() as db, db.transaction():
            row = db.execute(
                "SELECT id, items FROM ingest_jobs WHERE status = 'queued' ORDER BY seq LIMIT 1 "
                "FOR UPDATE SKIP LOCKED"
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE ingest_jobs SET status = 'running', done = 0 WHERE id = %s", (row[0],))
        return str(row[0]), items_of(row[1])

    def progress(self, job_id: str, done: int) -> None:
        with self._pool.connection() as db:
            db.execute("UPDATE ingest_jobs SET done = %s WHERE id = %s", (done, job_id))

    def finish(self, job_id: str, report: IngestReport | None, error: str | None = None) -> None:
        status = "failed" if report is None else "done"
        with self._pool.connection() as db:
            db.execute(
                "UPDATE ingest_jobs SET status = %s, done = CASE WHEN %s = 'done' THEN total ELSE done END, "
                "finished_at = %s, report = %s, error = %s, items = NULL WHERE id = %s",
                (status, status, now(), report_blob(report), error, job_id),
            )
        INGEST_JOBS.labels(status).inc()

    def close(self) -> None:
        """The pool is the service's, closed with it."""


HOLDER = f"{socket.gethostname()}:{os.getpid()}"
"""This process, as a feed's lease names it."""


class PostgresFeeds:
    """The feeds followed and what each poll learned, in PostgreSQL. A feed's lease names its holder
    (host and process, for the operator) and lapses after its seconds: a poller on another machine cannot
    tell whether the holder lives, so a poll cut short by a dead holder is taken over when its lease runs
    out (SQLite's, on one machine, sees the dead process at once)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def add(self, url: str, name: str, kind: str, every_seconds: int) -> Feed:
        with self._pool.connection() as db:
            made = db.execute(
                "INSERT INTO feeds (url, name, kind, every_seconds) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (url) DO NOTHING RETURNING id",
                (url, outlet_name(url, name), kind, every_seconds),
            ).fetchone()
        if made is None:
            raise FeedError(f"{url} is followed already")
        return self.get(str(made[0]))

    def feeds(self) -> list[Feed]:
        with self._pool.connection() as db:
            rows = db.execute(f"SELECT {FEED_COLUMNS} FROM feeds ORDER BY id").fetchall()
        return [Feed(*row) for row in rows]

    def get(self, ref: str) -> Feed:
        with self._pool.connection() as db:
            row = db.execute(
                f"SELECT {FEED_COLUMNS} FROM feeds WHERE id = %s OR url = %s",
                (int(ref) if ref.isdigit() and len(ref) <= 18 else -1, ref),
            ).fetchone()
        if row is None:
            raise FeedNotFoundError(f"no feed {ref!r}; `rag feeds list` shows them")
        return Feed(*row)

    def remove(self, ref: str) -> Feed:
        feed = self.get(ref)
        with self._pool.connection() as db:
            db.execute("DELETE FROM feeds WHERE id = %s", (feed.id,))
        return feed

    def due(self, now: float) -> list[Feed]:
        return due_now(self.feeds(), now)

    def ask(self, feed_id: int) -> None:
        with self._pool.connection() as db:
            db.execute("UPDATE feeds SET next_poll = -1 WHERE id = %s", (feed_id,))

    def lease(self, feed: Feed, seconds: float) -> bool:
        now = time.time()
        with self._pool.connection() as db:
            taken = db.execute(
                "UPDATE feeds SET lease_until = %s, lease_holder = %s "
                "WHERE id = %s AND lease_until <= %s RETURNING id",
                (now + seconds, HOLDER, feed.id, now),
            ).fetchone()
        return taken is not None

    def entry(self, feed: Feed, url: str) -> tuple[str | None, str | None, str | None, str] | None:
        with self._pool.connection() as db:
            row = db.execute(
                "SELECT updated, etag, last_modified, article_id FROM feed_entries "
                "WHERE feed_id = %s AND url = %s",
                (feed.id, url),
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2], str(row[3]))

    def record_entries(
        self, feed: Feed, entries: list[tuple[str, str | None, str | None, str | None, str]]
    ) -> None:
        with self._pool.connection() as db, db.transaction(), db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO feed_entries (feed_id, url, updated, etag, last_modified, article_id) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (feed_id, url) DO UPDATE SET "
                "updated = excluded.updated, etag = excluded.etag, last_modified = excluded.last_modified, "
                "article_id = excluded.article_id",
                [(feed.id, *entry) for entry in entries],
            )

    def finish(self, report: PollReport, etag: str | None, last_modified: str | None) -> None:
        with self._pool.connection() as db:
            db.execute(
                "UPDATE feeds SET etag = %s, last_modified = %s, last_poll = %s, last_status = %s, "
                "last_error = %s, failures = %s, next_poll = %s, added = added + %s, lease_until = 0 "
                "WHERE id = %s",
                finished(report, etag, last_modified),
            )

    def close(self) -> None:
        """The pool is the service's, closed with it."""
