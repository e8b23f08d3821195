"""`rag serve --workers 2`: two real worker processes on one socket of 127.0.0.1 over one data folder
(api/supervisor.py, api/cli/serve.py). Which worker answered is in ``X-Worker``; a fresh connection
goes to whichever worker accepts it, so a test that needs the other one asks again until it answers."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import rag, rag_env, server_process, until

pytestmark = pytest.mark.slow
_BUDGET = 120.0
"""Seconds a condition may take to come true (the machine may be busy)."""


def _fresh(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request on a new connection (so the kernel chooses the worker again)."""
    with httpx.Client(timeout=60) as client:
        return client.request(method, url, **kwargs)


def _from_other(worker: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """The answer to a (repeatable) request, from a worker other than ``worker``."""

    def other() -> httpx.Response | None:
        answer = _fresh(method, url, **kwargs)
        return answer if answer.headers["x-worker"] != worker else None

    found: httpx.Response = until(other)
    return found


def _metrics(base: str) -> str:
    answer = _fresh("GET", f"{base}/metrics")
    assert answer.status_code == 200
    return answer.text


def _worker_pids(base: str) -> set[int]:
    return {
        int(pid) for pid in re.findall(r'^newsqa_worker_up\{.*pid="(\d+)".*\} 1\.0$', _metrics(base), re.M)
    }


def _worker_requests(text: str) -> dict[str, float]:
    found = re.findall(r'^newsqa_worker_requests_total\{worker="(\d+)"\} ([0-9.e+]+)$', text, re.M)
    return {worker: float(count) for worker, count in found}


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path) -> Iterator[tuple[str, str, int]]:
    """Two workers over the seed articles; yields the address, an admin key and the supervisor's pid."""
    folder = tmp_path_factory.mktemp("workers")
    env = rag_env(folder / "data", tiktoken_dir)
    assert rag("ingest", "seeds", "--quiet", env=env).returncode == 0
    made = rag("keys", "add", "root", "--scope", "admin", env=env)
    assert made.returncode == 0, made.stderr
    admin = made.stdout.strip()
    served = server_process(env, folder / "serve.log", "--workers", "2", "--rate-per-address", "0")
    with served as (base, supervisor):
        until(lambda: len(_worker_pids(base)) == 2)
        yield base, admin, supervisor.pid


def _article(number: int) -> dict[str, str]:
    return {
        "id": f"quay-{number}",
        "title": f"Quay works, part {number}",
        "body": f"Part {number}: the harbour board said the north quay of Port Wren will reopen in spring "
        "after repairs to its stone wall.",
        "source": "Wren Gazette",
        "published_at": "2024-03-01",
    }


def test_a_write_through_one_worker_is_answered_by_the_other(workers: tuple[str, str, int]) -> None:
    base, admin, _ = workers
    auth = {"authorization": f"Bearer {admin}"}
    posted = _fresh("POST", f"{base}/articles", json=[_article(n) for n in range(20)], headers=auth)
    assert posted.status_code == 202, posted.text  # over the request budget: a job, run by the writer
    writer = posted.headers["x-worker"]
    job_url = f"{base}{posted.json()['url']}"
    seen = _from_other(writer, "GET", job_url, headers=auth)  # the job, as the other worker sees it
    assert seen.status_code == 200, seen.text
    done = until(lambda: (j := _fresh("GET", job_url, headers=auth).json())["status"] == "done" and j)
    assert len(done["report"]["added"]) == 20
    article = _from_other(writer, "GET", f"{base}/articles/quay-7", headers=auth)
    if article.status_code == 404:  # committed, and followed by the other worker within a second or so
        article = until(
            lambda: (
                (a := _from_other(writer, "GET", f"{base}/articles/quay-7", headers=auth)).status_code == 200
                and a
            )
        )
    assert article.json()["title"] == "Quay works, part 7"
    question = {"q": "When will the north quay of Port Wren reopen?", "as_of": "2024-03-02"}

    def searched() -> httpx.Response | None:  # the other worker's search, once it holds the new chunks
        found = _from_other(writer, "GET", f"{base}/search", params=question, headers=auth)
        assert found.status_code == 200, found.text
        return found if any(p["article_id"].startswith("quay-") for p in found.json()["passages"]) else None

    until(searched)


def test_a_key_revoked_through_one_worker_is_refused_by_both(workers: tuple[str, str, int]) -> None:
    base, admin, _ = workers
    made = _fresh("POST", f"{base}/keys", json={"name": "reader", "scope": "ask"},
                  headers={"authorization": f"Bearer {admin}"})  # fmt: skip
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    search = f"{base}/search"
    mine = {"authorization": f"Bearer {token}"}
    first = _fresh("GET", search, params={"q": "quay"}, headers=mine)
    assert first.status_code == 200
    assert _from_other(
        first.headers["x-worker"], "GET", search, params={"q": "quay"}, headers=mine
    ).is_success
    itself = _fresh("DELETE", f"{base}/keys/root", headers={"authorization": f"Bearer {admin}"})
    assert itself.status_code == 409  # a key never locks its holder out
    revoked = _fresh("DELETE", f"{base}/keys/reader", headers={"authorization": f"Bearer {admin}"})
    assert revoked.status_code == 204
    # At once, on both: every worker reads the key table on each request.
    refused = _fresh("GET", search, params={"q": "quay"}, headers=mine)
    assert refused.status_code == 401
    other = _from_other(refused.headers["x-worker"], "GET", search, params={"q": "quay"}, headers=mine)
    assert other.status_code == 401


