"""POST /ask/stream: Server-Sent Events over a real server, and heartbeats in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.web.app import create_app
from index import Embedder, load_paths, make_ingestor
from rag import ABSTAIN_TEXT, Answerer
from tests.conftest import NEWS, SEED_ID, SEEDS, local_client, make_settings, open_local
from tests.servers import rag, rag_env, serving

KARABAKH = {"question": "Why did Russian peacekeepers leave Karabakh?"}


def _events(text: str) -> list[tuple[str, object]]:
    """(event, data) pairs, and ("comment", text) for comment lines, in order."""
    found: list[tuple[str, object]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event, data = "message", []
        for line in block.split("\n"):
            if line.startswith(":"):
                found.append(("comment", line[1:].strip()))
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            found.append((event, json.loads("\n".join(data))))
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path) -> Iterator[tuple[str, str]]:
    folder = tmp_path_factory.mktemp("stream")
    env = rag_env(folder / "data", tiktoken_dir)
    assert rag("ingest", "--quiet", str(SEEDS), str(NEWS), env=env).returncode == 0
    key = rag("keys", "add", "reader", "--scope", "ask", env=env).stdout.strip()
    with serving(env, folder / "server.log") as base:
        yield base, key


@pytest.mark.slow
def test_events_come_in_order_and_the_stream_closes(server: tuple[str, str]) -> None:
    base, key = server
    headers = {"authorization": f"Bearer {key}"}
    with httpx.stream("POST", f"{base}/ask/stream", json=KARABAKH, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"]
        text = response.read().decode()  # returns only once the server has closed the stream
    events = [e for e in _events(text) if e[0] != "comment"]
    names = [name for name, _ in events]
    assert names[0] == "sources"
    assert names[-1] == "done"
    assert set(names[1:-1]) == {"sentence"}
    citations = events[0][1]["citations"]  # type: ignore[index]
    assert citations[0]["article_id"] == SEED_ID
    first = events[1][1]
    assert first["cites"] == [1]  # type: ignore[index]
    assert "withdrawal of Russian peacekeepers" in " ".join(d["text"] for n, d in events if n == "sentence")  # type: ignore[index]
    assert events[-1][1]["abstained"] is False  # type: ignore[index]
    assert set(events[-1][1]["timings_ms"]) >= {"embed", "retrieve", "compose", "total"}  # type: ignore[index]


@pytest.mark.slow
def test_an_unanswerable_question_streams_an_abstention(server: tuple[str, str]) -> None:
    base, key = server
    response = httpx.post(
        f"{base}/ask/stream",
        json={"question": "What is the boiling point of liquid nitrogen in kelvin?"},
        headers={"authorization": f"Bearer {key}"},
        timeout=60,
    )
    events = _events(response.text)
    sentences = [d for n, d in events if n == "sentence"]
    assert sentences == [{"text": ABSTAIN_TEXT, "cites": [], "verified": True}]
    assert events[-1][0] == "done"
    assert events[-1][1]["abstained"] is True  # type: ignore[index]
    assert events[0][0] == "sources"
    assert events[0][1]["citations"]  # type: ignore[index]  # the closest sources, still


@pytest.mark.slow
def test_a_bad_question_is_an_error_event_and_the_same_guard_applies(server: tuple[str, str]) -> None:
    base, key = server
    contradictory = {
        "question": "Who won?",
        "filters": {"published_after": "2024-05-01", "published_before": "2024-01-01"},
    }
    response = httpx.post(
        f"{base}/ask/stream", json=contradictory, headers={"authorization": f"Bearer {key}"}, timeout=60
    )
    assert response.status_code == 200
    events = _events(response.text)
    assert [name for name, _ in events] == ["error"]
    problem = events[0][1]
    assert problem["status"] == 422  # type: ignore[index]
    assert "later than" in problem["detail"]  # type: ignore[index]
    # Malformed requests, keys and content types are refused before any stream starts, as for /ask.
    assert httpx.post(f"{base}/ask/stream", json=KARABAKH, timeout=30).status_code == 401
    empty = httpx.post(
        f"{base}/ask/stream", json={"question": ""}, headers={"authorization": f"Bearer {key}"}
    )
    assert empty.status_code == 400
    assert empty.headers["content-type"].startswith("application/problem+json")
    plain = httpx.post(
        f"{base}/ask/stream",
        content=json.dumps(KARABAKH),
        headers={"authorization": f"Bearer {key}", "content-type": "text/plain"},
    )
    assert plain.status_code == 415


def test_heartbeats_while_an_answer_is_being_made(
    tmp_path: Path, tiktoken_dir: Path, embedder: Embedder
) -> None:
    settings = make_settings(tmp_path / "data", tiktoken_dir)
    store = open_local(settings, embedder)
    make_ingestor(settings.index, store, embedder).ingest(load_paths([SEEDS]), progress=False)
    app = create_app(
        settings, opener=lambda _: Answerer(store, embedder), background=False, heartbeat_seconds=0.0001
    )
    with local_client(app) as client:
        response = client.post("/ask/stream", json=KARABAKH)
    events = _events(response.text)
    names = [name for name, _ in events]
    assert names[0] == "comment"
    assert events[0][1] == "keepalive"
    assert names.index("sources") > 0
    assert names[-1] == "done"
    store.close()
