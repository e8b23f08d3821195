"""Shared fixtures: one real packaged model per session, real FAISS and SQLite in temporary folders."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.config import Settings
from api.web.app import create_app
from index import Embedder, load_paths, make_ingestor, packaged_embedder
from index.store import IndexStore
from rag import Answerer
from tests.servers import rag, rag_env, serving
from tests.sites import Site, serve_site

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
def embedder() -> Embedder:
    return packaged_embedder()


@pytest.fixture(scope="session")
def tiktoken_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiktoken")


@contextmanager
def local_cluster(workers: int) -> Iterator[tuple[Any, list[Any]]]:
    """A Ray cluster simulated on this machine: a head and ``workers`` nodes of one CPU each, the driver
    connected. Ray starts its workers at nice 15, where any busy process beside them makes the shard
    actors, which answer every question, wait behind it (issue 29): a cluster serving questions runs
    them at 0 (README), and so do the tests'."""
    import ray
    from ray.cluster_utils import Cluster

    from index.cluster import NAMESPACE

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_worker_niceness", "0")  # Ray's own spelling of the setting
        made = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        nodes = [made.add_node(num_cpus=1) for _ in range(workers)]
        made.wait_for_nodes()
    ray.init(address=made.address, namespace=NAMESPACE, log_to_driver=False)
    try:
        yield made, nodes
    finally:
        ray.shutdown()
        made.shutdown()  # type: ignore[no-untyped-call]


def open_local(settings: Settings, embedder: Embedder) -> IndexStore:
    """The index of ``settings`` on this machine (what ``index.open_index`` opens without a cluster)."""
    return IndexStore(settings.index.data_dir, embedder.name, embedder.dimension)


def make_settings(data_dir: Path, tiktoken_dir: Path) -> Settings:
    """The service's settings for the data folder ``data_dir`` (the index in its ``index/`` folder)."""
    return Settings.under(data_dir, tiktoken_dir)


@pytest.fixture
def settings(tmp_path: Path, tiktoken_dir: Path) -> Settings:
    return make_settings(tmp_path / "data", tiktoken_dir)


@pytest.fixture
def store(settings: Settings, embedder: Embedder) -> Iterator[IndexStore]:
    opened = open_local(settings, embedder)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def news_settings(tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path) -> Settings:
    return make_settings(tmp_path_factory.mktemp("news") / "data", tiktoken_dir)


@pytest.fixture(scope="session")
def news_answerer(news_settings: Settings, embedder: Embedder) -> Iterator[Answerer]:
    """The seed article plus six short unrelated news items, indexed once per session. Read-only."""
    store = open_local(news_settings, embedder)
    ingestor = make_ingestor(news_settings.index, store, embedder)
    report = ingestor.ingest(load_paths([SEEDS, NEWS]), progress=False)
    assert not report.failed
    yield Answerer(store, embedder, news_settings.answers)
    store.close()


@pytest.fixture
def seed_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "seeds"
    shutil.copytree(SEEDS, folder)
    return folder


@pytest.fixture
def client(tmp_path: Path, tiktoken_dir: Path, embedder: Embedder) -> Iterator[TestClient[Litestar]]:
    """The real app in-process over the seed and the short news items (request bodies up to 20 kB)."""
    settings = make_settings(tmp_path / "data", tiktoken_dir)
    store = open_local(settings, embedder)
    make_ingestor(settings.index, store, embedder).ingest(load_paths([SEEDS, NEWS]), progress=False)

    def opener(_: Settings) -> Answerer:
        return Answerer(store, embedder, settings.answers)

    small_body = Settings.under(settings.service.data_dir, tiktoken_dir, max_body_bytes=20_000)
    with local_client(create_app(small_body, opener=opener, background=False)) as test_client:
        yield test_client
    store.close()


@pytest.fixture
def keyed_client(
    tmp_path: Path, tiktoken_dir: Path, embedder: Embedder
) -> Iterator[tuple[TestClient[Litestar], dict[str, str]]]:
    """As ``client``, with keys: ``boss`` (admin) and ``alice``, ``bob``, ``carol`` (watch), by name; the
    watches are checked every 0.1 s."""
    from api.store.keys import KeyRing

    settings = make_settings(tmp_path / "data", tiktoken_dir)
    store = open_local(settings, embedder)
    make_ingestor(settings.index, store, embedder).ingest(load_paths([SEEDS, NEWS]), progress=False)
    ring = KeyRing(settings.service.state_path)
    tokens = {
        name: ring.add(name, "admin" if name == "boss" else "watch")
        for name in ("boss", "alice", "bob", "carol")
    }
    ring.close()

    def opener(_: Settings) -> Answerer:
        return Answerer(store, embedder, settings.answers)

    fast = Settings.under(settings.service.data_dir, tiktoken_dir, watch_check_seconds=0.1)
    with local_client(create_app(fast, opener=opener, background=False)) as test_client:
        yield test_client, tokens
    store.close()


@pytest.fixture
def site() -> Iterator[Site]:
    """A small web site on 127.0.0.1 (tests/sites.py)."""
    with serve_site() as served:
        yield served


@pytest.fixture
def settings_store(
    tmp_path: Path, tiktoken_dir: Path, embedder: Embedder
) -> Iterator[tuple[Settings, IndexStore]]:
    """The settings of a data folder and its store, holding the seed and the short news items."""
    settings = make_settings(tmp_path / "data", tiktoken_dir)
    store = open_local(settings, embedder)
    make_ingestor(settings.index, store, embedder).ingest(load_paths([SEEDS, NEWS]), progress=False)
    yield settings, store
    store.close()


@dataclass
class Server:
    """A `rag serve` process on 127.0.0.1 over a copy of ``index_dir``."""

    base: str
    port: int
    env: dict[str, str]
    log: Path
    data: Path


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path) -> Path:
    """The seed and the short news items, ingested once by `rag ingest`; servers and tests run on copies."""
    data = tmp_path_factory.mktemp("served") / "data"
    ingested = rag("ingest", "--quiet", str(SEEDS), str(NEWS), env=rag_env(data, tiktoken_dir))
    assert ingested.returncode == 0, ingested.stderr
    return data


def serve_copy(
    index_dir: Path, tiktoken_dir: Path, folder: Path, *args: str, keys: tuple[str, ...] = ()
) -> Iterator[tuple[Server, list[str]]]:
    """`rag serve` (``args`` appended) on a copy of ``index_dir`` in ``folder``, with a key made by `rag keys
    add` for each of ``keys``; yields the server and the keys' tokens once, and stops it after."""
    data = folder / "data"
    shutil.copytree(index_dir, data)
    env = rag_env(data, tiktoken_dir)
    tokens = []
    for spec in keys:
        made = rag("keys", "add", *spec.split(), env=env)
        assert made.returncode == 0, made.stderr
        tokens.append(made.stdout.strip())
    log = folder / "server.log"
    with serving(env, log, *args) as base:
        yield Server(base, int(base.rsplit(":", 1)[1]), env, log, data), tokens


@pytest.fixture(scope="session")
def open_server(
    index_dir: Path, tiktoken_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`rag serve` with no keys (open mode) and no per-address limit, one for the session."""
    folder = tmp_path_factory.mktemp("open")
    for server, _ in serve_copy(index_dir, tiktoken_dir, folder, "--rate-per-address", "0"):
        yield server
