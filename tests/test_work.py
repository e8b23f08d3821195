"""The background parts of the writing process, run directly on a temporary folder: the writer lock that
picks the one process of a data folder that does the background writes, and the runner of the ingest job
queue (its own thread, a real ingest function, the real job table in SQLite)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest

from api.store.jobs import Job, JobTable
from api.store.protocols import JobStore
from api.work.jobs import Items, JobRunner
from api.work.writer import WriterLock
from index import Article, ArticleError, IngestReport
from tests.servers import until

WAIT = 30.0
"""Seconds to wait for another thread: far longer than any of this needs, so only a fault reaches it."""
FAILED = "the ingest failed; the articles committed before the failure are kept"


# --- the writer lock -----------------------------------------------------------------------------------


class Contender:
    """One process's writer lock on ``folder``, counting the times it became the writer."""

    def __init__(self, folder: Path) -> None:
        self.became = threading.Event()
        self.runs = 0
        self.lock = WriterLock(folder, self._become, retry_seconds=0.05)

    def _become(self) -> None:
        self.runs += 1
        self.became.set()


@pytest.fixture
def contenders(tmp_path: Path) -> Iterator[list[Contender]]:
    """Two writer locks on one folder, started in turn."""
    made = [Contender(tmp_path), Contender(tmp_path)]
    for contender in made:
        contender.lock.start()
    yield made
    for contender in made:
        contender.lock.close()


def test_one_of_two_locks_on_a_folder_holds_it_and_runs_its_callback(contenders: list[Contender]) -> None:
    holder, waiting = contenders
    assert (holder.lock.held, waiting.lock.held) == (True, False)
    assert (holder.runs, waiting.runs) == (1, 0)  # the first to start found the lock free


def test_when_the_holder_closes_the_other_takes_over(contenders: list[Contender]) -> None:
    holder, waiting = contenders
    holder.lock.close()
    assert not holder.lock.held
    assert waiting.became.wait(WAIT)
    assert waiting.lock.held
    assert (holder.runs, waiting.runs) == (1, 1)


def test_a_lock_that_stopped_waiting_never_takes_over(tmp_path: Path, contenders: list[Contender]) -> None:
    """A process that is stopping lets the lock pass to one that is not."""
    holder, stopping = contenders
    stopping.lock.stop_waiting()
    holder.lock.close()
    newcomer = Contender(tmp_path)
    newcomer.lock.start()  # takes the lock at once: nobody else took it meanwhile
    try:
        assert newcomer.lock.held
        assert (stopping.lock.held, stopping.runs, newcomer.runs) == (False, 0, 1)
    finally:
        newcomer.lock.close()


# --- the ingest job runner -----------------------------------------------------------------------------


class Recording:
    """An ingest that records the items of each call, reports one step of progress per article and all of
    them added; it raises for an article whose id starts with "boom". After the first step it waits for
    ``go`` (set unless a test clears it, to look at a job while it runs)."""

    def __init__(self) -> None:
        self.got: list[list[Article | ArticleError]] = []
        self.go = threading.Event()
        self.go.set()

    def ingest(self, items: Items, done: Callable[[int], None]) -> IngestReport:
        self.got.append(list(items))
        articles = [i for i in items if isinstance(i, Article)]
        if any(a.id.startswith("boom") for a in articles):
            raise RuntimeError("the embedder ran out of memory")
        for n in range(1, len(articles) + 1):
            done(n)
            assert self.go.wait(WAIT)
        return IngestReport(
            added=tuple(a.id for a in articles),
            failed=tuple(str(i) for i in items if isinstance(i, ArticleError)),
        )


def _article(article_id: str) -> Article:
    return Article(
        id=article_id,
        title=f"Story {article_id}",
        body=f"The body of story {article_id}.",
        source="Example Wire",
        published_at=date(2024, 5, 2),
        authors=("Ann Lee",),
    )


def _job(table: JobStore, job_id: str) -> Job:
    job = table.get(job_id)
    assert job is not None
    return job


def _finished(table: JobStore, job_id: str) -> Job | None:
    """The job once it is done or failed; None before."""
    job = _job(table, job_id)
    return job if job.status in {"done", "failed"} else None


@pytest.fixture
def recording() -> Recording:
    return Recording()


@pytest.fixture
def runner(tmp_path: Path, recording: Recording) -> Iterator[JobRunner]:
    """A runner over the job table of ``tmp_path``, not started; it looks for new jobs every 0.05 s."""
    made = JobRunner(JobTable(tmp_path / "service.sqlite"), recording.ingest, check_seconds=0.05)
    yield made
    made.close()


def test_a_job_runs_through_the_ingest_and_ends_done_with_its_report(
    runner: JobRunner, recording: Recording
) -> None:
    items: list[Article | ArticleError] = [
        _article("a"),
        _article("b"),
        ArticleError("feed.jsonl:3", "invalid JSON"),
    ]
    recording.go.clear()
    runner.start()
    job = runner.submit(items)
    assert (job.status, job.total, job.done) == ("queued", 3, 0)
    until(lambda: _job(runner.table, job.id).done == 1, WAIT)  # progress recorded as the ingest reports it
    assert _job(runner.table, job.id).status == "running"
    recording.go.set()
    finished: Job = until(lambda: _finished(runner.table, job.id), WAIT)
    assert finished.status == "done"
    assert finished.report == IngestReport(added=("a", "b"), failed=("feed.jsonl:3: invalid JSON",))
    assert (finished.done, finished.error) == (3, None)
    assert finished.finished_at is not None
    ((*articles, error),) = recording.got  # one call, with the articles as they were submitted
    assert articles == items[:2]
    assert isinstance(error, ArticleError)
    assert (error.origin, error.reason) == ("feed.jsonl:3", "invalid JSON")


def test_a_failing_job_ends_failed_and_the_next_job_still_runs(
    runner: JobRunner, recording: Recording
) -> None:
    failing = runner.submit([_article("boom-1")])
    calm = runner.submit([_article("calm-1")])
    runner.start()
    second: Job = until(lambda: _finished(runner.table, calm.id), WAIT)
    first = _job(runner.table, failing.id)
    assert (first.status, first.error, first.report) == ("failed", FAILED, None)
    assert second.status == "done"
    assert second.report == IngestReport(added=("calm-1",))
    assert recording.got == [[_article("boom-1")], [_article("calm-1")]]


def test_a_job_queued_by_another_process_is_found_without_a_wake(
    tmp_path: Path, runner: JobRunner, recording: Recording
) -> None:
    runner.start()
    other = JobTable(tmp_path / "service.sqlite")  # another worker of `rag serve --workers 2`
    try:
        job = other.submit([_article("elsewhere")])
        finished: Job = until(lambda: _finished(other, job.id), WAIT)
    finally:
        other.close()
    assert finished.status == "done"
    assert recording.got == [[_article("elsewhere")]]


def test_a_job_left_running_by_a_dead_writer_is_run_again_by_the_next(
    tmp_path: Path, runner: JobRunner, recording: Recording
) -> None:
    dead = JobTable(tmp_path / "service.sqlite")  # the writer that took the job, then died
    job = dead.submit([_article("resumed")])
    taken = dead.take()
    assert taken is not None
    assert taken[0] == job.id
    assert _job(dead, job.id).status == "running"
    dead.close()
    runner.start()
    finished: Job = until(lambda: _finished(runner.table, job.id), WAIT)
    assert finished.status == "done"
    assert finished.report == IngestReport(added=("resumed",))
    assert recording.got == [[_article("resumed")]]
