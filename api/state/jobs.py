"""Background ingest: articles too many or too long to embed within one request become a job; clients poll
``GET /jobs/{id}``. Jobs live in service.sqlite, so any worker of `rag serve --workers N` takes one and any
answers for it, while the one process that writes (api/state/writer.py) runs them, in order, one at a time.
A job's articles are kept with it until it finishes: a writer that dies mid-job leaves it to the next
writer, which runs it again from the start (ingest is idempotent: what was committed is found unchanged)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from api.errors import QueueFullError
from api.metrics import INGEST_JOBS
from api.state.sqlite import immediate
from index import ArticleError, IngestReport
from index.records import Article

log = logging.getLogger("api.state.jobs")
DEFAULT_MAX_WAITING = 8
DEFAULT_CHECK_SECONDS = 1.0
_KEEP_FINISHED = 200
_SCHEMA = """
CREATE TABLE IF NOT EXISTS ingest_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    total INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    submitted_at TEXT NOT NULL,
    finished_at TEXT,
    report BLOB,
    error TEXT,
    items BLOB
);
"""

Items = Sequence[Article | ArticleError]
Ingest = Callable[[Items, Callable[[int], None]], IngestReport]


@dataclass(frozen=True)
class Job:
    """One background ingest, as last recorded."""

    id: str
    total: int
    status: str = "queued"
    """queued, running, done or failed."""
    done: int = 0
    submitted_at: str = ""
    finished_at: str | None = None
    report: IngestReport | None = None
    error: str | None = None


class _Stored(msgspec.Struct, array_like=True):
    """A job's articles as kept beside it; the ones that could not be read keep their reason."""

    articles: list[Article]
    failed: list[tuple[str, str]]


class IngestJobs:
    """The jobs table; ``start`` (in the writing process only) runs the queue in a thread of its own."""

    def __init__(
        self,
        path: Path,
        ingest: Ingest,
        max_waiting: int = DEFAULT_MAX_WAITING,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
    ) -> None:
        """``check_seconds``: how often the runner looks for jobs other processes took."""
        self._ingest = ingest
        self._max_waiting = max_waiting
        self._check = check_seconds
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 60000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._runner: threading.Thread | None = None

    def submit(self, items: Items) -> Job:
        job = Job(id=uuid.uuid4().hex, total=len(items), submitted_at=_now())
        stored = _Stored(
            [i for i in items if isinstance(i, Article)],
            [(i.origin, i.reason) for i in items if isinstance(i, ArticleError)],
        )
        with self._writing() as db:
            (waiting,) = db.execute(
                "SELECT count(*) FROM ingest_jobs WHERE status IN ('queued', 'running')"
            ).fetchone()
            if waiting >= self._max_waiting:
                raise QueueFullError(f"{self._max_waiting} ingest jobs are already waiting")
            db.execute(
                "INSERT INTO ingest_jobs (id, status, total, submitted_at, items) "
                "VALUES (?, 'queued', ?, ?, ?)",
                (job.id, job.total, job.submitted_at, msgspec.msgpack.encode(stored)),
            )
            db.execute(
                "DELETE FROM ingest_jobs WHERE status IN ('done', 'failed') AND seq <= "
                "(SELECT seq FROM ingest_jobs WHERE status IN ('done', 'failed') "
                "ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (_KEEP_FINISHED,),
            )
        INGEST_JOBS.labels("queued").inc()
        self._wake.set()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, total, status, done, submitted_at, finished_at, report, error "
                "FROM ingest_jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
        if row is None:
            return None
        report = None if row[6] is None else msgspec.msgpack.decode(row[6], type=IngestReport)
        return Job(row[0], row[1], row[2], row[3], row[4], row[5], report, row[7])

    def waiting(self) -> int:
        """Jobs queued or running."""
        with self._lock:
            (count,) = self._db.execute(
                "SELECT count(*) FROM ingest_jobs WHERE status IN ('queued', 'running')"
            ).fetchone()
        return int(count)

    def start(self) -> None:
        """Run the queue here (this process writes): a job left running by a writer that died first."""
        with self._writing() as db:
            resumed = db.execute("UPDATE ingest_jobs SET status = 'queued' WHERE status = 'running'").rowcount
        if resumed:
            log.info("%d ingest job(s) left running by an earlier writer queued again", resumed)
        self._runner = threading.Thread(target=self._run, name="ingest-jobs", daemon=True)
        self._runner.start()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._runner is not None:
            self._runner.join(timeout=60)
        with self._lock:
            self._db.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                while not self._stopping.is_set() and self._run_next():
                    pass
            except Exception:
                log.exception("reading the ingest queue failed; retrying")
            self._wake.wait(self._check)
            self._wake.clear()

    def _run_next(self) -> bool:
        """Run the oldest queued job; False when none waits."""
        with self._writing() as db:
            row = db.execute(
                "SELECT id, items FROM ingest_jobs WHERE status = 'queued' ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return False
            db.execute("UPDATE ingest_jobs SET status = 'running', done = 0 WHERE id = ?", (row[0],))
        job_id = str(row[0])
        stored = msgspec.msgpack.decode(row[1], type=_Stored)
        items: list[Article | ArticleError] = [*stored.articles]
        items += [ArticleError(origin, reason) for origin, reason in stored.failed]

        def progress(done: int) -> None:
            with self._writing() as db:
                db.execute("UPDATE ingest_jobs SET done = ? WHERE id = ?", (done, job_id))

        try:
            report: IngestReport | None = self._ingest(items, progress)
            status, error = "done", None
        except Exception:
            log.exception("ingest job %s failed", job_id)
            report, status = None, "failed"
            error = "the ingest failed; the articles committed before the failure are kept"
        with self._writing() as db:
            db.execute(
                "UPDATE ingest_jobs SET status = ?, done = CASE WHEN ? = 'done' THEN total ELSE done END, "
                "finished_at = ?, report = ?, error = ?, items = NULL WHERE id = ?",
                (
                    status,
                    status,
                    _now(),
                    None if report is None else msgspec.msgpack.encode(report),
                    error,
                    job_id,
                ),
            )
        INGEST_JOBS.labels(status).inc()
        return True

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self._db):
            yield self._db


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
