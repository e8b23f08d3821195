"""Background ingest: the writing process (api/work/writer.py) runs the queued jobs of
api/store/jobs.py in order, one at a time, in a thread of its own. A job cut short by a dying writer is
run again from the start by the next (ingest is idempotent: what was committed is found unchanged)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from api.store.jobs import Job
from api.store.protocols import JobStore
from index import ArticleError, IngestReport
from index.records import Article

log = logging.getLogger("api.work.jobs")
DEFAULT_CHECK_SECONDS = 1.0

Items = Sequence[Article | ArticleError]
Ingest = Callable[[Items, Callable[[int], None]], IngestReport]


class JobRunner:
    """Runs the job table's queue once ``start`` is called (in the writing process only)."""

    def __init__(self, table: JobStore, ingest: Ingest, check_seconds: float = DEFAULT_CHECK_SECONDS) -> None:
        """``check_seconds``: how often the runner looks for jobs other processes queued."""
        self.table = table
        self._ingest = ingest
        self._check = check_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._runner: threading.Thread | None = None

    def submit(self, items: Items) -> Job:
        """Queue ``items`` (QueueFullError when the queue is full) and wake the runner."""
        job = self.table.submit(items)
        self._wake.set()
        return job

    def start(self) -> None:
        """Run the queue here: first a job left running by a writer that died."""
        if resumed := self.table.requeue():
            log.info("%d ingest job(s) left running by an earlier writer queued again", resumed)
        self._runner = threading.Thread(target=self._run, name="ingest-jobs", daemon=True)
        self._runner.start()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._runner is not None:
            self._runner.join(timeout=60)
        self.table.close()

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
        taken = self.table.take()
        if taken is None:
            return False
        job_id, items = taken
        try:
            report = self._ingest(items, lambda done: self.table.progress(job_id, done))
        except Exception:
            log.exception("ingest job %s failed", job_id)
            self.table.finish(
                job_id, None, "the ingest failed; the articles committed before the failure are kept"
            )
        else:
            self.table.finish(job_id, report)
        return True
