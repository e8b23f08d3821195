"""Idempotent ingest, replace and delete; crash-safe writes; reads that race writes, and writes by another
process picked up outside requests; damaged files rebuilt; clear refusal of a corrupt, lost or foreign
index."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from api.config import Settings
from api.web.app import create_app
from index import Embedder, load_paths, make_ingestor, open_index, parse_record
from index.config import IndexSettings
from index.errors import ArticleNotFoundError, IndexCorruptError, IndexMismatchError
from index.records import Article
from index.store import IndexStore
from rag import Answerer
from tests.conftest import NEWS, ROOT, SEED_ID, SEEDS, local_client, make_settings, open_local
from tests.servers import free_port, rag, rag_env


def _ingest(settings: Settings, store: IndexStore, embedder: Embedder, *paths: Path) -> None:
    report = make_ingestor(settings.index, store, embedder).ingest(load_paths(paths), progress=False)
    assert not report.failed


def _chunk_ids(store: IndexStore) -> list[int]:
    return sorted(int(i) for i in store.reader().chunk_ids())


def _story(i: int) -> dict[str, str]:
    return {
        "id": f"zebra-{i}",
        "title": f"Zebra festival {i} in Quillfield",
        "published_at": "2024-05-02",
        "body": f"The zebra festival number {i} opened in Quillfield on Thursday with a parade of painted "
        f"carts. Organisers said festival {i} drew record crowds to the town square.",
    }


def test_reingesting_the_same_articles_changes_nothing(
    settings: Settings, store: IndexStore, embedder: Embedder
) -> None:
    ingestor = make_ingestor(settings.index, store, embedder)
    first = ingestor.ingest(load_paths([SEEDS, NEWS]), progress=False)
    assert len(first.added) == 7
    ids, generation = _chunk_ids(store), store.generation
    files = sorted(p.name for p in settings.index.data_dir.iterdir())
    again = ingestor.ingest(load_paths([SEEDS, NEWS]), progress=False)
    assert (again.added, again.replaced, len(again.unchanged)) == ((), (), 7)
    assert _chunk_ids(store) == ids
    assert store.generation == generation
    assert sorted(p.name for p in settings.index.data_dir.iterdir()) == files


def test_a_changed_article_replaces_its_chunks(
    settings: Settings, store: IndexStore, embedder: Embedder, tmp_path: Path
) -> None:
    path = tmp_path / "story.txt"
    path.write_text("Dam opens\nThe new dam opened on Monday. It holds a lake of water.")
    _ingest(settings, store, embedder, path)
    old = _chunk_ids(store)
    path.write_text("Dam opens\nThe new dam opened on Tuesday after a delay. It holds a lake of water.")
    report = make_ingestor(settings.index, store, embedder).ingest(load_paths([path]), progress=False)
    assert report.replaced == ("story",)
    new = _chunk_ids(store)
    assert not set(old) & set(new)
    assert store.reader().size == len(new)
    assert "Tuesday" in store.reader().articles(["story"])["story"].body


def test_delete_removes_the_article_and_its_vectors(
    settings: Settings, store: IndexStore, embedder: Embedder
) -> None:
    _ingest(settings, store, embedder, SEEDS, NEWS)
    before = store.reader().size
    entry = store.reader().entry(SEED_ID)
    assert entry is not None
    seed_chunks = len(entry.chunk_ids)
    store.delete(SEED_ID)
    assert store.reader().size == before - seed_chunks
    assert not store.reader().articles([SEED_ID])
    with pytest.raises(ArticleNotFoundError):
        store.delete(SEED_ID)
    vector = embedder.embed(["Russian peacekeepers Karabakh"])[0]
    reader = store.reader()
    found = {c.article_id for c, _ in reader.passages([i for i, _ in reader.dense(vector, 50)])}
    assert SEED_ID not in found


def test_reopening_reads_the_same_index(settings: Settings, embedder: Embedder) -> None:
    store = open_local(settings, embedder)
    _ingest(settings, store, embedder, NEWS)
    size, ids = store.reader().size, _chunk_ids(store)
    store.close()
    again = open_local(settings, embedder)
    assert (again.reader().size, _chunk_ids(again)) == (size, ids)


def _saving(settings: Settings, embedder: Embedder) -> IndexStore:
    """A store that saves every segment, however small (the default saves segments of 20,000 chunks)."""
    return IndexStore(settings.index.data_dir, embedder.name, embedder.dimension, persist_min=1)


def test_segments_are_saved_and_reopened(settings: Settings, embedder: Embedder) -> None:
    store = _saving(settings, embedder)
    _ingest(settings, store, embedder, SEEDS, NEWS)
    vector = embedder.embed(["wheat harvest drought"])[0]
    expected = store.reader().dense(vector, 5)
    store.delete("t-wheat-harvest")
    after_delete = store.reader().dense(vector, 5)
    store.close()
    files = sorted(p.name for p in settings.index.data_dir.glob("seg-*.npz"))
    assert len(files) == 2  # one vector and one lexical segment (and the vectors' .faiss file)
    again = _saving(settings, embedder)
    assert again.reader().dense(vector, 5) == after_delete
    assert expected != after_delete
    assert sorted(p.name for p in settings.index.data_dir.glob("seg-*.npz")) == files  # nothing rebuilt
    again.close()


def test_a_missing_segment_file_is_rebuilt_from_sqlite(settings: Settings, embedder: Embedder) -> None:
    store = _saving(settings, embedder)
    _ingest(settings, store, embedder, NEWS)
    vector = embedder.embed(["wheat harvest drought"])[0]
    expected = store.reader().dense(vector, 3)
    store.close()
    for path in settings.index.data_dir.glob("seg-*.npz"):
        path.unlink()
    again = _saving(settings, embedder)
    assert [i for i, _ in again.reader().dense(vector, 3)] == [i for i, _ in expected]
    assert len(list(settings.index.data_dir.glob("seg-*.npz"))) == 2  # saved again
    again.close()


@pytest.mark.parametrize("damage", ["truncated", "appended", "inside"])
def test_a_damaged_segment_file_is_rebuilt_from_sqlite(
    settings: Settings, embedder: Embedder, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A vector file whose vector count is intact (garbage appended, or bytes changed inside) used to pass
    the start-up checks and answer from garbage; the checksum recorded in SQLite now catches it."""
    store = _saving(settings, embedder)
    _ingest(settings, store, embedder, NEWS)
    vector = embedder.embed(["wheat harvest drought"])[0]
    expected = store.reader().dense(vector, 5)
    store.close()
    for path in settings.index.data_dir.glob("seg-*.npz"):
        data = bytearray(path.read_bytes())
        if damage == "truncated":
            path.write_bytes(data[:100])
        elif damage == "appended":
            path.write_bytes(data + b"garbage" * 10)
        else:
            data[-2000:-1000] = os.urandom(1000)
            path.write_bytes(bytes(data))
    again = _saving(settings, embedder)
    assert "does not match its checksum" in caplog.text
    assert again.reader().dense(vector, 5) == expected
    assert again.reader().lexical(["wheat", "harvest"]).top(1)
    again.close()
    caplog.clear()
    reopened = _saving(settings, embedder)  # the rebuilt segments were saved with fresh checksums
    assert "checksum" not in caplog.text
    assert reopened.reader().dense(vector, 5) == expected
    reopened.close()


