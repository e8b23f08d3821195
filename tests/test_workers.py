"""`rag serve --workers 2`: two real worker processes on one socket of 127.0.0.1 over one data folder
(api/supervisor.py, api/cli/serve.py). Which worker answered is in ``X-Worker``; a fresh connection
goes to whichever worker accepts it, so a test that needs the other one asks again until it answers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.supervisor import LOCK_FILE, METRICS_DIR, PID_FILE
from tests.servers import ROOT, free_port, rag, rag_env, server_process, until

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


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path) -> Path:
    """A data folder holding the seed articles, for a test to copy and serve alone."""
    data = tmp_path_factory.mktemp("seeded") / "data"
    ingested = rag("ingest", "seeds", "--quiet", env=rag_env(data, tiktoken_dir))
    assert ingested.returncode == 0, ingested.stderr
    return data


@contextmanager
def _asking(url: str) -> Iterator[tuple[list[str], list[int]]]:
    """GET ``url`` on a new connection each time, in a thread, until the block ends; yields the failures
    and the number of answers so far."""
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                answer = _fresh("GET", url)
                answered[0] += 1
                if answer.status_code != 200:
                    failures.append(str(answer.status_code))
            except httpx.TransportError as exc:
                failures.append(repr(exc))

    thread = threading.Thread(target=ask)
    thread.start()
    try:
        yield failures, answered
    finally:
        stop.set()
        thread.join()


def test_a_reload_whose_new_worker_cannot_load_keeps_the_old_one_serving(
    seeded: Path, tiktoken_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(seeded, data)
    log = tmp_path / "serve.log"
    with server_process(rag_env(data, tiktoken_dir), log, "--workers", "2") as (base, supervisor):
        until(lambda: len(_worker_pids(base)) == 2)
        old = _worker_pids(base)
        state, aside, garbage = data / "service.sqlite", tmp_path / "service.sqlite", tmp_path / "garbage"
        aside.hardlink_to(state)  # the running workers keep this file open; a new worker opens the garbage
        garbage.write_bytes(b"not a database\n" * 300)
        garbage.replace(state)
        with _asking(f"{base}/health") as (failures, answered):
            until(lambda: answered[0] >= 5)
            supervisor.send_signal(signal.SIGHUP)
            failed = (
                r"worker 1 could not start \({} in a row; [^)]*\); "
                r"its old worker \(pid (\d+)\) still answers; next try in {} s"
            )

            def retried() -> re.Match[str] | None:  # its second failure: tried again after 1 s
                assert supervisor.poll() is None, log.read_text()
                return re.search(failed.format(2, 2), log.read_text())

            second = until(retried)
            first = re.search(failed.format(1, 1), log.read_text())
            assert first is not None
            assert {int(first[1]), int(second[1])} <= old
            assert "worker 2 could not start" not in log.read_text()  # the roll waits for slot 1
            assert supervisor.poll() is None
            before = answered[0]
            until(lambda: answered[0] >= before + 5)
            aside.replace(state)  # mended: slot 1's next try loads, and the roll goes on
            until(lambda: "every worker restarted" in log.read_text())
            until(lambda: len(now := _worker_pids(base)) == 2 and not now & old)
            before = answered[0]
            until(lambda: answered[0] >= before + 5)
        assert supervisor.poll() is None
        assert not failures, failures[:5]


def test_a_cold_start_whose_workers_cannot_load_stops_with_status_2(
    seeded: Path, tiktoken_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(seeded, data)
    (data / "service.sqlite").write_bytes(b"not a database\n" * 300)
    served = rag("serve", "--port", str(free_port()), "--workers", "2", env=rag_env(data, tiktoken_dir))
    assert served.returncode == 2, served.stderr
    assert "the index could not be loaded (the worker's log says why); stopping" in served.stderr
    assert "could not start" not in served.stderr  # no worker ever answered: no retry
    assert not (data / PID_FILE).exists()
    assert not (data / METRICS_DIR).exists()


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (one exited but not yet reaped has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_one_server_per_data_folder_and_a_killed_ones_leftovers_are_cleared(
    seeded: Path, tiktoken_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(seeded, data)
    env = rag_env(data, tiktoken_dir)
    pid_file, metrics = data / PID_FILE, data / METRICS_DIR
    with server_process(env, tmp_path / "first.log", "--workers", "2") as (base, first):
        until(lambda: len(_worker_pids(base)) == 2)
        command = [sys.executable, "-m", "api", "serve", "--port", str(free_port()), "--workers", "2"]
        second = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _, said = second.communicate(timeout=60)
        finally:
            if second.poll() is None:  # not refused: it serves over the folder too
                second.kill()
                second.wait()
        assert second.returncode == 2, said
        assert f"(pid {first.pid}) serves over {data}" in said.decode()
        assert pid_file.read_text().strip() == str(first.pid)
        old = _worker_pids(base)
        reloaded = rag("serve", "--reload-workers", env=env)
        assert reloaded.returncode == 0, reloaded.stderr
        assert f"pid {first.pid}" in reloaded.stdout
        until(lambda: len(now := _worker_pids(base)) == 2 and not now & old)
        workers = _worker_pids(base)
        first.kill()  # no clean-up: the workers see their pipe close and stop
        first.wait()
        until(lambda: not any(map(_running, workers)))
        left = {path.name for path in metrics.iterdir()}
        assert left
        assert pid_file.read_text().strip() == str(first.pid)
    with server_process(env, tmp_path / "third.log", "--workers", "2") as (base, third):
        until(lambda: len(_worker_pids(base)) == 2)
        assert pid_file.read_text().strip() == str(third.pid)
        assert not left & {path.name for path in metrics.iterdir()}  # the killed one's workers' files
        assert (data / LOCK_FILE).read_text().strip() == str(third.pid)
        third.terminate()
        assert third.wait(timeout=60) == 0
    assert not pid_file.exists()
    assert not metrics.exists()
