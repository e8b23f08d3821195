"""The index on disk: metadata and vectors in SQLite (the truth); FAISS vectors and a BM25 index beside
it (derived copies, verified by checksum and rebuilt from SQLite whenever missing or damaged).

Readers never see a write in progress. Every query takes one immutable ``Snapshot`` (catalog, BM25
index and FAISS vectors of one generation) and works on it alone; a write builds the next snapshot off
to the side and publishes it with one reference swap, as a search engine's point-in-time reader does.
Text (chunks, article bodies) is read from SQLite by id at the end of a query, in single statements;
an id whose row a later write removed is simply skipped, so an article deleted before a query began
can never be cited.

Writes are crash-safe by construction. Each write is one SQLite transaction that also bumps a
``generation`` counter; SQLite's journal makes it all-or-nothing. The FAISS file is named after the
generation it holds (``vectors-<gen>.faiss``) and is written to a temporary file, fsynced and renamed
into place, its SHA-256 recorded in SQLite; the BM25 index likewise (``bm25-<gen>/``). A crash before
the commit leaves the previous generation, whole; a crash after it leaves derived files one generation
behind, which ``open`` notices and rebuilds from SQLite, as it does for a file whose checksum differs.

Another process may write to the same index (``rag ingest`` while ``rag serve`` runs): writers take
SQLite's write lock, and a writer whose in-memory state is behind the database reloads it first.
``watch`` starts a thread that publishes other processes' writes, so no request ever rebuilds.

Near-duplicate articles (syndicated or updated copies) share a ``story_id``, assigned at write time
from MinHash signatures (index/dedup.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from index.chunk import ChunkDraft, passage_text
from index.dedup import StoryIndex, signature
from index.embed import Vectors
from index.errors import ArticleNotFoundError, IndexCorruptError, IndexMismatchError
from index.lexical import LexicalIndex, tokenize
from index.records import Article, Chunk, Span

log = logging.getLogger("index.store")

SCHEMA_VERSION = "3"
DB_NAME = "meta.sqlite"
DEFAULT_WATCH_SECONDS = 1.0
_BUSY_MS = 60_000
_CHECKSUM = "sha256:"
_GENERATION_FILE = re.compile(r"^(?:vectors|bm25)-(\d+)(?:\.faiss)?$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS articles (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL, source TEXT, url TEXT,
    published_at TEXT, authors TEXT NOT NULL, content_hash TEXT NOT NULL, origin TEXT NOT NULL,
    ingested_at TEXT NOT NULL, story_id TEXT NOT NULL, minhash BLOB
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    article_id TEXT NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
    text TEXT NOT NULL, n_tokens INTEGER NOT NULL, vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_article ON chunks(article_id);
CREATE TABLE IF NOT EXISTS sentences (
    article_id TEXT NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (article_id, start)
);
CREATE INDEX IF NOT EXISTS articles_published ON articles(published_at);
"""
_RECOVER = "delete the folder {dir} and run `rag ingest` again to rebuild it"
_ARTICLE_COLUMNS = "a.id, a.title, a.body, a.source, a.url, a.published_at, a.authors, a.origin"


@dataclass(frozen=True)
class Catalog:
    """Per-chunk and per-article metadata held in memory, so filters and features cost no SQL."""

    chunk_ids: npt.NDArray[np.int64]
    """Every chunk id, ascending."""
    chunk_article: npt.NDArray[np.int64]
    """For each chunk (same order), the position of its article in ``article_ids``."""
    article_ids: tuple[str, ...]
    published: npt.NDArray[np.int64]
    """Publication date of each article as a proleptic ordinal (``date.toordinal``), -1 when unknown."""
    sources: tuple[str, ...]
    """Lowercased outlet of each article ('' when unknown)."""
    stories: tuple[str, ...]
    """Story id of each article; near-duplicates share one."""
    title_terms: tuple[frozenset[str], ...]
    """BM25 terms of each article's title."""
    copies: dict[str, tuple[int, ...]]
    """Article positions of every story that has more than one article."""