def test_a_limit_of_20_a_minute_holds_across_both_workers(workers: tuple[str, str, int]) -> None:
    base, admin, _ = workers
    made = _fresh("POST", f"{base}/keys", json={"name": "metered", "scope": "ask", "per_minute": 20},
                  headers={"authorization": f"Bearer {admin}"})  # fmt: skip
    mine = {"authorization": f"Bearer {made.json()['token']}"}
    statuses: dict[str, list[int]] = {}
    started = time.monotonic()
    # Until both workers have answered and both have refused: 40 requests at least.
    while sum(map(len, statuses.values())) < 40 or any(
        {200, 429} - set(codes) for codes in [*statuses.values(), *([[]] * (2 - len(statuses)))]
    ):
        answer = _fresh("GET", f"{base}/search", params={"q": "quay"}, headers=mine)
        statuses.setdefault(answer.headers["x-worker"], []).append(answer.status_code)
        assert time.monotonic() - started < _BUDGET, statuses
    elapsed = time.monotonic() - started
    allowed = sum(codes.count(200) for codes in statuses.values())
    # The bucket holds 20 and refills one every 3 s: one worker alone would have allowed 20 more.
    assert 20 <= allowed <= 20 + int(elapsed / 3) + 1, (allowed, elapsed)
    assert all(set(codes) <= {200, 429} for codes in statuses.values())


def test_metrics_sum_both_workers(workers: tuple[str, str, int]) -> None:
    base, _, _ = workers
    before = _metrics(base)
    answers = [_fresh("GET", f"{base}/health") for _ in range(4)]
    while len({a.headers["x-worker"] for a in answers}) < 2:
        answers.append(_fresh("GET", f"{base}/health"))
    after = _metrics(base)
    counted, earlier = _worker_requests(after), _worker_requests(before)
    served = {w: sum(a.headers["x-worker"] == w for a in answers) for w in ("1", "2")}
    for worker in ("1", "2"):  # the first /metrics answer is counted once it is sent
        grew = counted[worker] - earlier.get(worker, 0.0)
        assert grew - served[worker] in (0.0, 1.0), (worker, grew, served)
    health = r'^newsqa_requests_total\{[^}]*path="/health",status_code="200"\} ([0-9.e+]+)$'
    total = float(re.findall(health, after, re.M)[0]) - float(re.findall(health, before, re.M)[0])
    assert total == len(answers)  # one sum over both processes
    assert len(_worker_pids(base)) == 2


def test_a_killed_worker_is_replaced_while_the_other_answers(workers: tuple[str, str, int]) -> None:
    base, _, _ = workers
    pids = _worker_pids(base)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    failures: list[str] = []
    answered = 0

    def replaced() -> bool:
        nonlocal answered
        try:
            answer = _fresh("GET", f"{base}/health")
            answered += answer.status_code == 200
            if answer.status_code != 200:
                failures.append(str(answer.status_code))
        except httpx.TransportError as exc:
            failures.append(repr(exc))
        now = _worker_pids(base)
        return len(now) == 2 and victim not in now

    until(replaced)
    assert not failures  # nothing was in flight on the killed worker
    assert answered >= 1


def test_sighup_restarts_both_workers_without_a_failed_request(workers: tuple[str, str, int]) -> None:
    base, admin, supervisor = workers
    pids = _worker_pids(base)
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def client() -> None:
        auth = {"authorization": f"Bearer {admin}"}
        with httpx.Client(timeout=60, headers=auth) as session:  # keep-alive, as a real client
            while not stop.is_set():
                try:
                    answer = session.get(f"{base}/search", params={"q": "quay harbour"})
                    answered[0] += 1
                    if answer.status_code != 200:
                        failures.append(str(answer.status_code))
                except httpx.TransportError as exc:
                    failures.append(repr(exc))

    auth = {"authorization": f"Bearer {admin}"}
    watch = _fresh(
        "POST", f"{base}/watches", json={"question": "When will the north quay reopen?"}, headers=auth
    )
    assert watch.status_code == 201, watch.text
    opened = threading.Event()

    def listen() -> None:  # an event stream on an old worker ends when it stops; a client resumes elsewhere
        with httpx.stream(
            "GET", f"{base}/watches/{watch.json()['id']}/events", headers=auth, timeout=120
        ) as s:
            opened.set()
            for _ in s.iter_lines():
                pass

    stream = threading.Thread(target=listen)
    stream.start()
    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        until(lambda: answered[0] >= 20 and opened.is_set())
        os.kill(supervisor, signal.SIGHUP)
        until(lambda: not (_worker_pids(base) & pids) and len(_worker_pids(base)) == 2)
        until(lambda: not stream.is_alive())
        before = answered[0]
        until(lambda: answered[0] >= before + 20)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert not failures, failures[:5]
