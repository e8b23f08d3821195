"""One test for each finding of the hardening review (issue 7), each of which failed before the fix:
1 reads racing writes, 2 writes from anyone and from other sites, 3 stored markup coming back live,
4 dates at the edges, 5 malformed JSON, 6 expensive requests under the size limit, 7 damaged vector
files passing the start-up checks, 8 a schema that hid statuses and limits."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.config import Settings
from api.store.keys import KeyRing
from api.web.app import create_app
from index import Embedder, load_paths, make_ingestor, parse_record
from index.store import IndexStore
from rag import Answerer
from tests.conftest import NEWS, SEEDS, local_client, make_settings, open_local

PROBLEM = "application/problem+json"


@pytest.fixture
def settings_store(
    tmp_path: Path, tiktoken_dir: Path, embedder: Embedder
) -> Iterator[tuple[Settings, IndexStore]]:
    settings = make_settings(tmp_path / "data", tiktoken_dir)
    store = open_local(settings, embedder)
    make_ingestor(settings.index, store, embedder).ingest(load_paths([SEEDS, NEWS]), progress=False)
    yield settings, store
    store.close()


@pytest.fixture
def client(settings_store: tuple[Settings, IndexStore], embedder: Embedder) -> Iterator[TestClient[Litestar]]:
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


def test_1_queries_racing_writes_never_fail_and_never_cite_deleted_articles(
    settings_store: tuple[Settings, IndexStore], embedder: Embedder
) -> None:
    """Before: the retriever read ``store.catalog`` several times per query while writes replaced it
    (broadcast errors, boolean-index errors, KeyErrors for deleted ids, FAISS 'key not found')."""
    settings, store = settings_store
    answerer = Answerer(store, embedder, settings.answers)
    ingestor = make_ingestor(settings.index, store, embedder)
    stop = threading.Event()
    errors: list[Exception] = []
    deleted_at: dict[str, float] = {}
    cited: list[tuple[float, set[str]]] = []

    def ask() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                answer = answerer.ask(answerer.question("What happened at the zebra festival in Quillfield?"))
            except Exception as exc:  # noqa: BLE001 - any failure in a thread is what is tested
                errors.append(exc)
                return
            cited.append(
                (started, {c.article_id for c in answer.citations} | {h.article.id for h in answer.passages})
            )

    def write() -> None:
        try:
            for i in range(12):
                ingestor.ingest([parse_record(_story(i), "test")], progress=False)
                if i >= 2:
                    store.delete(f"zebra-{i - 2}")
                    deleted_at[f"zebra-{i - 2}"] = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - any failure in a thread is what is tested
            errors.append(exc)
        finally:
            stop.set()

    threads = [threading.Thread(target=ask) for _ in range(4)] + [threading.Thread(target=write)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(cited) > 20
    assert any(ids & {f"zebra-{i}" for i in range(12)} for _, ids in cited)  # the stories were found
    for started, ids in cited:
        for article_id, when in deleted_at.items():
            assert not (started > when and article_id in ids), f"{article_id} cited after its delete"


def test_1_another_process_s_write_is_picked_up_outside_requests(
    settings_store: tuple[Settings, IndexStore], embedder: Embedder
) -> None:
    """Before: a write by another process made the next request rebuild FAISS and BM25 inside it."""
    settings, store = settings_store
    answerer = Answerer(store, embedder, settings.answers)
    other = open_local(settings, embedder)  # what `rag ingest` in another process does
    make_ingestor(settings.index, other, embedder).ingest([parse_record(_story(1), "other")], progress=False)
    other.delete("t-wheat-harvest")
    before = store.reader()
    hits = answerer.search(answerer.question("wheat harvest drought", top_k=10))
    assert store.reader() is before  # the request read the old generation and rebuilt nothing
    assert "t-wheat-harvest" not in {h.article.id for h in hits}  # deleted rows are never shown
    assert store.refresh()  # the watcher thread's job
    assert store.reader().generation == other.generation
    assert "zebra-1" in {
        h.article.id for h in answerer.search(answerer.question("zebra festival Quillfield"))
    }
    other.close()


def test_2_writes_need_an_admin_key_and_a_json_body(
    settings_store: tuple[Settings, IndexStore], embedder: Embedder
) -> None:
    settings, store = settings_store
    ring = KeyRing(settings.service.state_path)
    admin = ring.add("ops", "admin")
    ring.close()
    app = create_app(settings, opener=lambda s: Answerer(store, embedder, s.answers), background=False)
    story = b'{"id": "t-wheat-harvest", "body": "Replaced by a page the reader happened to open."}'
    with local_client(app) as client:
        assert (
            client.post("/articles", content=story, headers={"content-type": "application/json"}).status_code
            == 401
        )
        assert client.delete("/articles/t-wheat-harvest").status_code == 401
        cross_site = client.post(
            "/articles",
            content=story,
            headers={
                "content-type": "text/plain",
                "origin": "https://evil.example",
                "authorization": f"Bearer {admin}",
            },
        )
        assert cross_site.status_code in {403, 415}
    assert "Replaced" not in store.reader().articles(["t-wheat-harvest"])["t-wheat-harvest"].body


def test_3_markup_is_stored_and_returned_as_text(client: TestClient[Litestar]) -> None:
    article = {
        "id": "markup",
        "title": "<script>alert(1)</script>Harbour <b>reopens</b>",
        "source": "<img src=x onerror=alert(1)>Harbour Wire",
        "authors": ["<i>Ann Lee</i>"],
        "url": "https://example.com/harbour",
        "body": "The harbour reopened on Monday &lt;script&gt;alert(1)&lt;/script&gt; after repairs to the "
        "old stone pier. Fishing boats returned the same afternoon. <img src=x onerror=alert(2)",
    }
    assert client.post("/articles", json=article).status_code == 200
    stored = client.get("/articles/markup").json()
    assert stored["title"] == "Harbour reopens"  # a script's text is dropped with it
    assert stored["source"] == "Harbour Wire"
    assert stored["authors"] == ["Ann Lee"]
    answer = client.post("/ask", json={"question": "When did the harbour reopen after pier repairs?"}).text
    for live in ("<script", "<img", "onerror=", "<b>", "<i>"):
        assert live not in answer
        assert live not in stored["body"]
    bad_url = client.post("/articles", json={**article, "id": "js", "url": "javascript:alert(1)"})
    assert bad_url.status_code == 400  # the schema admits only http(s) addresses
    sneaky = client.post("/articles", json={**article, "id": "js", "url": "https:///no-host"})
    assert sneaky.status_code == 422
    assert "no host" in sneaky.text


@pytest.mark.parametrize(
    "request_body",
    [
        {"question": "What happened on December 31, 9999?"},
        {"question": "What happened in March 0000?"},
        {"question": "What happened on 9999-12-31?"},
        {"question": "What happened last year?", "as_of": "0001-01-01"},
        {"question": "What happened yesterday?", "as_of": "0001-01-01"},
        {"question": "What happened yesterday?", "as_of": "9999-12-31"},
        {"question": "Who won the marathon last week?", "as_of": "9999-12-31"},
        {"question": "news", "filters": {"published_after": "0001-01-01", "published_before": "9999-12-31"}},
    ],
)
def test_4_dates_at_the_edges_of_the_calendar(
    client: TestClient[Litestar], request_body: dict[str, Any]
) -> None:
    response = client.post("/ask", json=request_body)
    assert response.status_code == 200, response.text


def test_4_search_with_the_earliest_as_of(client: TestClient[Litestar]) -> None:
    response = client.get("/search", params={"q": "harvest", "as_of": "0001-01-01"})
    assert response.status_code == 200
    assert all(p["published_at"] is None for p in response.json()["passages"])  # only undated articles


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b'{"question": "caf\xe9?"}', "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"question": ' * 2000 + b'"x"' + b"}" * 2000, "nested too deeply"),
    ],
)
def test_5_malformed_json_is_a_400(client: TestClient[Litestar], content: bytes, detail: str) -> None:
    for path in ("/ask", "/articles"):
        response = client.post(path, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        assert detail in response.json()["detail"]


def test_6_large_ingests_become_jobs(client: TestClient[Litestar]) -> None:
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


def test_7_damaged_vectors_with_an_intact_count_are_rebuilt_not_served(
    tmp_path: Path, tiktoken_dir: Path, embedder: Embedder
) -> None:
    """Before: garbage inside the FAISS file passed the count check and answers came from garbage."""
    settings = make_settings(tmp_path / "data", tiktoken_dir)

    def saving(s: Settings) -> IndexStore:  # saves every segment to disk, however small
        return IndexStore(s.index.data_dir, embedder.name, embedder.dimension, persist_min=1)

    store = saving(settings)
    make_ingestor(settings.index, store, embedder).ingest(load_paths([SEEDS, NEWS]), progress=False)
    store.close()
    for path in settings.index.data_dir.glob("seg-*.npz"):
        data = bytearray(path.read_bytes())
        data[-3000:-100] = os.urandom(2900)
        path.write_bytes(bytes(data))
    app = create_app(settings, opener=lambda s: Answerer(saving(s), embedder, s.answers), background=False)
    with local_client(app) as client:
        answer = client.post("/ask", json={"question": "Who won the city marathon?"}).json()
        assert answer["passages"][0]["article_id"] == "t-marathon-record"


def test_8_the_schema_declares_statuses_limits_and_security(client: TestClient[Litestar]) -> None:
    schema = client.get("/schema/openapi.json").json()
    paths = schema["paths"]
    expected = {
        ("/ask", "post"): {"200", "400", "401", "403", "413", "415", "422", "429", "500", "503"},
        ("/search", "get"): {"200", "400", "401", "403", "422", "429", "500", "503"},
        ("/articles", "post"): {"200", "202", "400", "401", "403", "413", "415", "422", "429", "500", "503"},
        ("/articles/{article_id}", "get"): {"200", "400", "401", "403", "404", "429", "500", "503"},
        ("/articles/{article_id}", "delete"): {"204", "400", "401", "403", "404", "429", "500", "503"},
        ("/jobs/{job_id}", "get"): {"200", "400", "401", "403", "404", "429", "500", "503"},
        ("/health", "get"): {"200", "503"},
    }
    for (path, method), statuses in expected.items():
        operation = paths[path][method]
        assert set(operation["responses"]) == statuses, (path, method)
        for status in statuses - {"200", "202", "204"}:
            assert "application/problem+json" in operation["responses"][status]["content"]
        if path != "/health":
            assert operation["security"] == [{"bearer": []}]
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearer"]["description"],
    }
    ask_in = schema["components"]["schemas"]["AskIn"]
    assert ask_in["properties"]["question"]["maxLength"] == 2000
    assert ask_in["properties"]["question"]["minLength"] == 1
    assert (ask_in["properties"]["top_k"]["minimum"], ask_in["properties"]["top_k"]["maximum"]) == (1, 50)
    assert ask_in["additionalProperties"] is False
    k = next(p for p in paths["/search"]["get"]["parameters"] if p["name"] == "k")
    assert (k["schema"]["minimum"], k["schema"]["maximum"]) == (1, 50)
    assert set(client.options("/articles/t-wheat-harvest").headers["allow"].split(", ")) == {
        "GET",
        "DELETE",
        "OPTIONS",
    }
    assert client.put("/articles/t-wheat-harvest").headers["allow"] is not None
