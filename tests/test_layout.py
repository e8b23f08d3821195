"""The data folder: the index in ``index/``, the service's keys in ``service.sqlite`` beside it, so that
rebuilding the index keeps every key; a folder of the first layout (index files and keys together in
``meta.sqlite``) is moved on first start, and a move cut short is finished by the next; lost keys stop
the start rather than leave it open."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from api.store.keys import KeyRing
from tests.conftest import NEWS, SEEDS
from tests.servers import free_port, rag, rag_env, serving

QUESTION = {"question": "Why did Russian peacekeepers leave Karabakh?"}


def _tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _first_layout(data: Path) -> str:
    """A data folder as the first layout left it, holding one admin key; returns the key."""
    env = rag_env(data, data.parent / "tiktoken")
    assert rag("ingest", "--quiet", str(SEEDS), str(NEWS), env=env).returncode == 0
    token = rag("keys", "add", "ops", "--scope", "admin", env=env).stdout.strip()
    with closing(sqlite3.connect(data / "service.sqlite")) as db:
        keys = db.execute("SELECT * FROM api_keys").fetchall()
        usage = db.execute("SELECT * FROM api_key_usage").fetchall()
    for path in (data / "index").iterdir():
        path.replace(data / path.name)
    (data / "index").rmdir()
    KeyRing.adopt(data / "meta.sqlite", keys, usage)  # the keys in the index's own file, as before
    (data / "service.sqlite").unlink()
    assert "api_keys" in _tables(data / "meta.sqlite")
    return token


@pytest.mark.slow
def test_a_first_layout_folder_is_moved_on_start_and_keeps_its_keys(tmp_path: Path) -> None:
    data = tmp_path / "data"
    token = _first_layout(data)
    env = rag_env(data, tmp_path / "tiktoken")
    listed = rag("keys", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "ops" in listed.stdout
    assert not (data / "meta.sqlite").exists()
    assert (data / "index" / "meta.sqlite").exists()
    assert (data / "index" / "index.marker").exists()
    assert "api_keys" not in _tables(data / "index" / "meta.sqlite")
    assert "api_keys" in _tables(data / "service.sqlite")
    with serving(env, tmp_path / "server.log") as base:
        assert httpx.post(f"{base}/ask", json=QUESTION, timeout=60).status_code == 401  # keys still hold
        asked = httpx.post(
            f"{base}/ask", json=QUESTION, headers={"authorization": f"Bearer {token}"}, timeout=60
        )
        assert asked.status_code == 200
        assert asked.json()["citations"]


@pytest.mark.slow
def test_rebuilding_the_index_keeps_every_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = rag_env(data, tmp_path / "tiktoken")
    assert rag("ingest", "--quiet", str(SEEDS), env=env).returncode == 0
    assert rag("keys", "add", "ops", "--scope", "admin", env=env).returncode == 0
    shutil.rmtree(data / "index")  # the index's own recovery advice
    rebuilt = rag("ingest", "--quiet", str(SEEDS), env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "ops" in rag("keys", "list", env=env).stdout


@pytest.mark.slow
def test_a_move_cut_short_is_finished_by_the_next_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _first_layout(data)
    with closing(sqlite3.connect(data / "meta.sqlite")) as db:  # what the move does before moving files
        keys = db.execute("SELECT * FROM api_keys").fetchall()
        usage = db.execute("SELECT * FROM api_key_usage").fetchall()
    KeyRing.adopt(data / "service.sqlite", keys, usage)
    (data / ".index-moving").mkdir()
    (data / "meta.sqlite").replace(data / ".index-moving" / "meta.sqlite")  # then the process died
    env = rag_env(data, tmp_path / "tiktoken")
    listed = rag("keys", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "ops" in listed.stdout
    assert not (data / ".index-moving").exists()
    assert {p.name for p in (data / "index").iterdir()} >= {"meta.sqlite", "index.marker"}
    asked = rag("ask", "Why did Russian peacekeepers leave Karabakh?", env=env)
    assert asked.returncode == 0, asked.stderr
    assert "peacekeepers" in asked.stdout


@pytest.mark.slow
def test_lost_keys_refuse_to_start_rather_than_start_open(index_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(index_dir, data)
    env = rag_env(data, tmp_path / "tiktoken")
    assert rag("keys", "add", "ops", "--scope", "admin", env=env).returncode == 0
    (data / "service.sqlite").unlink()
    served = rag("serve", "--port", str(free_port()), env=env, timeout=120)
    assert served.returncode == 2
    assert "service.sqlite is missing" in served.stderr
    (data / "service.sqlite").write_bytes(b"")  # an empty file opens as an empty database
    served = rag("serve", "--port", str(free_port()), env=env, timeout=120)
    assert served.returncode == 2
    assert "holds no API keys" in served.stderr
