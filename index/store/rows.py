"""The rows of one index in SQLite, the truth the in-memory indexes are derived from: schema, recovery
checks, transactions, and every statement the store runs.

One write connection (its transactions serialised by the store), and one read-only connection per
reading thread (WAL readers never wait for a writer). Texts are read by id in single statements; ids
whose rows a later write removed are left out, never an error.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from index.chunk import ChunkDraft
from index.embed import Vectors
from index.errors import IndexCorruptError, IndexMismatchError
from index.records import Article, Chunk, Span
from index.store.markers import DB_NAME, INDEX_MARKER, RECOVER, mark, marked, refuse_lost
from index.store.protocols import CatalogEntry

SCHEMA_VERSION = "4"
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
_CHUNK_PART = 50_000


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


class Rows:
    """The SQLite file of one index; see the module docstring."""

    def __init__(self, data_dir: Path, model_name: str, dimension: int) -> None:
        """Open (or create) ``meta.sqlite`` in ``data_dir``; refuse one of another schema, model or
        dimension, an unreadable one, and one emptied though its folder held an index."""
        self.data_dir = data_dir
        self.path = data_dir / DB_NAME
        self._readers = threading.local()
        self._reader_list: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self.db = self._connect()
        self._check_meta(model_name, dimension)

    # --- connections and transactions -----------------------------------------------------------------

    def _connect(self, reader: bool = False) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
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
                f"the index metadata {self.path} is unreadable ({exc}); {RECOVER.format(dir=self.data_dir)}"
            ) from exc
        return db

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection."""
        db: sqlite3.Connection | None = getattr(self._readers, "db", None)
        if db is None:
            db = self._connect(reader=True)
            self._readers.db = db
            with self._readers_lock:
                self._reader_list.append(db)
        return db

    def close(self) -> None:
        self.db.close()
        with self._readers_lock:
            for db in self._reader_list:
                db.close()
            self._reader_list.clear()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextlib.contextmanager
    def read_transaction(self) -> Iterator[None]:
        """One consistent view of the database for several statements."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def _check_meta(self, model_name: str, dimension: int) -> None:
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            with self.transaction():
                self.db.executemany(
                    "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                    [
                        ("schema", SCHEMA_VERSION),
                        ("model", model_name),
                        ("dimension", str(dimension)),
                        ("generation", "0"),
                    ],
                )
            meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        recover = RECOVER.format(dir=self.data_dir)
        if meta.get("schema") != SCHEMA_VERSION:
            raise IndexMismatchError(
                f"the index in {self.data_dir} has schema {meta.get('schema')}, this code reads "
                f"{SCHEMA_VERSION}; {recover}"
            )
        if meta.get("generation") == "0" and marked(self.data_dir, INDEX_MARKER):
            refuse_lost(self.data_dir, INDEX_MARKER, "articles")
        if meta.get("generation", "0") != "0" and not marked(self.data_dir, INDEX_MARKER):
            mark(self.data_dir, INDEX_MARKER)  # an index written before markers existed
        if meta.get("model") != model_name or meta.get("dimension") != str(dimension):
            raise IndexMismatchError(
                f"the index in {self.data_dir} was built with {meta.get('model')} ({meta.get('dimension')} "
                f"dimensions) but the service embeds with {model_name} ({dimension}); "
                f"{recover}, or point RAG_DATA_DIR elsewhere"
            )

    # --- the generation --------------------------------------------------------------------------------

    def generation(self, db: sqlite3.Connection | None = None) -> int:
        (value,) = (db or self.db).execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(value)

    def bump_generation(self) -> int:
        self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        return self.generation()

    # --- reading (any thread) --------------------------------------------------------------------------

    def article_count(self) -> int:
        (count,) = self.reader().execute("SELECT COUNT(*) FROM articles").fetchone()
        return int(count)

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = dict.fromkeys(ids)
        for start in range(0, len(ids), 900):
            part = list(ids[start : start + 900])
            rows = self.reader().execute(
                f"SELECT id, content_hash FROM articles WHERE id IN ({','.join('?' * len(part))})", part
            )
            found.update({r[0]: str(r[1]) for r in rows})
        return found

    def articles(self, ids: Iterable[str]) -> dict[str, Article]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        rows = self.reader().execute(
            f"SELECT {_ARTICLE_COLUMNS} FROM articles a WHERE a.id IN ({','.join('?' * len(wanted))})",
            wanted,
        )
        return {row[0]: _article(row) for row in rows}

    def passages(self, ids: Sequence[int]) -> list[tuple[Chunk, Article]]:
        if not ids:
            return []
        query = (
            f'SELECT c.id, c.article_id, c.ordinal, c.start, c."end", c.text, c.n_tokens, {_ARTICLE_COLUMNS} '
            f"FROM chunks c JOIN articles a ON a.id = c.article_id WHERE c.id IN ({','.join('?' * len(ids))})"
        )
        rows = self.reader().execute(query, list(ids)).fetchall()
        by_id = {r[0]: (Chunk(r[0], r[1], r[2], Span(r[3], r[4]), r[5], r[6]), _article(r[7:])) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def sentence_vectors(self, article_id: str, spans: Sequence[Span]) -> dict[Span, Vectors]:
        if not spans:
            return {}
        wanted = {span.start: span for span in spans}
        rows = (
            self.reader()
            .execute(
                f'SELECT start, "end", vector FROM sentences WHERE article_id = ? '
                f"AND start IN ({','.join('?' * len(wanted))})",
                [article_id, *wanted],
            )
            .fetchall()
        )
        return {wanted[start]: dequantize(vector) for start, end, vector in rows if wanted[start].end == end}

    def sentence_blobs(self, ranges: Sequence[tuple[str, int, int]]) -> dict[tuple[str, int, int], bytes]:
        """The stored (quantized) vectors of every sentence inside each (article id, start, end) range,
        in one statement, by (article id, sentence start, sentence end)."""
        if not ranges:
            return {}
        where = " OR ".join(['(article_id = ? AND start >= ? AND "end" <= ?)'] * len(ranges))
        rows = self.reader().execute(
            f'SELECT article_id, start, "end", vector FROM sentences WHERE {where}',
            [value for item in ranges for value in item],
        )
        return {(r[0], r[1], r[2]): r[3] for r in rows}

    def minhashes(self) -> list[tuple[str, bytes | None, str, str | None]]:
        """(article id, MinHash signature, story, publication date) of every article, in insertion order."""
        rows = self.reader().execute(
            "SELECT id, minhash, story_id, published_at FROM articles ORDER BY rowid"
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    # --- reading (the writer's connection, inside its transactions) ------------------------------------

    def catalog_entries(self, article_ids: Sequence[str] | None) -> list[CatalogEntry]:
        query = "SELECT id, published_at, source, story_id, title_terms FROM articles"
        args: list[str] = []
        if article_ids is not None:
            if not article_ids:
                return []
            query += f" WHERE id IN ({','.join('?' * len(article_ids))})"
            args = list(article_ids)
        articles = self.db.execute(query, args).fetchall()
        chunks: dict[str, list[int]] = {}
        chunk_query = "SELECT article_id, id FROM chunks"
        if article_ids is not None:
            chunk_query += f" WHERE article_id IN ({','.join('?' * len(article_ids))})"
        for article_id, chunk_id in self.db.execute(chunk_query + " ORDER BY id", args):
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

    def live_chunk_ids(self) -> npt.NDArray[np.int64]:
        return np.array([r[0] for r in self.db.execute("SELECT id FROM chunks ORDER BY id")], dtype=np.int64)

    def chunk_ids_of(self, article_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        marks = ",".join("?" * len(article_ids))
        rows = self.db.execute(f"SELECT id FROM chunks WHERE article_id IN ({marks})", list(article_ids))
        return np.array([r[0] for r in rows], dtype=np.int64)

    def articles_of_chunks(self, ids: npt.NDArray[np.int64]) -> list[str]:
        if not ids.size:
            return []
        rows = self.db.execute(
            f"SELECT DISTINCT article_id FROM chunks WHERE id IN ({','.join('?' * ids.size)})", ids.tolist()
        )
        return sorted(r[0] for r in rows)

    def chunk_parts(
        self, ids: npt.NDArray[np.int64], vectors: bool, terms: bool
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], list[Any], list[str]]]:
        """The stored vectors (raw bytes) and tokens of chunk ``ids``, with their publication ordinals, in
        pieces of at most 50,000 chunks (so that only one piece's rows are ever in memory)."""
        for start in range(0, ids.size, _CHUNK_PART):
            part = ids[start : start + _CHUNK_PART].tolist()
            rows = self.db.execute(
                f"SELECT c.id, {'c.vector' if vectors else 'NULL'}, {'c.terms' if terms else 'NULL'}, "
                f"a.published_at FROM chunks c JOIN articles a ON a.id = c.article_id "
                f"WHERE c.id IN ({','.join('?' * len(part))}) ORDER BY c.id",
                part,
            ).fetchall()
            if rows:
                days = [date.fromisoformat(r[3]).toordinal() if r[3] else -1 for r in rows]
                yield (
                    np.array([r[0] for r in rows], dtype=np.int64),
                    np.array(days, dtype=np.int32),
                    [r[1] for r in rows],
                    [r[2] for r in rows],
                )

    def terms_after(self, have: int) -> list[tuple[int, str]]:
        """Terms with ids above ``have`` (SQLite rowids start at 1), in id order."""
        return list(self.db.execute("SELECT id, term FROM terms WHERE id > ? ORDER BY id", (have,)))

    # --- writing (inside ``transaction``) --------------------------------------------------------------

    def insert(
        self,
        article: Article,
        now: str,
        story: str,
        minhash: bytes | None,
        title_terms: list[str],
        chunks: Sequence[tuple[ChunkDraft, Vectors, list[str]]],
        sentences: Sequence[Span],
        sentence_vectors: Vectors | None,
    ) -> list[int]:
        """Replace the rows of ``article``: it, its chunks (with their vectors and tokens) and its
        sentences' vectors; returns the new chunk ids."""
        a = article
        self.db.execute("DELETE FROM articles WHERE id = ?", (a.id,))
        self.db.execute(
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
        ids = []
        for draft, vector, tokens in chunks:
            cursor = self.db.execute(
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
        if sentence_vectors is not None and len(sentences):
            self.db.executemany(
                'INSERT OR REPLACE INTO sentences (article_id, start, "end", vector) VALUES (?, ?, ?, ?)',
                [
                    (a.id, span.start, span.end, blob)
                    for span, blob in zip(sentences, quantize(sentence_vectors), strict=True)
                ],
            )
        return ids

    def add_terms(self, terms: Iterable[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO terms (term) VALUES (?)", [(t,) for t in terms])

    def delete(self, article_id: str) -> bool:
        """Remove an article and (by cascade) its chunks and sentences; False when there was none."""
        return bool(self.db.execute("DELETE FROM articles WHERE id = ?", (article_id,)).rowcount)

    # --- the segment files' records --------------------------------------------------------------------

    def recorded_segments(self, kind: str | None = None) -> list[tuple[str, str]]:
        """(name, checksum) of the recorded segments of ``kind`` (all kinds when None), largest first."""
        if kind is None:
            return [(r[0], r[1]) for r in self.db.execute("SELECT name, checksum FROM segments")]
        rows = self.db.execute(
            "SELECT name, checksum FROM segments WHERE kind = ? ORDER BY chunks DESC", (kind,)
        )
        return [(r[0], r[1]) for r in rows]

    def record_segments(
        self, written: Sequence[tuple[str, str, str, int]], dropped: Sequence[str]
    ) -> set[str]:
        """Record ``written`` (name, kind, checksum, chunks) and forget ``dropped``; returns the names that
        were recorded before (a segment another process replaced meanwhile is not, and is left alone)."""
        with self.transaction():
            recorded = {r[0] for r in self.db.execute("SELECT name FROM segments")}
            self.db.executemany("INSERT INTO segments VALUES (?, ?, ?, ?)", written)
            self.db.executemany(
                "DELETE FROM segments WHERE name = ?", [(n,) for n in dropped if n in recorded]
            )
        return recorded

    def forget_segments(self, names: Sequence[str]) -> None:
        with self.transaction():
            self.db.executemany("DELETE FROM segments WHERE name = ?", [(n,) for n in names])


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
