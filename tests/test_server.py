"""A real `rag serve` process on 127.0.0.1, and the `rag` command line, end to end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, SEED_ID, SEEDS

pytestmark = pytest.mark.slow


def _rag(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def env(tmp_path: Path, tiktoken_dir: Path) -> dict[str, str]:
    return {**os.environ, "RAG_DATA_DIR": str(tmp_path / "data"), "TIKTOKEN_CACHE_DIR": str(tiktoken_dir)}


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    assert _rag("ingest", "--quiet", str(SEEDS), env=env).returncode == 0
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "api", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


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
    data = Path(env["RAG_DATA_DIR"])
    data.mkdir(parents=True)
    (data / "meta.sqlite").write_bytes(b"garbage" * 500)
    result = _rag("serve", "--port", str(_free_port()), env=env, timeout=120)
    assert result.returncode == 2
    assert "unreadable" in result.stderr
    assert "run `rag ingest` again" in result.stderr


def test_cli_ingest_reports_bad_files_and_keeps_the_rest(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_text("Good story\nThe harbour bridge reopened on Monday after repairs.")
    (folder / "broken.jsonl").write_text("{not json\n")
    result = _rag("ingest", "--quiet", str(folder), env=env)
    assert result.returncode == 1
    assert f"{folder / 'broken.jsonl'}:1: invalid JSON" in result.stderr
    assert "1 added" in result.stdout

    again = _rag("ingest", "--quiet", str(folder / "good.txt"), env=env)
    assert again.returncode == 0
    assert "0 added, 0 replaced, 1 unchanged" in again.stdout

    asked = _rag("ask", "When did the harbour bridge reopen?", env=env)
    assert asked.returncode == 0, asked.stderr
    assert "The harbour bridge reopened on Monday after repairs. [1]" in asked.stdout

    assert _rag("delete", "good", env=env).returncode == 0
    missing = _rag("delete", "good", env=env)
    assert missing.returncode == 2
    assert "no article with id 'good'" in missing.stderr
