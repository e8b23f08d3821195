"""Background ingest: articles too many or too long to embed within one request become a job that one
worker thread runs in order; clients poll ``GET /jobs/{id}``. Jobs live in memory: after a restart
their articles are in the index up to the last committed batch, and posting them again is idempotent."""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from api.metrics import INGEST_JOBS, INGEST_QUEUED
from index import ArticleError, IngestReport
from index.records import Article

log = logging.getLogger("api.state.jobs")
DEFAULT_MAX_WAITING = 8
_KEEP_FINISHED = 200

Items = Sequence[Article | ArticleError]
Ingest = Callable[[Items, Callable[[int], None]], IngestReport]


class QueueFullError(Exception):
    """Too many ingest jobs are waiting."""


@dataclass
class Job:
    """One background ingest. Mutated only by the worker thread; read by anyone."""

    id: str
    total: int
    status: str = "queued"
    """queued, running, done or failed."""
    done: int = 0
    submitted_at: str = field(default_factory=lambda: _now())  # noqa: PLW0108 - _now is defined below
    finished_at: str | None = None
    report: IngestReport | None = None
    error: str | None = None


class IngestJobs:
    """A bounded queue of ingest jobs and the one thread that works through it."""

    def __init__(self, ingest: Ingest, max_waiting: int = DEFAULT_MAX_WAITING) -> None:
        self._ingest = ingest
        self._queue: queue.Queue[tuple[Job, Items] | None] = queue.Queue(maxsize=max_waiting)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="ingest-jobs", daemon=True)
        self._worker.start()

    def submit(self, items: Items) -> Job:
        job = Job(id=uuid.uuid4().hex, total=len(items))
        try:
            self._queue.put_nowait((job, items))
        except queue.Full:
            raise QueueFullError(f"{self._queue.maxsize} ingest jobs are already waiting") from None
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > _KEEP_FINISHED + self._queue.maxsize:
                self._jobs.popitem(last=False)
        INGEST_JOBS.labels("queued").inc()
        INGEST_QUEUED.inc()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=60)

    def _run(self) -> None:
        while (entry := self._queue.get()) is not None:
            job, items = entry
            job.status = "running"

            def progress(done: int, job: Job = job) -> None:
                job.done = done

            try:
                job.report = self._ingest(items, progress)
                job.done = job.total
                job.status = "done"
            except Exception as exc:
                log.exception("ingest job %s failed", job.id)
                job.error = "the ingest failed; the articles committed before the failure are kept"
                job.status = "failed"
                del exc
            job.finished_at = _now()
            INGEST_JOBS.labels(job.status).inc()
            INGEST_QUEUED.dec()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
