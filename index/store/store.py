"""The index on disk and in memory: SQLite is the truth; a vector index, a lexical index and a catalog
are kept in memory beside it, their large segments saved as checksummed files.

Readers never see a write in progress. Every query takes one immutable ``Snapshot`` (catalog, vector
and lexical readers of one generation) and works on it alone; a write commits to SQLite, applies the
change to the in-memory indexes (a cost of the batch's size, not the corpus's: see vectors.py and
lexical.py) and publishes the next snapshot with one reference swap. Text (chunks, article bodies) is
read from SQLite by id at the end of a query, in single statements; an id whose row a later write
removed is skipped, so an article deleted before a query began can never be cited.

Writes are crash-safe by construction: each is one SQLite transaction that also bumps a
``generation`` counter. Segment files are derived: a segment of at least ``persist_min`` chunks is
written (temporary file, fsync, rename) with its SHA-256 recorded in SQLite, and dropped when a merge
replaces it. Opening loads the recorded segments whose checksums hold, marks the chunks SQLite no longer
has as removed, and builds whatever no segment covers from SQLite rows (chunk vectors and the tokens
stored beside them, so nothing is embedded or tokenized again).

Another process may write to the same index (``rag ingest`` while ``rag serve`` runs): writers take
SQLite's write lock, and a process whose memory is behind the database catches up by the difference
(chunk ids added and removed since), never by a rebuild. ``watch`` starts a thread that does so, so no
request ever waits for it.

Near-duplicate articles (syndicated or updated copies) share a ``story_id``, assigned at write time
from MinHash signatures (index/dedup.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from index.chunk import ChunkDraft, passage_text
from index.dedup import StoryIndex, signature
from index.embed import Vectors
from index.errors import ArticleNotFoundError, IndexCorruptError, IndexMismatchError
from index.records import Article, Chunk, Span
from index.store import lexical as lexical_segments
from index.store import vectors as vector_segments
from index.store.catalog import Catalog, CatalogEntry
from index.store.lexical import SegmentedBM25, Vocabulary
from index.store.markers import DB_NAME, INDEX_MARKER, mark, marked, refuse_lost, require_metadata
from index.store.markers import RECOVER as _RECOVER
from index.store.vectors import SegmentedVectors
from index.store.window import EVERYTHING, Layout, Window
from index.terms import tokenize

log = logging.getLogger("index.store")

SCHEMA_VERSION = "4"
DEFAULT_WATCH_SECONDS = 1.0
DEFAULT_PERSIST_MIN = 20_000
_BUSY_MS = 60_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS articles (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL, source TEXT, url TEXT,
    published_at TEXT, authors TEXT NOT NULL, content_hash TEXT NOT NULL, origin TEXT NOT NULL,
    ingested_at TEXT NOT NULL, story_id TEXT NOT NULL, minhash BLOB, title_terms TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    article_id TEXT NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
    text TEXT NOT NULL, n_tokens INTEGER NOT NULL, vector BLOB NOT NULL, terms TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_article ON chunks(article_id);
CREATE TABLE IF NOT EXISTS sentences (
    article_id TEXT NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (article_id, start)
);
CREATE TABLE IF NOT EXISTS terms (id INTEGER PRIMARY KEY, term TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS segments (
    name TEXT PRIMARY KEY, kind TEXT NOT NULL, checksum TEXT NOT NULL, chunks INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS articles_published ON articles(published_at);
"""
_ARTICLE_COLUMNS = "a.id, a.title, a.body, a.source, a.url, a.published_at, a.authors, a.origin"


def quantize(vectors: Vectors) -> list[bytes]:
    """Sentence vectors as int8 with one float32 scale each: 388 bytes instead of 1,536 at 384
    dimensions (cosines move by about 0.001; the eval gate holds)."""
    scales = np.maximum(np.abs(vectors).max(axis=1), 1e-12) / 127.0
    codes = np.clip(np.rint(vectors / scales[:, None]), -127, 127).astype(np.int8)
    return [
        scale.astype(np.float32).tobytes() + code.tobytes() for scale, code in zip(scales, codes, strict=True)
    ]


def dequantize(blob: bytes) -> Vectors:
    scale = np.frombuffer(blob[:4], dtype=np.float32)[0]
    vector: Vectors = np.frombuffer(blob[4:], dtype=np.int8).astype(np.float32) * scale
    return vector


