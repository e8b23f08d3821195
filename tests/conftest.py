"""Shared fixtures: one real packaged model per session, real FAISS and SQLite in temporary folders."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from index import PackagedEmbedder, load_paths, make_ingestor, open_store
from index.config import Settings
from index.store import IndexStore
from rag import Answerer

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
SEED_FILE = SEEDS / "000_555f4d2950849840.txt"
SEED_ID = "000_555f4d2950849840"
NEWS = Path(__file__).resolve().parent / "data" / "news.jsonl"

LOCAL = "http://127.0.0.1:8000"
"""Where in-process clients address the app: open (keyless) mode answers loopback names only."""

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def local_client(app: Litestar) -> TestClient[Litestar]:
    """The real app in-process, addressed as 127.0.0.1 (as `rag serve` is by default)."""
    return TestClient(app=app, base_url=LOCAL)


@pytest.fixture(scope="session")
def embedder() -> PackagedEmbedder:
    return PackagedEmbedder()


@pytest.fixture(scope="session")
def tiktoken_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiktoken")


def make_settings(data_dir: Path, tiktoken_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, tiktoken_cache_dir=tiktoken_dir)


@pytest.fixture
def settings(tmp_path: Path, tiktoken_dir: Path) -> Settings:
    return make_settings(tmp_path / "data", tiktoken_dir)


@pytest.fixture
def store(settings: Settings, embedder: PackagedEmbedder) -> Iterator[IndexStore]:
    opened = open_store(settings, embedder)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def news_settings(tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path) -> Settings:
    return make_settings(tmp_path_factory.mktemp("news") / "data", tiktoken_dir)


@pytest.fixture(scope="session")
def news_answerer(news_settings: Settings, embedder: PackagedEmbedder) -> Iterator[Answerer]:
    """The seed article plus six short unrelated news items, indexed once per session. Read-only."""
    store = open_store(news_settings, embedder)
    report = make_ingestor(news_settings, store, embedder).ingest(load_paths([SEEDS, NEWS]), progress=False)
    assert not report.failed
    yield Answerer(store, embedder, news_settings)
    store.close()


@pytest.fixture
def seed_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "seeds"
    shutil.copytree(SEEDS, folder)
    return folder


@pytest.fixture
def client(tmp_path: Path, tiktoken_dir: Path, embedder: PackagedEmbedder) -> Iterator[TestClient[Litestar]]:
    """The real app in-process over the seed and the short news items (request bodies up to 20 kB)."""
    settings = make_settings(tmp_path / "data", tiktoken_dir)
    store = open_store(settings, embedder)
    make_ingestor(settings, store, embedder).ingest(load_paths([SEEDS, NEWS]), progress=False)

    def opener(_: Settings) -> Answerer:
        return Answerer(store, embedder, settings)

    small_body = Settings(data_dir=settings.data_dir, tiktoken_cache_dir=tiktoken_dir, max_body_bytes=20_000)
    with local_client(create_app(small_body, opener=opener, background=False)) as test_client:
        yield test_client
    store.close()