def test_a_missing_metadata_file_beside_segment_files_stops_start_up(
    settings: Settings, embedder: Embedder
) -> None:
    store = _saving(settings, embedder)
    _ingest(settings, store, embedder, NEWS)
    store.close()
    for path in settings.index.data_dir.glob("meta.sqlite*"):
        path.unlink()
    with pytest.raises(IndexCorruptError, match=r"meta.sqlite is missing, but the folder held an index"):
        open_local(settings, embedder)
    assert len(list(settings.index.data_dir.glob("seg-*.npz"))) == 2  # nothing was deleted


def test_a_corrupt_metadata_file_stops_with_what_to_do(settings: Settings, embedder: Embedder) -> None:
    settings.index.data_dir.mkdir(parents=True)
    (settings.index.data_dir / "meta.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(IndexCorruptError, match=r"run `rag ingest` again"):
        open_local(settings, embedder)


def test_an_index_built_with_another_model_is_refused(settings: Settings, embedder: Embedder) -> None:
    IndexStore(settings.index.data_dir, "some-other-model", embedder.dimension).close()
    with pytest.raises(IndexMismatchError, match="some-other-model"):
        open_local(settings, embedder)
    IndexStore(settings.index.data_dir / "b", embedder.name, 768).close()
    with pytest.raises(IndexMismatchError, match="768"):
        IndexStore(settings.index.data_dir / "b", embedder.name, embedder.dimension)


def test_a_crash_mid_ingest_leaves_a_readable_index_and_loses_nothing_committed(
    tmp_path: Path, embedder: Embedder, tiktoken_dir: Path
) -> None:
    """Kill `rag ingest` with SIGKILL after its first committed batch; the index must open, be
    consistent, and a second ingest must finish the job."""
    corpus = tmp_path / "corpus.jsonl"
    with corpus.open("w") as out:
        for i in range(400):
            body = f"Report {i}: the regional council voted on measure {i} about roads and schools. " * 3
            out.write(json.dumps({"id": f"n{i}", "title": f"Council vote {i}", "body": body}) + "\n")
    data_dir = tmp_path / "data"
    env = {**os.environ, "RAG_DATA_DIR": str(data_dir), "TIKTOKEN_CACHE_DIR": str(tiktoken_dir)}
    process = subprocess.Popen(
        [sys.executable, "-m", "api", "ingest", "--quiet", str(corpus)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and process.poll() is None:
        if (data_dir / "index" / "meta.sqlite").exists():
            try:
                with closing(sqlite3.connect(data_dir / "index" / "meta.sqlite", timeout=1)) as db:
                    committed = db.execute("SELECT COUNT(*) FROM articles").fetchone()[0]
            except sqlite3.OperationalError:
                committed = 0
            if committed:
                break
        time.sleep(0.05)
    assert process.poll() is None, "ingest finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert 0 < committed < 400

    store = open_index(IndexSettings.under(data_dir, tiktoken_dir), embedder)
    articles = store.reader().article_count
    assert articles >= committed
    assert articles % 64 == 0  # whole batches only
    assert store.reader().size == len(store.reader().chunk_ids())
    vector = embedder.embed(["council vote on roads"])[0]
    assert store.reader().dense(vector, 5)
    store.close()

    finish = subprocess.run(
        [sys.executable, "-m", "api", "ingest", "--quiet", str(corpus)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finish.returncode == 0, finish.stderr
    assert f"{articles} unchanged" in finish.stdout
    store = open_index(IndexSettings.under(data_dir, tiktoken_dir), embedder)
    assert store.reader().article_count == 400
    assert store.reader().size == len(store.reader().chunk_ids())
    assert np.unique(store.reader().chunk_ids()).size == store.reader().size


def test_article_round_trip_keeps_metadata(settings: Settings, store: IndexStore, embedder: Embedder) -> None:
    _ingest(settings, store, embedder, NEWS)
    article = store.reader().articles(["t-orchestra-strike"])["t-orchestra-strike"]
    assert isinstance(article, Article)
    assert (article.source, article.authors, str(article.published_at)) == (
        "Example Arts Wire",
        ("Lena Park",),
        "2024-01-19",
    )


def test_sentence_vectors_are_stored_at_ingest_and_deleted_with_the_article(
    settings: Settings, store: IndexStore, embedder: Embedder
) -> None:
    from index.sentences import split_sentences

    _ingest(settings, store, embedder, SEEDS)
    body = store.reader().articles([SEED_ID])[SEED_ID].body
    spans = split_sentences(body)
    stored = store.reader().sentence_vectors(SEED_ID, spans)
    assert set(stored) == set(spans)
    fresh = embedder.embed([body[spans[3].start : spans[3].end]])[0]
    assert float(stored[spans[3]] @ fresh) > 0.999
    store.delete(SEED_ID)
    assert store.reader().sentence_vectors(SEED_ID, spans) == {}


def test_queries_racing_writes_never_fail_and_never_cite_deleted_articles(
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


def test_another_process_s_write_is_picked_up_outside_requests(
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


def test_damaged_vectors_with_an_intact_count_are_rebuilt_not_served(
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


@pytest.mark.slow
def test_a_small_index_without_its_metadata_refuses_to_start(index_dir: Path, tmp_path: Path) -> None:
    """Before: below 20,000 chunks there are no segment files, so the server started empty and open."""
    data = tmp_path / "data"
    shutil.copytree(index_dir, data)
    env = rag_env(data, tmp_path / "tiktoken")
    assert rag("keys", "add", "ops", "--scope", "admin", env=env).returncode == 0
    assert not list((data / "index").glob("seg-*"))  # a small index: nothing but SQLite and its marker
    for path in (data / "index").glob("meta.sqlite*"):
        path.unlink()
    served = rag("serve", "--port", str(free_port()), env=env, timeout=120)
    assert served.returncode == 2
    assert "meta.sqlite is missing, but the folder held an index of articles" in served.stderr
    assert not (data / "index" / "meta.sqlite").exists()  # nothing was created in its place
    listed = rag("keys", "list", env=env)  # the keys live apart from the index (issue 17)
    assert listed.returncode == 0, listed.stderr
    assert "ops" in listed.stdout


@pytest.mark.slow
def test_a_replaced_metadata_file_is_not_taken_for_a_new_index(index_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(index_dir, data)
    env = rag_env(data, tmp_path / "tiktoken")
    for path in (data / "index").glob("meta.sqlite*"):
        path.unlink()
    (data / "index" / "meta.sqlite").write_bytes(b"")  # an empty file opens as an empty database
    served = rag("serve", "--port", str(free_port()), env=env, timeout=120)
    assert served.returncode == 2
    assert "holds no articles" in served.stderr