class Snapshot:
    """One generation of the index, frozen: what a query reads from start to end.

    Never mutated after it is published; the FAISS index it holds is a copy no writer touches."""

    def __init__(self, generation: int, catalog: Catalog, lexical: LexicalIndex, vectors: Any) -> None:
        self.generation = generation
        self.catalog = catalog
        self.lexical = lexical
        self._vectors = vectors
        self.lexical_aligned = bool(np.array_equal(lexical.chunk_ids, catalog.chunk_ids))
        """Whether BM25 holds exactly the catalog's chunks (not while an ingest is half done)."""

    @property
    def size(self) -> int:
        """Number of chunks (vectors)."""
        return int(self._vectors.ntotal)

    @property
    def dimension(self) -> int:
        return int(self._vectors.d)

    def chunk_ids(
        self,
        sources: Sequence[str] | None = None,
        published_after: date | None = None,
        published_before: date | None = None,
        undated: bool = True,
    ) -> npt.NDArray[np.int64]:
        """Ids of the chunks whose article matches every given filter (dates inclusive).

        Articles without a date pass date filters only when ``undated`` is true.
        """
        return self.catalog.chunk_ids[self.chunk_mask(sources, published_after, published_before, undated)]

    def chunk_mask(
        self,
        sources: Sequence[str] | None = None,
        published_after: date | None = None,
        published_before: date | None = None,
        undated: bool = True,
    ) -> npt.NDArray[np.bool_]:
        """The filters of ``chunk_ids`` as a boolean mask over ``catalog.chunk_ids``."""
        catalog = self.catalog
        allowed = np.ones(len(catalog.article_ids), dtype=bool)
        if sources:
            wanted = {s.lower() for s in sources}
            allowed &= np.array([s in wanted for s in catalog.sources], dtype=bool)
        if published_after or published_before:
            pub = catalog.published
            dated = pub >= 0
            in_range = dated.copy()
            if published_after:
                in_range &= pub >= published_after.toordinal()
            if published_before:
                in_range &= pub <= published_before.toordinal()
            allowed &= in_range | (~dated if undated else False)
        return allowed[catalog.chunk_article]

    def vectors(self, ids: npt.NDArray[np.int64]) -> Vectors:
        """The stored vectors of chunk ``ids`` (all of them must be in this snapshot)."""
        if not ids.size:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(self._vectors.reconstruct_batch(ids), dtype=np.float32)

    def search(
        self, query: Vectors, k: int, allowed: npt.NDArray[np.int64] | None = None
    ) -> list[tuple[int, float]]:
        """Top ``k`` (chunk id, inner product) for one query vector, optionally within ``allowed`` ids."""
        if self._vectors.ntotal == 0 or k <= 0 or (allowed is not None and allowed.size == 0):
            return []
        params = None
        if allowed is not None:
            params = faiss.SearchParameters()
            params.sel = faiss.IDSelectorBatch(allowed)
        scores, ids = self._vectors.search(query.reshape(1, -1), min(k, self._vectors.ntotal), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def write_vectors(self, path: Path) -> None:
        faiss.write_index(self._vectors, str(path))


@dataclass(frozen=True)
class ArticleWrite:
    """One article with its chunks and sentences and their vectors, ready to store."""

    article: Article
    chunks: Sequence[ChunkDraft]
    vectors: Vectors
    sentences: Sequence[Span] = ()
    sentence_vectors: Vectors | None = None
    """Vectors of ``sentences``, kept so answers need not embed sentences at query time."""


class IndexStore:
    """SQLite metadata plus a FAISS inner-product index over unit vectors, ids = chunk rowids.

    Safe to share between threads: readers take ``snapshot()``; writers are serialised."""

    def __init__(self, data_dir: Path, model_name: str, dimension: int) -> None:
        """Open (or create) the index in ``data_dir``; refuse one built with another model or dimension,
        and one whose metadata is missing beside its vector files."""
        self.data_dir = data_dir
        self.model_name = model_name
        self.dimension = dimension
        self._path = data_dir / DB_NAME
        self._write_lock = threading.RLock()
        self._readers = threading.local()
        self._reader_list: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        data_dir.mkdir(parents=True, exist_ok=True)
        self._refuse_orphan_files()
        self._db = self._connect()
        self._check_meta()
        self._work: Any = None
        """The writer's own FAISS index (mutable); snapshots hold copies of it."""
        self._work_generation = -1
        self._stories = StoryIndex()
        with self._write_lock:
            with self._read_transaction():
                self._sync_work()
                snapshot = self._next_snapshot()
            self._snapshot = snapshot
            self._persist(snapshot)

    # --- opening -------------------------------------------------------------------------------------

    def _refuse_orphan_files(self) -> None:
        if self._path.exists():
            return
        derived = [p.name for p in self.data_dir.iterdir() if _GENERATION_FILE.match(p.name)]
        if derived:
            raise IndexCorruptError(
                f"the index metadata {self._path} is missing but {len(derived)} vector or BM25 files are "
                f"still in {self.data_dir}: restore {DB_NAME} from a backup, or "
                f"{_RECOVER.format(dir=self.data_dir)}"
            )

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
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
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
        if meta.get("model") != self.model_name or meta.get("dimension") != str(self.dimension):
            raise IndexMismatchError(
                f"the index in {self.data_dir} was built with {meta.get('model')} ({meta.get('dimension')} "
                f"dimensions) but the service embeds with {self.model_name} ({self.dimension}); "
                f"{_RECOVER.format(dir=self.data_dir)}, or point RAG_DATA_DIR elsewhere"
            )

    # --- the writer's state and the snapshots built from it ------------------------------------------

    def _db_generation(self, db: sqlite3.Connection | None = None) -> int:
        (value,) = (db or self._db).execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(value)

    def _sync_work(self) -> None:
        """Inside a transaction on the writer connection: bring the writer's FAISS index and story
        index up to the database's generation (another process may have written)."""
        generation = self._db_generation()
        if generation == self._work_generation:
            return
        self._work = self._load_vectors(generation)
        self._stories = StoryIndex()
        for article_id, data in self._db.execute("SELECT id, minhash FROM articles"):
            self._stories.add(article_id, data)
        self._work_generation = generation

    def _load_vectors(self, generation: int) -> Any:
        """The FAISS file of ``generation`` when its checksum holds, else a rebuild from SQLite."""
        path = self._vectors_path(generation)
        (count,) = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        if self._verified(path):
            try:
                index = faiss.read_index(str(path))
            except RuntimeError:
                log.warning("%s cannot be read; rebuilding it from %s", path.name, DB_NAME)
            else:
                if index.d == self.dimension and index.ntotal == count:
                    return index
                log.warning("%s does not match %s; rebuilding it", path.name, DB_NAME)
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))
        rows = self._db.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
        if rows:
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vectors = np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            if vectors.shape[1] != self.dimension:
                raise IndexCorruptError(
                    f"stored vectors have dimension {vectors.shape[1]}; {_RECOVER.format(dir=self.data_dir)}"
                )
            index.add_with_ids(vectors, ids)
        return index

    def _next_snapshot(self) -> Snapshot:
        """Inside a transaction, with the writer's state in sync: the snapshot of this generation."""
        generation = self._work_generation
        catalog = self._build_catalog()
        lexical = self._load_lexical(generation)
        if lexical is None or not np.array_equal(lexical.chunk_ids, catalog.chunk_ids):
            lexical = self._build_lexical()
        return Snapshot(generation, catalog, lexical, faiss.clone_index(self._work))

    def _load_lexical(self, generation: int) -> LexicalIndex | None:
        folder = self._lexical_path(generation)
        if not self._verified(folder):
            return None
        try:
            return LexicalIndex.load(folder)
        except (OSError, ValueError, KeyError):
            log.warning("%s cannot be read; rebuilding it from %s", folder.name, DB_NAME)
            return None

    def _build_catalog(self) -> Catalog:
        articles = self._db.execute(
            "SELECT id, published_at, source, story_id, title FROM articles ORDER BY id"
        ).fetchall()
        stories: dict[str, list[int]] = {}
        for i, row in enumerate(articles):
            stories.setdefault(row[3], []).append(i)
        position = {row[0]: i for i, row in enumerate(articles)}
        chunks = self._db.execute("SELECT id, article_id FROM chunks ORDER BY id").fetchall()
        return Catalog(
            chunk_ids=np.array([c[0] for c in chunks], dtype=np.int64),
            chunk_article=np.array([position[c[1]] for c in chunks], dtype=np.int64),
            article_ids=tuple(a[0] for a in articles),
            published=np.array(
                [date.fromisoformat(a[1]).toordinal() if a[1] else -1 for a in articles], dtype=np.int64
            ),
            sources=tuple((a[2] or "").lower() for a in articles),
            stories=tuple(a[3] for a in articles),
            title_terms=tuple(frozenset(t) for t in tokenize([a[4] for a in articles])) if articles else (),
            copies={story: tuple(members) for story, members in stories.items() if len(members) > 1},
        )

    def _build_lexical(self) -> LexicalIndex:
        rows = self._db.execute(
            "SELECT c.id, a.title, c.text, a.url FROM chunks c JOIN articles a ON a.id = c.article_id "
            "ORDER BY c.id"
        ).fetchall()
        return LexicalIndex.build(
            np.array([r[0] for r in rows], dtype=np.int64), [passage_text(r[1], r[2], r[3]) for r in rows]
        )

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
        """Number of chunks (vectors) in the published snapshot."""
        return self._snapshot.size

    @property
    def catalog(self) -> Catalog:
        return self._snapshot.catalog

    @property
    def lexical(self) -> LexicalIndex:
        return self._snapshot.lexical

    def chunk_ids(
        self,
        sources: Sequence[str] | None = None,
        published_after: date | None = None,
        published_before: date | None = None,
        undated: bool = True,
    ) -> npt.NDArray[np.int64]:
        """``Snapshot.chunk_ids`` of the published snapshot."""
        return self._snapshot.chunk_ids(sources, published_after, published_before, undated)

    def search(
        self, query: Vectors, k: int, allowed: npt.NDArray[np.int64] | None = None
    ) -> list[tuple[int, float]]:
        """``Snapshot.search`` of the published snapshot."""
        return self._snapshot.search(query, k, allowed)

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
        return {
            wanted[start]: np.frombuffer(vector, dtype=np.float32)
            for start, end, vector in rows
            if wanted[start].end == end
        }

    def story_members(self, story_id: str) -> list[str]:
        """Ids of every stored article of one story."""
        rows = self._reader().execute("SELECT id FROM articles WHERE story_id = ? ORDER BY id", (story_id,))
        return [r[0] for r in rows]

    # --- writing -------------------------------------------------------------------------------------

    def write(self, batch: Sequence[ArticleWrite], publish: bool = True) -> None:
        """Insert or replace the articles of ``batch`` and their chunks, all or nothing.

        With ``publish=False`` readers keep the previous snapshot and no derived file is written until
        ``flush`` (an ingest publishes once, at its end); a crash in between costs a rebuild from
        SQLite at the next open, never data.
        """
        if not batch:
            return
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._write_lock:
            with self._writing():
                self._sync_work()
                old = self._chunk_ids_of([w.article.id for w in batch])
                new_ids: list[int] = []
                for item in batch:
                    new_ids.extend(self._insert(item, now))
                self._bump_generation()
                self._apply_work(old, new_ids, [item.vectors for item in batch])
                snapshot = self._next_snapshot() if publish else None
            if snapshot is not None:
                self._publish(snapshot)

    def delete(self, article_id: str) -> None:
        """Remove one article and its chunks; raises ArticleNotFoundError when there is none.

        When this returns, no query that starts afterwards can see the article."""
        with self._write_lock:
            with self._writing():
                self._sync_work()
                old = self._chunk_ids_of([article_id])
                if not self._db.execute("DELETE FROM articles WHERE id = ?", (article_id,)).rowcount:
                    raise ArticleNotFoundError(f"no article with id {article_id!r}")
                self._stories.remove(article_id)
                self._bump_generation()
                self._apply_work(old, [], [])
                snapshot = self._next_snapshot()
            self._publish(snapshot)

    def flush(self) -> None:
        """Publish the writes made with ``publish=False`` and write any missing derived files."""
        with self._write_lock:
            with self._read_transaction():
                self._sync_work()
                snapshot = self._snapshot
                if snapshot.generation != self._work_generation:
                    snapshot = self._next_snapshot()
            self._publish(snapshot)

    def refresh(self) -> bool:
        """Publish writes made by another process; True when there were any. Cheap when there were not."""
        if self._db_generation(self._reader()) == self._snapshot.generation:
            return False
        with self._write_lock:
            with self._read_transaction():
                self._sync_work()
                if self._work_generation == self._snapshot.generation:
                    return False
                snapshot = self._next_snapshot()
            self._snapshot = snapshot
        return True

    def watch(self, interval: float = DEFAULT_WATCH_SECONDS) -> None:
        """Start a thread that publishes other processes' writes within about ``interval`` seconds."""
        if self._watcher is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except Exception:
                    log.exception("picking up the index's latest writes failed; retrying")

        self._watcher = threading.Thread(target=loop, name="index-watch", daemon=True)
        self._watcher.start()

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

    def _insert(self, item: ArticleWrite, now: str) -> list[int]:
        a = item.article
        self._db.execute("DELETE FROM articles WHERE id = ?", (a.id,))
        self._stories.remove(a.id)
        minhash = signature(a.body)
        story = self._story_of(a.id, minhash)
        self._stories.add(a.id, minhash)
        self._db.execute(
            "INSERT INTO articles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ),
        )
        ids = []
        for draft, vector in zip(item.chunks, item.vectors, strict=True):
            cursor = self._db.execute(
                'INSERT INTO chunks (article_id, ordinal, start, "end", text, n_tokens, vector) '
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    a.id,
                    draft.ordinal,
                    draft.span.start,
                    draft.span.end,
                    draft.text,
                    draft.n_tokens,
                    np.asarray(vector, dtype=np.float32).tobytes(),
                ),
            )
            ids.append(int(cursor.lastrowid or 0))
        if item.sentence_vectors is not None:
            self._db.executemany(
                'INSERT OR REPLACE INTO sentences (article_id, start, "end", vector) VALUES (?, ?, ?, ?)',
                [
                    (a.id, span.start, span.end, np.asarray(v, dtype=np.float32).tobytes())
                    for span, v in zip(item.sentences, item.sentence_vectors, strict=True)
                ],
            )
        return ids

    def _apply_work(self, removed: npt.NDArray[np.int64], ids: list[int], vectors: list[Vectors]) -> None:
        if removed.size:
            self._work.remove_ids(faiss.IDSelectorBatch(removed))
        if ids:
            self._work.add_with_ids(np.vstack(vectors).astype(np.float32), np.array(ids, dtype=np.int64))
        self._work_generation = self._db_generation()

    def _publish(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` what new queries read, then write its derived files."""
        self._snapshot = snapshot
        self._persist(snapshot)

    def _chunk_ids_of(self, article_ids: list[str]) -> npt.NDArray[np.int64]:
        marks = ",".join("?" * len(article_ids))
        rows = self._db.execute(f"SELECT id FROM chunks WHERE article_id IN ({marks})", article_ids)
        return np.array([r[0] for r in rows], dtype=np.int64)

    def _story_of(self, article_id: str, minhash: bytes | None) -> str:
        """The story of the earliest stored near-duplicate, or a new story named after this article."""
        similar = [s for s in self._stories.similar(minhash) if s != article_id]
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

    # --- derived files -------------------------------------------------------------------------------

    def _persist(self, snapshot: Snapshot) -> None:
        """Write the derived files of ``snapshot`` that are missing (only while it is the database's
        latest generation), record their checksums, and remove older generations' files."""
        generation = snapshot.generation
        with self._write_lock:
            if self._db_generation() != generation:
                return  # another process has written since; its own flush writes the files
            written: dict[str, str] = {}
            vectors = self._vectors_path(generation)
            if not self._recorded(vectors):
                written[vectors.name] = _write_atomically(vectors, snapshot.write_vectors)
            lexical = self._lexical_path(generation)
            if not self._recorded(lexical):
                try:
                    snapshot.lexical.save(lexical)
                    written[lexical.name] = _checksum(lexical)
                except OSError as exc:  # another process saving the same generation; its copy serves
                    log.warning("%s was not written: %s", lexical.name, exc)
            with self._transaction():
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [(_CHECKSUM + name, digest) for name, digest in written.items()],
                )
                stale = [
                    key
                    for (key,) in self._db.execute("SELECT key FROM meta WHERE key LIKE 'sha256:%'")
                    if _generation_of(key[len(_CHECKSUM) :]) < generation
                ]
                self._db.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k in stale])
            _fsync_dir(self.data_dir)
            self._remove_older(generation)

    def _recorded(self, path: Path) -> bool:
        """Whether ``path`` exists with a recorded checksum (written by a writer of this index)."""
        row = self._db.execute("SELECT 1 FROM meta WHERE key = ?", (_CHECKSUM + path.name,)).fetchone()
        return path.exists() and row is not None

    def _verified(self, path: Path) -> bool:
        """Whether ``path`` exists and its checksum is the one recorded when it was written."""
        if not path.exists():
            return False
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (_CHECKSUM + path.name,)).fetchone()
        if row is None:
            return False
        if _checksum(path) != row[0]:
            log.warning("%s does not match its recorded checksum; rebuilding it from %s", path.name, DB_NAME)
            return False
        return True

    def _remove_older(self, generation: int) -> None:
        for path in self.data_dir.iterdir():
            match = _GENERATION_FILE.match(path.name)
            if match and int(match.group(1)) < generation:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def _vectors_path(self, generation: int) -> Path:
        return self.data_dir / f"vectors-{generation}.faiss"

    def _lexical_path(self, generation: int) -> Path:
        return self.data_dir / f"bm25-{generation}"

    # --- transactions --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write transaction whose failure also forgets the writer's in-memory state (reloaded next)."""
        try:
            with self._transaction():
                yield
        except BaseException:
            self._work_generation = -1
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


def _generation_of(name: str) -> int:
    match = _GENERATION_FILE.match(name)
    return int(match.group(1)) if match else -1


def _checksum(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (names and contents, in name order)."""
    digest = hashlib.sha256()
    folder = path.is_dir()
    for file in sorted(p for p in path.iterdir() if p.is_file()) if folder else [path]:
        if folder:
            digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _write_atomically(target: Path, write: Any) -> str:
    """``write(tmp)``, fsync, rename onto ``target``; returns the file's checksum."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    write(tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    digest = _checksum(tmp)
    tmp.replace(target)
    return digest


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
