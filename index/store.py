"""The index on disk: metadata and vectors in SQLite (the truth); FAISS vectors and a BM25 index beside
it (derived copies, rebuilt from SQLite whenever they are missing).

Writes are crash-safe by construction. Each write is one SQLite transaction that also bumps a
``generation`` counter; SQLite's journal makes it all-or-nothing. The FAISS file is named after the
generation it holds (``vectors-<gen>.faiss``) and is written to a temporary file, fsynced and renamed
into place; the BM25 index likewise (``bm25-<gen>/``). A crash before the commit leaves the previous
generation, whole; a crash after it leaves derived files one generation behind, which ``open`` notices
and rebuilds from SQLite.

Near-duplicate articles (syndicated or updated copies) share a ``story_id``, assigned at write time
from MinHash signatures (index/dedup.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Sequence
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

SCHEMA_VERSION = "3"
DB_NAME = "meta.sqlite"
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
    """SQLite metadata plus a FAISS inner-product index over unit vectors, ids = chunk rowids."""

    def __init__(self, data_dir: Path, model_name: str, dimension: int) -> None:
        """Open (or create) the index in ``data_dir``; refuse one built with another model or dimension."""
        self.data_dir = data_dir
        self.model_name = model_name
        self.dimension = dimension
        self._lock = threading.RLock()
        data_dir.mkdir(parents=True, exist_ok=True)
        self._db = self._connect(data_dir / DB_NAME)
        self._check_meta()
        self._stories = StoryIndex()
        for article_id, data in self._db.execute("SELECT id, minhash FROM articles"):
            self._stories.add(article_id, data)
        self._load_derived()

    # --- opening -------------------------------------------------------------------------------------

    def _connect(self, path: Path) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(
                f"the index metadata {path} is unreadable ({exc}); {_RECOVER.format(dir=self.data_dir)}"
            ) from exc
        return db

    def _check_meta(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [
                        ("schema", SCHEMA_VERSION),
                        ("model", self.model_name),
                        ("dimension", str(self.dimension)),
                        ("generation", "0"),
                    ],
                )
            return
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

    def _load_derived(self) -> None:
        """FAISS vectors, the catalog and BM25 for the current generation (rebuilt when missing)."""
        self._index = self._load_vectors()
        self.catalog = self._build_catalog()
        folder = self._lexical_path(self._loaded_generation)
        try:
            self.lexical = LexicalIndex.load(folder) if folder.exists() else self._build_lexical(persist=True)
        except (OSError, ValueError, KeyError) as exc:
            raise IndexCorruptError(
                f"the BM25 index {folder} is unreadable ({exc}); delete it and it is rebuilt from "
                f"{DB_NAME} at the next start"
            ) from exc
        if self.lexical.chunk_ids.size != self.catalog.chunk_ids.size:
            raise IndexCorruptError(
                f"the BM25 index {folder} does not match the metadata; delete it to rebuild it"
            )

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

    def _build_lexical(self, persist: bool) -> LexicalIndex:
        rows = self._db.execute(
            "SELECT c.id, a.title, c.text, a.url FROM chunks c JOIN articles a ON a.id = c.article_id "
            "ORDER BY c.id"
        ).fetchall()
        lexical = LexicalIndex.build(
            np.array([r[0] for r in rows], dtype=np.int64), [passage_text(r[1], r[2], r[3]) for r in rows]
        )
        if persist:
            lexical.save(self._lexical_path(self.generation))
            self._remove_stale("bm25-*", self._lexical_path(self.generation))
        return lexical

    def _load_vectors(self) -> Any:
        self._loaded_generation = self.generation
        path = self._vectors_path(self._loaded_generation)
        if path.exists():
            try:
                index = faiss.read_index(str(path))
            except RuntimeError as exc:
                raise IndexCorruptError(
                    f"the vector file {path} is unreadable; delete it and the index is rebuilt from "
                    f"{DB_NAME} at the next start, or {_RECOVER.format(dir=self.data_dir)}"
                ) from exc
            (count,) = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()
            if index.d != self.dimension or index.ntotal != count:
                raise IndexCorruptError(
                    f"the vector file {path} holds {index.ntotal} vectors of dimension {index.d}, the "
                    f"metadata {count} of dimension {self.dimension}; delete {path} to rebuild it"
                )
            return index
        # Missing: a fresh index, or a crash after the last commit. SQLite holds every vector.
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))
        rows = self._db.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
        if rows:
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vectors = np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            if vectors.shape[1] != self.dimension:
                raise IndexCorruptError(f"stored vectors have dimension {vectors.shape[1]}")
            index.add_with_ids(vectors, ids)
        self._write_vectors(index)
        return index

    # --- reading -------------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        with self._lock:
            (value,) = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(value)

    @property
    def size(self) -> int:
        """Number of chunks (vectors) in the index."""
        return int(self._index.ntotal)

    def article_count(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM articles").fetchone()
        return int(count)

    def content_hash(self, article_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT content_hash FROM articles WHERE id = ?", (article_id,)).fetchone()
        return None if row is None else str(row[0])

    def article(self, article_id: str) -> Article:
        articles = self.articles([article_id])
        if article_id not in articles:
            raise ArticleNotFoundError(f"no article with id {article_id!r}")
        return articles[article_id]

    def articles(self, ids: Iterable[str]) -> dict[str, Article]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, title, body, source, url, published_at, authors, origin FROM articles "
                f"WHERE id IN ({marks})",
                wanted,
            ).fetchall()
        return {
            r[0]: Article(
                id=r[0],
                title=r[1],
                body=r[2],
                source=r[3],
                url=r[4],
                published_at=date.fromisoformat(r[5]) if r[5] else None,
                authors=tuple(json.loads(r[6])),
                origin=r[7],
            )
            for r in rows
        }

    def chunks(self, ids: Sequence[int]) -> list[Chunk]:
        """Chunks by id, in the order asked."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(
                f'SELECT id, article_id, ordinal, start, "end", text, n_tokens FROM chunks '
                f"WHERE id IN ({marks})",
                list(ids),
            ).fetchall()
        by_id = {r[0]: Chunk(r[0], r[1], r[2], Span(r[3], r[4]), r[5], r[6]) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

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

    def sentence_vectors(self, article_id: str, spans: Sequence[Span]) -> dict[Span, Vectors]:
        """Stored vectors of the given sentence spans of one article (those that were stored)."""
        if not spans:
            return {}
        wanted = {span.start: span for span in spans}
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._db.execute(
                f'SELECT start, "end", vector FROM sentences WHERE article_id = ? AND start IN ({marks})',
                [article_id, *wanted],
            ).fetchall()
        return {
            wanted[start]: np.frombuffer(vector, dtype=np.float32)
            for start, end, vector in rows
            if wanted[start].end == end
        }

    def vectors(self, ids: npt.NDArray[np.int64]) -> Vectors:
        """The stored vectors of chunk ``ids``."""
        with self._lock:
            if not ids.size:
                return np.zeros((0, self.dimension), dtype=np.float32)
            return np.asarray(self._index.reconstruct_batch(ids), dtype=np.float32)

    def search(
        self, query: Vectors, k: int, allowed: npt.NDArray[np.int64] | None = None
    ) -> list[tuple[int, float]]:
        """Top ``k`` (chunk id, inner product) for one query vector, optionally within ``allowed`` ids."""
        with self._lock:
            if self._index.ntotal == 0 or k <= 0 or (allowed is not None and allowed.size == 0):
                return []
            params = None
            if allowed is not None:
                params = faiss.SearchParameters()
                params.sel = faiss.IDSelectorBatch(allowed)
            scores, ids = self._index.search(query.reshape(1, -1), min(k, self._index.ntotal), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    # --- writing -------------------------------------------------------------------------------------

    def write(self, batch: Sequence[ArticleWrite], persist: bool = True) -> None:
        """Insert or replace the articles of ``batch`` and their chunks, all or nothing.

        With ``persist=False`` the FAISS file is left one generation behind (call ``flush`` later); a crash
        in between costs a rebuild from SQLite at the next open, never data.
        """
        if not batch:
            return
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            new_ids: list[int] = []
            new_vectors: list[Vectors] = []
            with self._transaction():
                old = self._chunk_ids_of([w.article.id for w in batch])
                for item in batch:
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
                        new_ids.append(int(cursor.lastrowid or 0))
                    new_vectors.append(item.vectors)
                    if item.sentence_vectors is not None:
                        self._db.executemany(
                            'INSERT OR REPLACE INTO sentences (article_id, start, "end", vector) '
                            "VALUES (?, ?, ?, ?)",
                            [
                                (a.id, span.start, span.end, np.asarray(v, dtype=np.float32).tobytes())
                                for span, v in zip(item.sentences, item.sentence_vectors, strict=True)
                            ],
                        )
                self._bump_generation()
            self._apply(old, new_ids, new_vectors, persist)

    def delete(self, article_id: str) -> None:
        """Remove one article and its chunks; raises ArticleNotFoundError when there is none."""
        with self._lock:
            with self._transaction():
                old = self._chunk_ids_of([article_id])
                deleted = self._db.execute("DELETE FROM articles WHERE id = ?", (article_id,)).rowcount
                if not deleted:
                    raise ArticleNotFoundError(f"no article with id {article_id!r}")
                self._bump_generation()
            self._stories.remove(article_id)
            self._apply(old, [], [], persist=True)

    def close(self) -> None:
        with self._lock:
            self._db.close()

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

    def story_members(self, story_id: str) -> list[str]:
        """Ids of every stored article of one story."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM articles WHERE story_id = ? ORDER BY id", (story_id,))
            return [r[0] for r in rows]

    def _bump_generation(self) -> None:
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def flush(self) -> None:
        """Write the derived files for the current generation if they are not on disk yet."""
        with self._lock:
            if not self._vectors_path(self.generation).exists():
                self._write_vectors(self._index)
            if not self._lexical_path(self.generation).exists():
                self.lexical = self._build_lexical(persist=True)

    def refresh(self) -> None:
        """Pick up writes made by another process (for example `rag ingest` while the API serves)."""
        with self._lock:
            if self.generation != self._loaded_generation:
                self._load_derived()

    def _apply(
        self, removed: npt.NDArray[np.int64], ids: list[int], vectors: list[Vectors], persist: bool
    ) -> None:
        if removed.size:
            self._index.remove_ids(faiss.IDSelectorBatch(removed))
        if ids:
            self._index.add_with_ids(np.vstack(vectors).astype(np.float32), np.array(ids, dtype=np.int64))
        self._loaded_generation = self.generation
        self.catalog = self._build_catalog()
        if persist:
            self._write_vectors(self._index)
            self.lexical = self._build_lexical(persist=True)

    def _write_vectors(self, index: Any) -> None:
        generation = self.generation
        target = self._vectors_path(generation)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        faiss.write_index(index, str(tmp))
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(target)
        directory = os.open(self.data_dir, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._remove_stale("vectors-*.faiss", target)

    def _remove_stale(self, pattern: str, keep: Path) -> None:
        for stale in self.data_dir.glob(pattern):
            if stale == keep:
                continue
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)

    def _vectors_path(self, generation: int) -> Path:
        return self.data_dir / f"vectors-{generation}.faiss"

    def _lexical_path(self, generation: int) -> Path:
        return self.data_dir / f"bm25-{generation}"

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
