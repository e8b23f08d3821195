"""A real `rag serve` on 127.0.0.1 under concurrent reads and writes (over HTTP and from `rag ingest` in
another process), and schemathesis against its OpenAPI schema with every check."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import NEWS, SEEDS
from tests.servers import ROOT, rag, rag_env, serving

pytestmark = pytest.mark.slow


@dataclass
class Live:
    base: str
    env: dict[str, str]
    admin: str
    ask: str
    log: Path


@pytest.fixture
def live(tmp_path: Path, tiktoken_dir: Path) -> Iterator[Live]:
    env = rag_env(tmp_path / "data", tiktoken_dir)
    assert rag("ingest", "--quiet", str(SEEDS), str(NEWS), env=env).returncode == 0
    admin = rag("keys", "add", "ops", "--scope", "admin", env=env).stdout.strip()
    ask = rag("keys", "add", "reader", "--scope", "ask", env=env).stdout.strip()
    log = tmp_path / "server.log"
    with serving(env, log, "--rate-per-address", "0") as base:
        yield Live(base, env, admin, ask, log)


@dataclass
class Observed:
    statuses: list[int] = field(default_factory=list)
    cited: list[tuple[float, set[str]]] = field(default_factory=list)
    deleted_at: dict[str, float] = field(default_factory=dict)


def _story(i: int) -> dict[str, str]:
    return {
        "id": f"zebra-{i}",
        "title": f"Zebra festival {i} in Quillfield",
        "published_at": "2024-05-02",
        "body": f"The zebra festival number {i} opened in Quillfield on Thursday with a parade of painted "
        f"carts. Organisers said festival {i} drew record crowds to the town square.",
    }


def test_concurrent_questions_writes_and_an_ingest_process(live: Live, tmp_path: Path) -> None:
    corpus = tmp_path / "feed.jsonl"
    with corpus.open("w") as handle:
        for i in range(150):
            body = (
                f"Council report {i}: the regional council voted on measure {i} about roads and schools. " * 2
            )
            handle.write(json.dumps({"id": f"feed-{i}", "title": f"Council vote {i}", "body": body}) + "\n")
    seen = Observed()
    stop = threading.Event()
    lock = threading.Lock()

    def ask() -> None:
        with httpx.Client(
            base_url=live.base, timeout=120, headers={"authorization": f"Bearer {live.ask}"}
        ) as c:
            while not stop.is_set():
                started = time.monotonic()
                response = c.post(
                    "/ask", json={"question": "What happened at the zebra festival in Quillfield?"}
                )
                ids: set[str] = set()
                if response.status_code == 200:
                    body = response.json()
                    ids = {x["article_id"] for x in body["citations"]} | {
                        p["article_id"] for p in body["passages"]
                    }
                with lock:
                    seen.statuses.append(response.status_code)
                    seen.cited.append((started, ids))

    def write() -> None:
        with httpx.Client(
            base_url=live.base, timeout=120, headers={"authorization": f"Bearer {live.admin}"}
        ) as c:
            for i in range(10):
                added = c.post("/articles", json=_story(i))
                with lock:
                    seen.statuses.append(added.status_code)
                if i >= 2:
                    removed = c.delete(f"/articles/zebra-{i - 2}")
                    with lock:
                        seen.statuses.append(removed.status_code)
                        seen.deleted_at[f"zebra-{i - 2}"] = time.monotonic()

    ingest = subprocess.Popen(
        [sys.executable, "-m", "api", "ingest", "--quiet", str(corpus)],
        env=live.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    readers = [threading.Thread(target=ask) for _ in range(6)]
    writer = threading.Thread(target=write)
    for thread in [*readers, writer]:
        thread.start()
    writer.join(timeout=600)
    out, err = ingest.communicate(timeout=600)
    stop.set()
    for thread in readers:
        thread.join(timeout=120)

    assert ingest.returncode == 0, err
    assert "150 added" in out
    assert len(seen.statuses) > 50
    assert set(seen.statuses) <= {200, 204}, sorted(set(seen.statuses))
    assert any(ids & {f"zebra-{i}" for i in range(10)} for _, ids in seen.cited)
    for started, ids in seen.cited:
        for article_id, deleted in seen.deleted_at.items():
            assert not (started > deleted and article_id in ids), (
                f"{article_id} cited after its DELETE returned"
            )
    assert "Traceback" not in live.log.read_text()
    deadline = time.monotonic() + 30  # the watcher publishes the other process's writes
    while httpx.get(f"{live.base}/health").json()["articles"] < 7 + 150 + 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert httpx.get(f"{live.base}/health").json()["articles"] == 7 + 150 + 2  # two zebra stories remain


SCHEMATHESIS_CONFIG = """
# Schema-valid input this API still refuses, by design: 422 for an article with no text left after
# cleaning (or an unusable url or date), and for filters whose dates contradict each other.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "409", "422"]

[generation]
max-examples = 25
"""


def test_schemathesis_finds_no_server_error_and_no_schema_violation(live: Live, tmp_path: Path) -> None:
    (tmp_path / "schemathesis.toml").write_text(SCHEMATHESIS_CONFIG)
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{live.base}/schema/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {live.admin}",
            "--seed",
            "7",
            "--workers",
            "1",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = result.stdout[-4000:]
    assert result.returncode == 0, summary
    assert "passed" in summary
    assert "Traceback" not in live.log.read_text()
