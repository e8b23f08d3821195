"""Request bodies larger than a question: malformed or deeply nested JSON is a 400 problem; many or long
articles become an ingest job, polled at ``/jobs/{id}`` for its progress and report; too many or too long
are refused."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.config import Settings
from api.web.app import create_app
from index import Embedder
from index.store import IndexStore
from rag import Answerer
from tests.conftest import Server, local_client

PROBLEM = "application/problem+json"


@pytest.fixture
def client(settings_store: tuple[Settings, IndexStore], embedder: Embedder) -> Iterator[TestClient[Litestar]]:
    """The real app in-process over the seed and the short news items, with the default body limit."""
    settings, store = settings_store
    app = create_app(settings, opener=lambda s: Answerer(store, embedder, s.answers), background=False)
    with local_client(app) as test_client:
        yield test_client


def _story(i: int) -> dict[str, str]:
    return {
        "id": f"zebra-{i}",
        "title": f"Zebra festival {i} in Quillfield",
        "published_at": "2024-05-02",
        "body": f"The zebra festival number {i} opened in Quillfield on Thursday with a parade of painted "
        f"carts. Organisers said festival {i} drew record crowds to the town square.",
    }


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b'{"question": "caf\xe9?"}', "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"question": ' * 2000 + b'"x"' + b"}" * 2000, "nested too deeply"),
    ],
)
def test_malformed_json_is_a_400(client: TestClient[Litestar], content: bytes, detail: str) -> None:
    for path in ("/ask", "/articles"):
        response = client.post(path, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        assert detail in response.json()["detail"]


def test_large_ingests_become_jobs(client: TestClient[Litestar]) -> None:
    paragraph = "The river authority published its flood report on Friday. It lists every gauge. "
    long_story = {"id": "long", "title": "Flood report", "body": paragraph * 260}  # about 21,000 characters
    accepted = client.post("/articles", json=long_story)
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert accepted.headers["location"] == job["url"] == f"/jobs/{job['id']}"
    assert job["status"] in {"queued", "running"}
    many = client.post("/articles", json=[_story(i) for i in range(17)])
    assert many.status_code == 202
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        states = [client.get(url).json() for url in (job["url"], many.json()["url"])]
        if all(s["status"] in {"done", "failed"} for s in states):
            break
        time.sleep(0.5)
    assert [s["status"] for s in states] == ["done", "done"]
    assert states[0]["report"]["added"] == ["long"]
    assert len(states[1]["report"]["added"]) == 17
    assert client.get("/jobs/no-such-job").status_code == 404
    too_many = client.post("/articles", json=[_story(i) for i in range(1001)])
    assert too_many.status_code == 400
    too_long = client.post("/articles", json={"id": "huge", "body": "word " * 40_001})
    assert too_long.status_code == 400


@pytest.mark.slow
def test_a_job_reports_progress_as_its_batches_commit(open_server: Server) -> None:
    """Before: ``done`` stayed 0 until the job ended."""
    sentence = "The regional council voted on measure {i} about roads, schools and the harbour budget. "
    articles = [
        {"id": f"progress-{i}", "title": f"Council measure {i}", "body": sentence.format(i=i) * 60}
        for i in range(24)
    ]  # about 5,300 characters each: six commits of the 20,000-character request budget
    accepted = httpx.post(f"{open_server.base}/articles", json=articles, timeout=60)
    assert accepted.status_code == 202, accepted.text
    seen: list[int] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = httpx.get(f"{open_server.base}{accepted.json()['url']}").json()
        seen.append(job["done"])
        if job["status"] in {"done", "failed"}:
            break
        time.sleep(0.05)
    assert job["status"] == "done"
    assert any(0 < done < 24 for done in seen), sorted(set(seen))
    assert seen == sorted(seen)
