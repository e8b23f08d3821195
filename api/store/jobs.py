"""The ingest jobs table of service.sqlite: articles too many or too long to embed within one request
become a job that clients poll at ``GET /jobs/{id}``. Any worker of `rag serve --workers N` takes one and
any answers for it; the writing process runs them (api/work/jobs.py). A job's articles are kept with it
until it finishes, so a writer that dies mid-job leaves it to the next writer."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from api.errors import QueueFullError
from api.metrics import INGEST_JOBS
from api.store.sqlite import Table
from index import ArticleError, IngestReport
from index.records import Article

DEFAULT_MAX_WAITING = 8
KEEP_FINISHED = 200
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


def new_job(items: Items) -> tuple[Job, bytes]:
    """A job for ``items`` and its articles as every backend keeps them."""
    job = Job(id=uuid.uuid4().hex, total=len(items), submitted_at=now())
    stored = _Stored(
        [i for i in items if isinstance(i, Article)],
        [(i.origin, i.reason) for i in items if isinstance(i, ArticleError)],
    )
    return job, msgspec.msgpack.encode(stored)


def items_of(blob: bytes) -> list[Article | ArticleError]:
    """A job's articles as kept by ``new_job``."""
    stored = msgspec.msgpack.decode(blob, type=_Stored)
    items: list[Article | ArticleError] = [*stored.articles]
    return items + [ArticleError(origin, reason) for origin, reason in stored.failed]


def job_of_row(row: Sequence[object]) -> Job:
    """A job from its columns: id, total, status, done, submitted_at, finished_at, report, error."""
    job_id, total, status, done, submitted, finished, report, error = row
    return Job(
        str(job_id),
        int(str(total)),
        str(status),
        int(str(done)),
        str(submitted),
        None if finished is None else str(finished),
        None if not isinstance(report, bytes) else msgspec.msgpack.decode(report, type=IngestReport),
        None if error is None else str(error),
    )


def report_blob(report: IngestReport | None) -> bytes | None:
    return None if report is None else msgspec.msgpack.encode(report)


class JobTable:
    """The queue of ingest jobs, shared by every process on the data folder."""

    def __init__(self, path: Path, max_waiting: int = DEFAULT_MAX_WAITING) -> None:
        self._table = Table(path, "ingest job table", _SCHEMA)
        self._max_waiting = max_waiting

    def submit(self, items: Items) -> Job:
        """Queue ``items``; QueueFullError when ``max_waiting`` jobs are queued or running."""
        job, blob = new_job(items)
        with self._table.writing() as db:
            (waiting,) = db.execute(
                "SELECT count(*) FROM ingest_jobs WHERE status IN ('queued', 'running')"
            ).fetchone()
            if waiting >= self._max_waiting:
                raise QueueFullError(f"{self._max_waiting} ingest jobs are already waiting")
            db.execute(
                "INSERT INTO ingest_jobs (id, status, total, submitted_at, items) "
                "VALUES (?, 'queued', ?, ?, ?)",
                (job.id, job.total, job.submitted_at, blob),
            )
            db.execute(
                "DELETE FROM ingest_jobs WHERE status IN ('done', 'failed') AND seq <= "
                "(SELECT seq FROM ingest_jobs WHERE status IN ('done', 'failed') "
                "ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (KEEP_FINISHED,),
            )
        INGEST_JOBS.labels("queued").inc()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._table.reading() as db:
            row = db.execute(
                "SELECT id, total, status, done, submitted_at, finished_at, report, error "
                "FROM ingest_jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
        return None if row is None else job_of_row(row)

    def waiting(self) -> int:
        """Jobs queued or running."""
        with self._table.reading() as db:
            (count,) = db.execute(
                "SELECT count(*) FROM ingest_jobs WHERE status IN ('queued', 'running')"
            ).fetchone()
        return int(count)

    def requeue(self) -> int:
        """Queue again the jobs a writer that died left running; how many."""
        with self._table.writing() as db:
            return int(
                db.execute("UPDATE ingest_jobs SET status = 'queued' WHERE status = 'running'").rowcount
            )

    def take(self) -> tuple[str, list[Article | ArticleError]] | None:
        """Mark the oldest queued job running and give its id and articles; None when none waits."""
        with self._table.writing() as db:
            row = db.execute(
                "SELECT id, items FROM ingest_jobs WHERE status = 'queued' ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE ingest_jobs SET status = 'running', done = 0 WHERE id = ?", (row[0],))
        return str(row[0]), items_of(row[1])

    def progress(self, job_id: str, done: int) -> None:
        with self._table.writing() as db:
            db.execute("UPDATE ingest_jobs SET done = ? WHERE id = ?", (done, job_id))

    def finish(self, job_id: str, report: IngestReport | None, error: str | None = None) -> None:
        """The job done with ``report``, or failed with ``error`` (its articles are let go either way)."""
        status = "failed" if report is None else "done"
        with self._table.writing() as db:
            db.execute(
                "UPDATE ingest_jobs SET status = ?, done = CASE WHEN ? = 'done' THEN total ELSE done END, "
                "finished_at = ?, report = ?, error = ?, items = NULL WHERE id = ?",
                (status, status, now(), report_blob(report), error, job_id),
            )
        INGEST_JOBS.labels(status).inc()

    def close(self) -> None:
        self._table.close()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