class Snapshot:
    """One generation of the index, frozen: what a query reads from start to end."""

    def __init__(
        self,
        generation: int,
        catalog: Catalog,
        vectors: vector_segments.VectorReader,
        lexical: lexical_segments.LexicalReader,
        dimension: int,
    ) -> None:
        self.generation = generation
        self.catalog = catalog
        self.vector_reader = vectors
        self.lexical = lexical
        self.dimension = dimension

    @property
    def size(self) -> int:
        """Live chunks."""
        return self.catalog.chunks

    def chunk_ids(self) -> npt.NDArray[np.int64]:
        """Every live chunk id, ascending."""
        return np.flatnonzero(self.catalog.chunk_slot >= 0).astype(np.int64)

    def search(self, query: Vectors, k: int, window: Window = EVERYTHING) -> list[tuple[int, float]]:
        """Top ``k`` (chunk id, inner product) for one query vector inside ``window``."""
        return self.vector_reader.search(query, k, window)

    def vectors(self, ids: npt.NDArray[np.int64]) -> Vectors:
        """The stored vectors of chunk ``ids`` (all of them must be in this snapshot)."""
        if not ids.size:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.vector_reader.vectors(ids)


@dataclass(frozen=True)
class ArticleWrite:
    """One article with its chunks and sentences and their vectors, ready to store."""

    article: Article
    chunks: Sequence[ChunkDraft]
    vectors: Vectors
    sentences: Sequence[Span] = ()
    sentence_vectors: Vectors | None = None
    """Vectors of ``sentences``, kept so answers need not embed sentences at query time."""
    story: str | None = None
    """The story the article belongs to, when the writer knows it (a cluster's ingest decides across all
    shards); otherwise the store finds near-duplicates among its own articles."""


def start_watcher(
    refresh: Callable[[], object], interval: float, stop: threading.Event, what: str
) -> threading.Thread:
    """A daemon thread calling ``refresh`` every ``interval`` seconds until ``stop`` is set; a failure
    is logged and retried at the next tick."""

    def loop() -> None:
        while not stop.wait(interval):
            try:
                refresh()
            except Exception:
                log.exception("picking up the %s's latest writes failed; retrying", what)

    watcher = threading.Thread(target=loop, name=f"{what}-watch", daemon=True)
    watcher.start()
    return watcher


