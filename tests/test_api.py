"""The real Litestar app in-process: every route, and RFC 9457 problem details for every error; what a
posted article may hold (markup and control characters are stored as text, ids are of a safe set), over
a real `rag serve` too."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.config import Settings
from api.web.app import create_app
from index import Embedder
from rag import Answerer
from tests.conftest import SEED_ID, Server, local_client, make_settings, open_local

PROBLEM = "application/problem+json"


def _problem(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith(PROBLEM)  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status
    assert "Traceback" not in response.text  # type: ignore[attr-defined]
    return body


def test_ask_returns_a_cited_answer(client: TestClient[Litestar]) -> None:
    response = client.post("/ask", json={"question": "Why did Russian peacekeepers leave Karabakh?"})
    assert response.status_code == 200
    body = response.json()
    assert body["abstained"] is False
    first = body["citations"][0]
    assert first["article_id"] == SEED_ID
    assert set(first) == {
        *("n", "article_id", "title", "source", "url", "published_at", "quote", "span", "headline_only")
    }
    assert first["headline_only"] is False
    assert first["quote"] in body["answer"]
    assert body["passages"][0]["article_id"] == SEED_ID
    assert body["passages"][0]["also_reported"] == []
    assert set(body["timings_ms"]) == {"embed", "retrieve", "compose", "total"}


def test_ask_with_filters_and_as_of(client: TestClient[Litestar]) -> None:
    response = client.post(
        "/ask",
        json={
            "question": "Who won the marathon?",
            "as_of": "2024-12-31",
            "top_k": 3,
            "filters": {"sources": ["Example Sports"], "published_after": "2024-01-01"},
        },
    )
    body = response.json()
    assert {p["article_id"] for p in body["passages"]} == {"t-marathon-record"}
    assert body["citations"][0]["published_at"] == "2024-04-21"


def test_search_articles_and_delete(client: TestClient[Litestar]) -> None:
    passages = client.get("/search", params={"q": "drought wheat", "k": 2}).json()["passages"]
    assert passages[0]["article_id"] == "t-wheat-harvest"
    assert len(passages) == 2
    article = client.get("/articles/t-wheat-harvest").json()
    assert article["source"] == "Example Farm Report"
    before = client.get("/health").json()["articles"]
    assert client.delete("/articles/t-wheat-harvest").status_code == 204
    assert client.get("/health").json()["articles"] == before - 1
    _problem(client.get("/articles/t-wheat-harvest"), 404)
    _problem(client.delete("/articles/t-wheat-harvest"), 404)
    passages = client.get("/search", params={"q": "drought wheat", "k": 7}).json()["passages"]
    assert "t-wheat-harvest" not in {p["article_id"] for p in passages}


def test_post_articles_ingests_json_and_is_idempotent(client: TestClient[Litestar]) -> None:
    article = {
        "id": "api-1",
        "title": "Ferry service resumes",
        "source": "Example Harbour",
        "published_at": "2024-07-01",
        "body": "The island ferry resumed daily crossings on Monday after repairs to its engine.",
    }
    first = client.post("/articles", json=[article, {"id": "bad", "body": "Advertisement"}])
    assert first.status_code == 200
    assert first.json()["added"] == ["api-1"]
    assert first.json()["failed"] == [
        "article[1]: no article text left after cleaning, and no headline or address to index"
    ]
    assert client.post("/articles", json=article).json()["unchanged"] == ["api-1"]
    changed = client.post("/articles", json={**article, "body": article["body"] + " Fares are unchanged."})
    assert changed.json()["replaced"] == ["api-1"]
    answer = client.post("/ask", json={"question": "When did the island ferry resume crossings?"}).json()
    assert answer["citations"][0]["article_id"] == "api-1"


def test_health_and_openapi(client: TestClient[Litestar]) -> None:
    health = client.get("/health").json()
    assert health == {"status": "ready", "articles": 7, "chunks": health["chunks"], "generation": 1}
    assert health["chunks"] >= 7
    schema = client.get("/schema/openapi.json").json()
    assert {"/ask", "/search", "/articles", "/health"} <= set(schema["paths"])


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"question": ""}, 400, "length >= 1"),
        ({"question": "   \t"}, 400, "matching regex"),
        ({"question": "x" * 2001}, 400, "length <= 2000"),
        ({"question": "ok", "top_k": 0}, 400, ">= 1"),
        ({"question": "ok", "top_k": 51}, 400, "<= 50"),
        (
            {
                "question": "ok",
                "filters": {"published_after": "2024-02-01", "published_before": "2024-01-01"},
            },
            422,
            "later than",
        ),
        ({"question": "ok", "as_of": "not a date"}, 400, ""),
        ({"question": "ok", "surprise": 1}, 400, ""),
        ({}, 400, ""),
    ],
)
def test_bad_questions_get_problem_details(
    client: TestClient[Litestar], payload: dict[str, object], status: int, fragment: str
) -> None:
    body = _problem(client.post("/ask", json=payload), status)
    assert fragment in str(body)


def test_broken_json_is_a_400_problem(client: TestClient[Litestar]) -> None:
    response = client.post(
        "/ask", content=b'{"question": "unterminated', headers={"content-type": "application/json"}
    )
    _problem(response, 400)


def test_a_body_over_the_limit_is_a_413_problem(client: TestClient[Litestar]) -> None:
    response = client.post("/ask", json={"question": "x" * 30_000})
    _problem(response, 413)


def test_empty_and_unusable_article_posts(client: TestClient[Litestar]) -> None:
    _problem(client.post("/articles", json=[]), 400)
    assert "body" in str(_problem(client.post("/articles", json=[{"title": "no body"}]), 400))
    body = _problem(client.post("/articles", json=[{"body": "Advertisement"}]), 422)
    assert "no article text left after cleaning" in str(body["detail"])
    _problem(client.post("/articles", json="just a string"), 400)


def test_everything_is_503_until_the_index_is_loaded(
    tmp_path: Path, tiktoken_dir: Path, embedder: Embedder
) -> None:
    settings = make_settings(tmp_path / "data", tiktoken_dir)
    release = threading.Event()

    def slow_opener(s: Settings) -> Answerer:
        release.wait(30)
        return Answerer(open_local(s, embedder), embedder, s.answers)

    with local_client(create_app(settings, opener=slow_opener)) as client:
        body = _problem(client.get("/health"), 503)
        assert "loading" in str(body["detail"])
        assert client.get("/health").headers["retry-after"] == "5"
        _problem(client.post("/ask", json={"question": "anything?"}), 503)
        release.set()
        for _ in range(100):
            if client.get("/health").status_code == 200:
                break
            threading.Event().wait(0.1)
        assert client.get("/health").json()["status"] == "ready"


def test_a_corrupt_index_keeps_the_service_unready_with_the_reason(
    tmp_path: Path, tiktoken_dir: Path, embedder: Embedder
) -> None:
    settings = make_settings(tmp_path / "data", tiktoken_dir)
    settings.index.data_dir.mkdir(parents=True)
    (settings.index.data_dir / "meta.sqlite").write_bytes(b"garbage" * 500)

    def opener(s: Settings) -> Answerer:
        return Answerer(open_local(s, embedder), embedder, s.answers)

    with local_client(create_app(settings, opener=opener, background=False)) as client:
        body = _problem(client.get("/health"), 503)
        assert body["detail"] == "the index could not be loaded; the server log says why"
        assert str(tmp_path) not in client.get("/health").text  # no filesystem paths reach a client


def test_health_is_ready_only_once_every_part_a_request_needs_is_loaded(
    tmp_path: Path, tiktoken_dir: Path, embedder: Embedder
) -> None:
    """The index loads, but a later part does not (here the writer lock, whose file is a folder): /health
    is 503 like every route, not 'ready' in front of an /ask that answers 503 (a load balancer's check
    would let requests through too early)."""
    settings = make_settings(tmp_path / "data", tiktoken_dir)
    (settings.service.data_dir / "writer.lock").mkdir(parents=True)

    def opener(s: Settings) -> Answerer:
        return Answerer(open_local(s, embedder), embedder, s.answers)

    with local_client(create_app(settings, opener=opener, background=False)) as client:
        body = _problem(client.get("/health"), 503)
        assert body["detail"] == "the index could not be loaded; the server log says why"
        _problem(client.post("/ask", json={"question": "anything?"}), 503)


def test_markup_is_stored_and_returned_as_text(client: TestClient[Litestar]) -> None:
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


@pytest.mark.slow
@pytest.mark.parametrize("article_id", [".", "..", "a/b", "a b", "caf\u00e9", "x\n", ".hidden"])
def test_ids_are_of_a_safe_character_set(open_server: Server, article_id: str) -> None:
    """Before: "." and ".." were stored, and could not be deleted over HTTP."""
    response = httpx.post(
        f"{open_server.base}/articles", json={"id": article_id, "body": "The bus ran late."}
    )
    _problem(response, 400)


@pytest.mark.slow
def test_control_characters_are_not_stored(open_server: Server) -> None:
    article = {
        "id": "controls",
        "title": "Harbour\x00 re\x1fopens",
        "source": "Harbour\x07 Wire",
        "authors": ["Ann\x00 Lee"],
        "body": "The harbour\x00 reopened on Monday.\x0bFishing boats returned\x1b the same afternoon.",
    }
    assert httpx.post(f"{open_server.base}/articles", json=article).status_code == 200
    stored = httpx.get(f"{open_server.base}/articles/controls").json()
    assert (stored["title"], stored["source"], stored["authors"]) == (
        "Harbour reopens",
        "Harbour Wire",
        ["Ann Lee"],
    )
    assert stored["body"] == "The harbour reopened on Monday.\n\nFishing boats returned the same afternoon."
