"""A real `rag serve` process on 127.0.0.1, and the `rag` command line, end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SEED_ID, SEEDS
from tests.servers import free_port, rag, rag_env, serving

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path, tiktoken_dir: Path) -> dict[str, str]:
    return rag_env(tmp_path / "data", tiktoken_dir)


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    assert rag("ingest", "--quiet", str(SEEDS), env=env).returncode == 0
    with serving(env, tmp_path / "server.log") as base:
        yield base


def test_a_real_server_answers_the_missions_question(server: str) -> None:
    response = httpx.post(
        f"{server}/ask", json={"question": "Why did Russian peacekeepers leave Karabakh?"}, timeout=30
    )
    assert response.status_code == 200
    body = response.json()
    assert body["citations"][0]["article_id"] == SEED_ID
    assert "withdrawal of Russian peacekeepers" in body["answer"]
    problem = httpx.post(f"{server}/ask", content=b"{oops", headers={"content-type": "application/json"})
    assert problem.status_code == 400
    assert problem.headers["content-type"].startswith("application/problem+json")


def test_serve_stops_with_a_clear_message_on_a_corrupt_index(env: dict[str, str]) -> None:
    data = Path(env["RAG_DATA_DIR"]) / "index"
    data.mkdir(parents=True)
    (data / "meta.sqlite").write_bytes(b"garbage" * 500)
    result = rag("serve", "--port", str(free_port()), env=env, timeout=120)
    assert result.returncode == 2
    assert "unreadable" in result.stderr
    assert "run `rag ingest` again" in result.stderr


def test_cli_ingest_reports_bad_files_and_keeps_the_rest(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_text("Good story\nThe harbour bridge reopened on Monday after repairs.")
    (folder / "broken.jsonl").write_text("{not json\n")
    result = rag("ingest", "--quiet", str(folder), env=env)
    assert result.returncode == 1
    assert f"{folder / 'broken.jsonl'}:1: invalid JSON" in result.stderr
    assert "1 added" in result.stdout

    again = rag("ingest", "--quiet", str(folder / "good.txt"), env=env)
    assert again.returncode == 0
    assert "0 added, 0 replaced, 1 unchanged" in again.stdout

    asked = rag("ask", "When did the harbour bridge reopen?", env=env)
    assert asked.returncode == 0, asked.stderr
    assert "The harbour bridge reopened on Monday after repairs. [1]" in asked.stdout

    assert rag("delete", "good", env=env).returncode == 0
    missing = rag("delete", "good", env=env)
    assert missing.returncode == 2
    assert "no article with id 'good'" in missing.stderr