class IndexStore:
    """SQLite metadata plus in-memory vector and lexical segments; ids are chunk rowids.

    Safe to share between threads: readers take ``snapshot()``; writers are serialised."""

    def __init__(
        self,
        data_dir: Path,
        model_name: str,
        dimension: int,
        persist_min: int = DEFAULT_PERSIST_MIN,
        ivf_threshold: int = vector_segments.DEFAULT_IVF_THRESHOLD,
    ) -> None:
        """Open (or create) the index in ``data_dir``; refuse one built with another model or dimension,
        and one whose metadata is missing beside its segment files."""
        self.data_dir = data_dir
        self.model_name = model_name
        self.dimension = dimension
        self.persist_min = persist_min
        self.ivf_threshold = ivf_threshold
        self._path = data_dir / DB_NAME
        self._write_lock = threading.RLock()
        self._readers = threading.local()
        self._reader_list: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        data_dir.mkdir(parents=True, exist_ok=True)
        require_metadata(data_dir)
        self._db = self._connect()
        self._check_meta()
        self._marked = marked(data_dir, INDEX_MARKER)
        self._stories: StoryIndex | None = None
        with self._write_lock:
            with self._read_transaction():
                self._load()
            self._forget_discarded()
            self._publish()

    # --- opening -------------------------------------------------------------------------------------

    def _connect(self, reader: bool = False) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            db.execute("PRAGMA foreign_keys = ON")
            if reader:
                db.execute("PRAGMA query_only = ON")
                return db
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            # Reading the schema fails on a file that is not a database. (PRAGMA quick_check would read
            # every page: minutes at a million chunks.)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(
                f"the index metadata {self._path} is unreadable ({exc}); {_RECOVER.format(dir=self.data_dir)}"
            ) from exc
        return db

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (WAL readers never wait for a writer)."""
        db: sqlite3.Connection | None = getattr(self._readers, "db", None)
        if db is None:
            db = self._connect(reader=True)
            self._readers.db = db
            with self._readers_lock:
                self._reader_list.append(db)
        return db

    def _check_meta(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                    [
                        ("schema", SCHEMA_VERSION),
                        ("model", self.model_name),
                        ("dimension", str(self.dimension)),
                        ("generation", "0"),
                    ],
                )
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema") != SCHEMA_VERSION:
            raise IndexMismatchError(
                f"the index in {self.data_dir} has schema {meta.get('schema')}, this code reads "
                f"{SCHEMA_VERSION}; {_RECOVER.format(dir=self.data_dir)}"
            )
        if meta.get("generation") == "0" and marked(self.data_dir, INDEX_MARKER):
            refuse_lost(self.data_dir, INDEX_MARKER, "articles")
        if meta.get("generation", "0") != "0" and not marked(self.data_dir, INDEX_MARKER):
            mark(self.data_dir, INDEX_MARKER)  # an index written before markers existed
        if meta.get("model") != self.model_name or meta.get("dimension") != str(self.dimension):
            raise IndexMismatchError(
                f"the index in {self.data_dir} was built with {meta.get('model')} ({meta.get('dimension')} "
                f"dimensions) but the service embeds with {self.model_name} ({self.dimension}); "
                f"{_RECOVER.format(dir=self.data_dir)}, or point RAG_DATA_DIR elsewhere"
            )

    def _load(self) -> None:
        """Inside a read transaction: the whole in-memory state from SQLite and the segment files."""
        self._generation = self._db_generation()
        self._vocabulary = Vocabulary()
        self._sync_vocabulary()
        self._vectors = SegmentedVectors(self.dimension, ivf_threshold=self.ivf_threshold)
        self._lexical = SegmentedBM25(vocabulary=self._vocabulary)
        self._persisted: dict[str, str] = {}
        """Segment name -> kind, for the segments of this process's indexes that are on disk."""
        self._discard: list[str] = []
        """Recorded segments found damaged or overlapping: forgotten once the load is done."""
        self._catalog = Catalog.build(self._catalog_entries(None))
        live = np.flatnonzero(self._catalog.chunk_slot >= 0).astype(np.int64)
        covered = {
            "vectors": self._load_segments("vectors", live),
            "lexical": self._load_segments("lexical", live),
        }
        for kind, done in covered.items():
            missing = live[~np.isin(live, done, assume_unique=True, kind="table")] if done.size else live
            if missing.size:
                self._add_from_rows(missing, vectors=kind == "vectors", lexical=kind == "lexical")
        self._remove_unrecorded_files()

    def _load_segments(self, kind: str, live: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Adopt the recorded segments of ``kind`` whose files are whole and that do not overlap each
        other (two processes may each have saved one); returns the live chunk ids they cover."""
        top = int(live.max()) + 1 if live.size else 0
        alive = np.zeros(top, dtype=bool)
        alive[live] = True
        covered = np.zeros(top, dtype=bool)
        rows = self._db.execute(
            "SELECT name, checksum FROM segments WHERE kind = ? ORDER BY chunks DESC", (kind,)
        ).fetchall()
        for name, checksum in rows:
            try:
                if _segment_checksum(self.data_dir, name, kind) != checksum:
                    log.warning("segment %s is missing or does not match its checksum; rebuilding", name)
                    self._discard.append(name)
                    continue
                segment = _read_segment(self.data_dir, kind, self.dimension, name)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                log.warning("segment %s cannot be read (%s); rebuilding it from %s", name, exc, DB_NAME)
                self._discard.append(name)
                continue
            ids = segment.layout.ids
            inside = ids < top
            if covered[ids[inside]].any():
                self._discard.append(name)  # overlaps a larger segment saved by another process
                continue
            gone = np.flatnonzero(~inside | ~alive[np.minimum(ids, max(top - 1, 0))])
            if gone.size:
                segment = segment.without(gone)
            if kind == "vectors":
                self._vectors.add_segment(segment)
            else:
                self._lexical.add_segment(segment)
            self._persisted[segment.name] = kind
            covered[ids[inside]] = True
        return np.flatnonzero(covered & alive).astype(np.int64)

    def _forget_discarded(self) -> None:
        if not self._discard:
            return
        with self._transaction():
            self._db.executemany("DELETE FROM segments WHERE name = ?", [(n,) for n in self._discard])
        for name in self._discard:
            (self.data_dir / f"seg-{name}.npz").unlink(missing_ok=True)
            (self.data_dir / f"seg-{name}.faiss").unlink(missing_ok=True)
        self._discard = []

    def _remove_unrecorded_files(self) -> None:
        recorded = {r[0] for r in self._db.execute("SELECT name FROM segments")}
        for path in [*self.data_dir.glob("seg-*.npz"), *self.data_dir.glob("seg-*.faiss")]:
            if path.stem[4:] not in recorded:
                path.unlink(missing_ok=True)
        for path in self.data_dir.glob(".seg-*"):
            path.unlink(missing_ok=True)
        for path in [*self.data_dir.glob("vectors-*.faiss"), *self.data_dir.glob("bm25-*")]:
            if path.is_file():
                path.unlink(missing_ok=True)  # files of the previous layout (schema 3)

    def _catalog_entries(self, article_ids: Sequence[str] | None) -> list[CatalogEntry]:
        query = "SELECT id, published_at, source, story_id, title_terms FROM articles"
        args: list[str] = []
        if article_ids is not None:
            if not article_ids:
                return []
            query += f" WHERE id IN ({','.join('?' * len(article_ids))})"
            args = list(article_ids)
        articles = self._db.execute(query, args).fetchall()
        chunks: dict[str, list[int]] = {}
        chunk_query = "SELECT article_id, id FROM chunks"
        if article_ids is not None:
            chunk_query += f" WHERE article_id IN ({','.join('?' * len(article_ids))})"
        for article_id, chunk_id in self._db.execute(chunk_query + " ORDER BY id", args):
            chunks.setdefault(article_id, []).append(chunk_id)
        return [
            CatalogEntry(
                article_id=a[0],
                published=date.fromisoformat(a[1]) if a[1] else None,
                source=a[2],
                story=a[3],
                title_terms=frozenset(a[4].split()),
                chunk_ids=tuple(chunks.get(a[0], ())),
            )
            for a in articles
        ]

    def _add_from_rows(self, ids: npt.NDArray[np.int64], vectors: bool = True, lexical: bool = True) -> None:
        """Add chunks to the in-memory indexes from their SQLite rows (vectors and stored tokens), as one
        segment of each kind, read in pieces so that only the segment's own arrays are ever whole."""
        id_parts, day_parts, vector_parts, count_parts = [], [], [], []
        for start in range(0, ids.size, 50_000):
            part = ids[start : start + 50_000].tolist()
            rows = self._db.execute(
                f"SELECT c.id, {'c.vector' if vectors else 'NULL'}, {'c.terms' if lexical else 'NULL'}, "
                f"a.published_at FROM chunks c JOIN articles a ON a.id = c.article_id "
                f"WHERE c.id IN ({','.join('?' * len(part))}) ORDER BY c.id",
                part,
            ).fetchall()
            if not rows:
                continue
            id_parts.append(np.array([r[0] for r in rows], dtype=np.int64))
            day_parts.append(
                np.array([date.fromisoformat(r[3]).toordinal() if r[3] else -1 for r in rows], dtype=np.int32)
            )
            if vectors:
                matrix = np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
                if matrix.shape[1] != self.dimension:
                    recover = _RECOVER.format(dir=self.data_dir)
                    raise IndexCorruptError(f"stored vectors have dimension {matrix.shape[1]}; {recover}")
                vector_parts.append(matrix)
            if lexical:
                encoded = [self._vocabulary.encode(r[2].split()) for r in rows]
                count_parts.append(lexical_segments.term_counts(encoded, len(self._vocabulary.ids)))
        if not id_parts:
            return
        chunk_ids, published = np.concatenate(id_parts), np.concatenate(day_parts)
        if vectors:
            self._vectors.add(chunk_ids, np.vstack(vector_parts), published)
        if lexical:
            width = len(self._vocabulary.ids)
            for counts in count_parts:
                counts.resize((counts.shape[0], width))
            self._lexical.add_counts(chunk_ids, sp.vstack(count_parts, format="csr"), published)

    # --- reading -------------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The latest published generation; take it once per query and read only from it."""
        return self._snapshot

    @property
    def generation(self) -> int:
        """The generation of the database (the published snapshot may trail it briefly)."""
        return self._db_generation(self._reader())

    @property
    def size(self) -> int:
        """Live chunks in the published snapshot."""
        return self._snapshot.size

    @property
    def catalog(self) -> Catalog:
        return self._snapshot.catalog

    def chunk_ids(self) -> npt.NDArray[np.int64]:
        """Every live chunk id of the published snapshot, ascending."""
        return self._snapshot.chunk_ids()

    def search(self, query: Vectors, k: int, window: Window = EVERYTHING) -> list[tuple[int, float]]:
        """``Snapshot.search`` of the published snapshot."""
        return self._snapshot.search(query, k, window)

    def article_count(self) -> int:
        (count,) = self._reader().execute("SELECT COUNT(*) FROM articles").fetchone()
        return int(count)

    def content_hash(self, article_id: str) -> str | None:
        query = "SELECT content_hash FROM articles WHERE id = ?"
        row = self._reader().execute(query, (article_id,)).fetchone()
        return None if row is None else str(row[0])

    def article(self, article_id: str) -> Article:
        articles = self.articles([article_id])
        if article_id not in articles:
            raise ArticleNotFoundError(f"no article with id {article_id!r}")
        return articles[article_id]

    def articles(self, ids: Iterable[str]) -> dict[str, Article]:
        """Stored articles by id; ids with no article (deleted meanwhile) are left out."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        rows = self._reader().execute(
            f"SELECT {_ARTICLE_COLUMNS} FROM articles a WHERE a.id IN ({','.join('?' * len(wanted))})",
            wanted,
        )
        return {row[0]: _article(row) for row in rows}

    def chunks(self, ids: Sequence[int]) -> list[Chunk]:
        """Chunks by id, in the order asked; ids with no chunk (deleted meanwhile) are left out."""
        return [chunk for chunk, _ in self.passages(ids)]

    def passages(self, ids: Sequence[int]) -> list[tuple[Chunk, Article]]:
        """Chunks by id with their articles, read in one statement so the two always agree; in the order
        asked, leaving out ids whose chunk a later write removed."""
        if not ids:
            return []
        query = (
            f'SELECT c.id, c.article_id, c.ordinal, c.start, c."end", c.text, c.n_tokens, {_ARTICLE_COLUMNS} '
            f"FROM chunks c JOIN articles a ON a.id = c.article_id WHERE c.id IN ({','.join('?' * len(ids))})"
        )
        rows = self._reader().execute(query, list(ids)).fetchall()
        by_id = {r[0]: (Chunk(r[0], r[1], r[2], Span(r[3], r[4]), r[5], r[6]), _article(r[7:])) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def sentence_vectors(self, article_id: str, spans: Sequence[Span]) -> dict[Span, Vectors]:
        """Stored vectors of the given sentence spans of one article (those that were stored)."""
        if not spans:
            return {}
        wanted = {span.start: span for span in spans}
        rows = (
            self._reader()
            .execute(
                f'SELECT start, "end", vector FROM sentences WHERE article_id = ? '
                f"AND start IN ({','.join('?' * len(wanted))})",
                [article_id, *wanted],
            )
            .fetchall()
        )
        return {wanted[start]: dequantize(vector) for start, end, vector in rows if wanted[start].end == end}

    def catalog_entries(self, article_ids: Iterable[str] | None = None) -> list[CatalogEntry]:
        """What the catalog holds of these articles (all when None), writes not yet published included."""
        catalog = self._catalog
        slots = (
            list(catalog.chunks_of)
            if article_ids is None
            else [catalog.slot_of[a] for a in article_ids if a in catalog.slot_of]
        )
        return [
            CatalogEntry(
                article_id=catalog.article_ids[slot],
                published=date.fromordinal(int(catalog.published[slot]))
                if catalog.published[slot] > 0
                else None,
                source=catalog.sources[slot] or None,
                story=catalog.stories[slot],
                title_terms=catalog.title_terms[slot],
                chunk_ids=catalog.chunks_of[slot],
            )
            for slot in slots
        ]

    def minhashes(self) -> list[tuple[str, bytes | None, str, str | None]]:
        """(article id, MinHash signature, story, publication date) of every article, in insertion order."""
        rows = self._reader().execute(
            "SELECT id, minhash, story_id, published_at FROM articles ORDER BY rowid"
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def missing_shards(self) -> tuple[int, ...]:
        """Shards that could not answer the last query of this thread (none: this store is one machine)."""
        return ()

    # --- writing -------------------------------------------------------------------------------------

    def write(self, batch: Sequence[ArticleWrite], publish: bool = True) -> None:
        """Insert or replace the articles of ``batch`` and their chunks, all or nothing.

        With ``publish=False`` readers keep the previous snapshot until ``flush`` (an ingest publishes
        once, at its end); the in-memory indexes change either way, at the cost of the batch alone.
        """
        if not batch:
            return
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._write_lock:
            with self._writing():
                self._sync()
                article_ids = [w.article.id for w in batch]
                old = self._chunk_ids_of(article_ids)
                new_ids: list[int] = []
                tokens: list[list[str]] = []
                published: list[int] = []
                entries: list[CatalogEntry] = []
                stories = self._story_index()
                for item in batch:
                    ids, chunk_tokens, entry = self._insert(item, now, stories)
                    new_ids.extend(ids)
                    tokens.extend(chunk_tokens)
                    published.extend([_ordinal(item.article.published_at)] * len(ids))
                    entries.append(entry)
                self._sync_vocabulary()
                self._bump_generation()
                generation = self._db_generation()
            # Committed: apply the same change in memory (what a reload from SQLite would give).
            chunk_ids = np.array(new_ids, dtype=np.int64)
            days = np.array(published, dtype=np.int32)
            self._apply(
                old, chunk_ids, np.vstack([item.vectors for item in batch]).astype(np.float32), tokens, days
            )
            self._catalog = self._catalog.changed(entries, ())
            self._generation = generation
            if not self._marked:
                mark(self.data_dir, INDEX_MARKER)
                self._marked = True
            if publish:
                self._publish()

    def delete(self, article_id: str) -> None:
        """Remove one article and its chunks; raises ArticleNotFoundError when there is none.

        When this returns, no query that starts afterwards can see the article."""
        with self._write_lock:
            with self._writing():
                self._sync()
                old = self._chunk_ids_of([article_id])
                if not self._db.execute("DELETE FROM articles WHERE id = ?", (article_id,)).rowcount:
                    raise ArticleNotFoundError(f"no article with id {article_id!r}")
                self._bump_generation()
                generation = self._db_generation()
            if self._stories is not None:
                self._stories.remove(article_id)
            self._apply(old, np.zeros(0, dtype=np.int64), np.zeros((0, self.dimension), np.float32), [], None)
            self._catalog = self._catalog.changed((), [article_id])
            self._generation = generation
            self._publish()

    def flush(self) -> None:
        """Publish the writes made with ``publish=False``."""
        with self._write_lock:
            self._publish()

    def refresh(self) -> bool:
        """Catch up with writes made by another process; True when there were any."""
        if self._db_generation(self._reader()) == self._generation:
            return False
        with self._write_lock:
            with self._read_transaction():
                changed = self._sync()
            if changed:
                self._publish()
        return changed

    def watch(self, interval: float = DEFAULT_WATCH_SECONDS) -> None:
        """Start a thread that publishes other processes' writes within about ``interval`` seconds."""
        if self._watcher is None:
            self._watcher = start_watcher(self.refresh, interval, self._stop, "index")

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
        with self._write_lock:
            self._db.close()
        with self._readers_lock:
            for db in self._reader_list:
                db.close()
            self._reader_list.clear()

    def _insert(
        self, item: ArticleWrite, now: str, stories: StoryIndex
    ) -> tuple[list[int], list[list[str]], CatalogEntry]:
        a = item.article
        self._db.execute("DELETE FROM articles WHERE id = ?", (a.id,))
        stories.remove(a.id)
        minhash = signature(a.body)
        story = item.story or self._story_of(a.id, minhash, stories)
        stories.add(a.id, minhash)
        title_terms = tokenize([a.title])[0] if a.title else []
        self._db.execute(
            "INSERT INTO articles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                a.id,
                a.title,
                a.body,
                a.source,
                a.url,
                a.published_at.isoformat() if a.published_at else None,
                json.dumps(list(a.authors)),
                a.content_hash,
                a.origin,
                now,
                story,
                minhash,
                " ".join(title_terms),
            ),
        )
        passages = [passage_text(a, draft.text) for draft in item.chunks]
        chunk_tokens = tokenize(passages) if passages else []
        ids = []
        for draft, vector, tokens in zip(item.chunks, item.vectors, chunk_tokens, strict=True):
            cursor = self._db.execute(
                'INSERT INTO chunks (article_id, ordinal, start, "end", text, n_tokens, vector, terms) '
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    a.id,
                    draft.ordinal,
                    draft.span.start,
                    draft.span.end,
                    draft.text,
                    draft.n_tokens,
                    np.asarray(vector, dtype=np.float32).tobytes(),
                    " ".join(tokens),
                ),
            )
            ids.append(int(cursor.lastrowid or 0))
        self._db.executemany(
            "INSERT OR IGNORE INTO terms (term) VALUES (?)",
            [(t,) for t in {t for tokens in chunk_tokens for t in tokens} if t not in self._vocabulary.ids],
        )
        if item.sentence_vectors is not None and len(item.sentences):
            self._db.executemany(
                'INSERT OR REPLACE INTO sentences (article_id, start, "end", vector) VALUES (?, ?, ?, ?)',
                [
                    (a.id, span.start, span.end, blob)
                    for span, blob in zip(item.sentences, quantize(item.sentence_vectors), strict=True)
                ],
            )
        entry = CatalogEntry(a.id, a.published_at, a.source, story, frozenset(title_terms), tuple(ids))
        return ids, chunk_tokens, entry

    def _apply(
        self,
        removed: npt.NDArray[np.int64],
        ids: npt.NDArray[np.int64],
        vectors: Vectors,
        tokens: list[list[str]],
        published: npt.NDArray[np.int32] | None,
    ) -> None:
        self._vectors.remove(removed)
        self._lexical.remove(removed)
        if ids.size and published is not None:
            self._vectors.add(ids, vectors, published)
            self._lexical.add(ids, tokens, published)

    def _sync(self) -> bool:
        """Inside a transaction: catch up with another process's writes by their difference."""
        generation = self._db_generation()
        if generation == self._generation:
            return False
        self._sync_vocabulary()
        live = np.array([r[0] for r in self._db.execute("SELECT id FROM chunks ORDER BY id")], dtype=np.int64)
        known = np.flatnonzero(self._catalog.chunk_slot >= 0).astype(np.int64)
        removed = np.setdiff1d(known, live)
        added = np.setdiff1d(live, known)
        slots = self._catalog.slots(removed)
        gone = {self._catalog.article_ids[s] for s in slots.tolist() if s >= 0}
        changed_articles = (
            sorted(
                {
                    r[0]
                    for r in self._db.execute(
                        f"SELECT DISTINCT article_id FROM chunks WHERE id IN ({','.join('?' * added.size)})",
                        added.tolist(),
                    )
                }
            )
            if added.size
            else []
        )
        self._vectors.remove(removed)
        self._lexical.remove(removed)
        self._add_from_rows(added)
        entries = self._catalog_entries(changed_articles)
        self._catalog = self._catalog.changed(entries, gone)
        self._stories = None  # rebuilt at this process's next write
        self._generation = generation
        return True

    def _sync_vocabulary(self) -> None:
        have = len(self._vocabulary.ids)
        for term_id, term in self._db.execute("SELECT id, term FROM terms WHERE id > ? ORDER BY id", (have,)):
            self._vocabulary.ids[term] = term_id - 1  # SQLite rowids start at 1

    def _story_index(self) -> StoryIndex:
        if self._stories is None:
            stories = StoryIndex()
            for article_id, data in self._db.execute("SELECT id, minhash FROM articles"):
                stories.add(article_id, data)
            self._stories = stories
        return self._stories

    def _publish(self) -> None:
        """Make the in-memory state what new queries read, and save its large segments."""
        self._snapshot = Snapshot(
            self._generation, self._catalog, self._vectors.reader(), self._lexical.reader(), self.dimension
        )
        self._persist()

    def _db_generation(self, db: sqlite3.Connection | None = None) -> int:
        (value,) = (db or self._db).execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(value)

    def _chunk_ids_of(self, article_ids: list[str]) -> npt.NDArray[np.int64]:
        marks = ",".join("?" * len(article_ids))
        rows = self._db.execute(f"SELECT id FROM chunks WHERE article_id IN ({marks})", article_ids)
        return np.array([r[0] for r in rows], dtype=np.int64)

    def _story_of(self, article_id: str, minhash: bytes | None, stories: StoryIndex) -> str:
        """The story of the earliest stored near-duplicate, or a new story named after this article."""
        similar = [s for s in stories.similar(minhash) if s != article_id]
        if not similar:
            return article_id
        marks = ",".join("?" * len(similar))
        row = self._db.execute(
            f"SELECT story_id FROM articles WHERE id IN ({marks}) "
            f"ORDER BY published_at IS NULL, published_at, id LIMIT 1",
            similar,
        ).fetchone()
        return str(row[0]) if row else article_id

    def _bump_generation(self) -> None:
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    # --- segment files -------------------------------------------------------------------------------

    def _persist(self) -> None:
        """Save segments of at least ``persist_min`` chunks that are not on disk; forget saved ones a merge
        replaced. Only this process's own segments are recorded or dropped."""
        current: dict[str, tuple[str, Any]] = {}
        for kind, segments in (("vectors", self._vectors.segments), ("lexical", self._lexical.segments)):
            for segment in segments:
                if segment.name in self._persisted or segment.layout.size >= self.persist_min:
                    current[segment.name] = (kind, segment)
        new = {n: v for n, v in current.items() if n not in self._persisted}
        dropped = [n for n in self._persisted if n not in current]
        if not new and not dropped:
            return
        written = []
        for name, (kind, segment) in new.items():
            written.append(
                (name, kind, _write_segment(self.data_dir, name, kind, segment), segment.layout.size)
            )
        with self._transaction():
            recorded = {r[0] for r in self._db.execute("SELECT name FROM segments")}
            self._db.executemany("INSERT INTO segments VALUES (?, ?, ?, ?)", written)
            # A segment another process replaced meanwhile is no longer recorded: leave its file alone.
            self._db.executemany(
                "DELETE FROM segments WHERE name = ?", [(n,) for n in dropped if n in recorded]
            )
        _fsync_dir(self.data_dir)
        for name in dropped:
            if name in recorded:
                (self.data_dir / f"seg-{name}.npz").unlink(missing_ok=True)
                (self.data_dir / f"seg-{name}.faiss").unlink(missing_ok=True)
            del self._persisted[name]
        self._persisted.update({name: kind for name, kind, _, _ in written})

    # --- transactions --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write transaction; on failure the in-memory state is reloaded from SQLite."""
        try:
            with self._transaction():
                yield
        except BaseException:
            with self._read_transaction():
                self._load()
            raise

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _read_transaction(self) -> Iterator[None]:
        """One consistent view of the database for several statements."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")


def _article(row: Sequence[Any]) -> Article:
    return Article(
        id=row[0],
        title=row[1],
        body=row[2],
        source=row[3],
        url=row[4],
        published_at=date.fromisoformat(row[5]) if row[5] else None,
        authors=tuple(json.loads(row[6])),
        origin=row[7],
    )


def _ordinal(day: date | None) -> int:
    return day.toordinal() if day else -1


def _write_segment(folder: Path, name: str, kind: str, segment: Any) -> str:
    """Save a segment atomically: its layout (and, for BM25, its term matrix) in ``seg-NAME.npz``, and for
    vectors the FAISS index in ``seg-NAME.faiss`` (read back directly, without a copy). Returns the
    checksum of both."""
    arrays: dict[str, Any] = {"ids": segment.layout.ids, "published": segment.layout.published}
    if kind == "vectors":
        arrays["ivf"] = np.array(segment.ivf)
        _atomically(folder / f"seg-{name}.faiss", lambda tmp: faiss.write_index(segment.index, str(tmp)))
    else:
        tf = segment.tf
        arrays.update(
            data=tf.data,
            indices=tf.indices,
            indptr=tf.indptr,
            shape=np.array(tf.shape),
            lengths=segment.lengths,
        )

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)

    _atomically(folder / f"seg-{name}.npz", save)
    return _segment_checksum(folder, name, kind)


def _atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    write(tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)


def _segment_checksum(folder: Path, name: str, kind: str) -> str:
    """SHA-256 of a segment's files (raises OSError when one is missing)."""
    files = [folder / f"seg-{name}.npz"] + ([folder / f"seg-{name}.faiss"] if kind == "vectors" else [])
    return ":".join(_checksum(path) for path in files)


def _read_segment(folder: Path, kind: str, dimension: int, name: str) -> Any:
    with np.load(folder / f"seg-{name}.npz", allow_pickle=False) as data:
        ids, published = data["ids"].astype(np.int64), data["published"].astype(np.int32)
        layout, order = Layout.build(ids, published)
        if not np.array_equal(order, np.arange(ids.size)):
            raise ValueError("positions out of order")
        deleted = np.zeros(ids.size, dtype=bool)
        if kind == "vectors":
            index: Any = faiss.read_index(str(folder / f"seg-{name}.faiss"))
            if index.d != dimension or index.ntotal != ids.size:
                raise ValueError(f"{index.ntotal} vectors of dimension {index.d}")
            ivf = bool(data["ivf"])
            if ivf:
                index.make_direct_map()
            bits = np.packbits(deleted, bitorder="little")
            return vector_segments.Segment(layout, index, ivf, deleted, bits, 0, name)
        tf = sp.csc_matrix((data["data"], data["indices"], data["indptr"]), shape=tuple(data["shape"]))
        tf.sort_indices()
        df = np.diff(tf.indptr).astype(np.int64)
        return lexical_segments.Segment(layout, tf, data["lengths"], df, deleted, 0, name)


def _checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
