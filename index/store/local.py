"""The index on one machine: SQLite is the truth (rows.py); a vector index, a lexical index and a catalog
are kept in memory beside it, their large segments saved as checksummed files (files.py).

Readers never see a write in progress. Every question takes one immutable ``LocalReader`` (catalog,
vector and lexical readers of one generation) and works on it alone; a write commits to SQLite, applies the
change to the in-memory indexes (a cost of the batch's size, not the corpus's: see vectors.py and
lexical.py) and publishes the next snapshot with one reference swap. Text (chunks, article bodies) is
read from SQLite by id at the end of a query, in single statements; an id whose row a later write
removed is skipped, so an article deleted before a query began can never be cited.

Writes are crash-safe by construction: each is one SQLite transaction that also bumps a
``generation`` counter; the segment files are derived. Opening loads the recorded segments whose
checksums hold and builds whatever no segment covers from SQLite rows (chunk vectors and the tokens
stored beside them, so nothing is embedded or tokenized again).

Another process may write to the same index (``rag ingest`` while ``rag serve`` runs): writers take
SQLite's write lock, and a process whose memory is behind the database catches up by the difference
(chunk ids added and removed since), never by a rebuild. ``watch`` starts a thread that does so.

Near-duplicate articles (syndicated or updated copies) share a ``story_id``, assigned at write time by
the story rule of index/dedup.py.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from index.chunk import passage_text
from index.dedup import StoryAssigner, signature
from index.embed import Vectors
from index.errors import ArticleNotFoundError, IndexCorruptError
from index.records import Article, Chunk, Span
from index.store import lexical as lexical_segments
from index.store import vectors as vector_segments
from index.store.catalog import Catalog, CatalogLookups
from index.store.files import SegmentFiles
from index.store.follow import Listeners, start_follower
from index.store.lexical import SegmentedBM25, Vocabulary
from index.store.markers import INDEX_MARKER, RECOVER, mark, marked, require_metadata
from index.store.probe import Probe
from index.store.protocols import ArticleWrite, CatalogEntry, LexicalScores, Statistics, Tokens
from index.store.rows import Rows
from index.store.vectors import SegmentedVectors
from index.store.window import EVERYTHING, Hits, Ids, Window
from index.terms import tokenize

DEFAULT_FOLLOW_SECONDS = 1.0
DEFAULT_PERSIST_MIN = 20_000
_SEGMENTS = {SegmentedVectors.KIND: vector_segments.Segment, SegmentedBM25.KIND: lexical_segments.Segment}


class LocalReader(CatalogLookups):
    """One generation of the index on this machine, frozen (``IndexReader``): the catalog and the vector
    and lexical readers of that generation; text from SQLite."""

    def __init__(
        self,
        generation: int,
        catalog: Catalog,
        vectors: vector_segments.VectorReader,
        lexical: lexical_segments.SegmentedReader,
        dimension: int,
        rows: Rows,
    ) -> None:
        self._generation = generation
        self.catalog = catalog
        self.vector_reader = vectors
        self.lexical_reader = lexical
        self.dimension = dimension
        self._rows = rows

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def missing_shards(self) -> tuple[int, ...]:
        return ()

    def prefetch(self, probe: Probe) -> None:
        """Nothing to gain on one machine: every search is as cheap done when it is asked."""
        del probe

    def dense(self, query: Vectors, k: int, window: Window = EVERYTHING) -> Hits:
        return self.vector_reader.search(query, k, window)

    def vectors(self, ids: Ids) -> Vectors:
        if not ids.size:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.vector_reader.vectors(ids)

    def similarities(self, query: Vectors, ids: Ids) -> npt.NDArray[np.float32]:
        return np.asarray(self.vectors(ids) @ query.reshape(-1), dtype=np.float32)

    def statistics(self, tokens: Tokens) -> Statistics:
        return self.lexical_reader.statistics(tokens)

    def lexical(self, tokens: Tokens, statistics: Statistics | None = None) -> LexicalScores:
        return self.lexical_reader.query(tokens, statistics)

    def idf(self, tokens: Tokens) -> npt.NDArray[np.float64]:
        return self.lexical_reader.idf(tokens)

    def passages(self, ids: Sequence[int]) -> list[tuple[Chunk, Article]]:
        return self._rows.passages(ids)

    def articles(self, ids: Iterable[str]) -> dict[str, Article]:
        return self._rows.articles(ids)

    def sentence_vectors(self, article_id: str, spans: Sequence[Span]) -> dict[Span, Vectors]:
        return self._rows.sentence_vectors(article_id, spans)

    def sentence_blobs(self, ranges: Sequence[tuple[str, int, int]]) -> dict[tuple[str, int, int], bytes]:
        """The quantized vectors of the sentences inside these (article id, start, end) ranges (what a
        shard sends its driver)."""
        return self._rows.sentence_blobs(ranges)


class IndexStore:
    """SQLite rows plus in-memory vector and lexical segments; ids are chunk rowids.

    Safe to share between threads: questions take ``reader()``; writers are serialised (``Index``)."""

    def __init__(
        self,
        data_dir: Path,
        model_name: str,
        dimension: int,
        persist_min: int = DEFAULT_PERSIST_MIN,
        ivf_threshold: int = vector_segments.DEFAULT_IVF_THRESHOLD,
    ) -> None:
        """Open (or create) the index in ``data_dir``; refuse one built with another model or dimension,
        and one whose metadata is missing though the folder held an index."""
        self.data_dir = data_dir
        self.model_name = model_name
        self.dimension = dimension
        self.ivf_threshold = ivf_threshold
        self._write_lock = threading.RLock()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._listeners = Listeners()
        data_dir.mkdir(parents=True, exist_ok=True)
        require_metadata(data_dir)
        self._rows = Rows(data_dir, model_name, dimension)
        self._files = SegmentFiles(data_dir, self._rows, dimension, persist_min, _SEGMENTS)
        self._marked = marked(data_dir, INDEX_MARKER)
        self._stories: StoryAssigner | None = None
        with self._write_lock:
            with self._rows.read_transaction():
                self._load()
            self._files.forget_discarded()
            self._publish()

    @property
    def persist_min(self) -> int:
        return self._files.persist_min

    # --- opening -------------------------------------------------------------------------------------

    def _load(self) -> None:
        """Inside a read transaction: the whole in-memory state from SQLite and the segment files."""
        self._generation = self._rows.generation()
        self._vocabulary = Vocabulary()
        self._sync_vocabulary()
        self._vectors = SegmentedVectors(self.dimension, ivf_threshold=self.ivf_threshold)
        self._lexical = SegmentedBM25(vocabulary=self._vocabulary)
        self._files.reset()
        self._catalog = Catalog.build(self._rows.catalog_entries(None))
        live = np.flatnonzero(self._catalog.chunk_slot >= 0).astype(np.int64)
        for index in (self._vectors, self._lexical):
            segments, done = self._files.load(index.KIND, live)
            for segment in segments:
                index.add_segment(segment)
            missing = live[~np.isin(live, done, assume_unique=True, kind="table")] if done.size else live
            if missing.size:
                kind = index.KIND
                self._add_from_rows(missing, vectors=kind == "vectors", lexical=kind == "lexical")
        self._files.remove_unrecorded()

    def _add_from_rows(self, ids: npt.NDArray[np.int64], vectors: bool = True, lexical: bool = True) -> None:
        """Add chunks to the in-memory indexes from their SQLite rows (vectors and stored tokens), as one
        segment of each kind, read in pieces so that only the segment's own arrays are ever whole."""
        id_parts, day_parts, vector_parts, count_parts = [], [], [], []
        for chunk_ids, days, blobs, terms in self._rows.chunk_parts(ids, vectors, lexical):
            id_parts.append(chunk_ids)
            day_parts.append(days)
            if vectors:
                matrix = np.vstack([np.frombuffer(b, dtype=np.float32) for b in blobs])
                if matrix.shape[1] != self.dimension:
                    recover = RECOVER.format(dir=self.data_dir)
                    raise IndexCorruptError(f"stored vectors have dimension {matrix.shape[1]}; {recover}")
                vector_parts.append(matrix)
            if lexical:
                encoded = [self._vocabulary.encode(t.split()) for t in terms]
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

    def reader(self) -> LocalReader:
        """The latest published generation; take it once per question and read only from it."""
        return self._reader

    @property
    def generation(self) -> int:
        """The generation of the database (the published reader may trail it briefly)."""
        return self._rows.generation(self._rows.reader())

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str | None]:
        return self._rows.content_hashes(ids)

    def catalog_entries(self, article_ids: Iterable[str] | None = None) -> list[CatalogEntry]:
        """What the catalog holds of these articles (all when None), writes not yet published included
        (what a cluster's shard reports to its driver)."""
        catalog = self._catalog
        slots = (
            list(catalog.chunks_of)
            if article_ids is None
            else [catalog.slot_of[a] for a in article_ids if a in catalog.slot_of]
        )
        return [catalog.entry(slot) for slot in slots]

    def minhashes(self) -> list[tuple[str, bytes | None, str, str | None]]:
        """(article id, MinHash signature, story, publication date) of every article, in insertion order."""
        return self._rows.minhashes()

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
                old = self._rows.chunk_ids_of([w.article.id for w in batch])
                new_ids: list[int] = []
                tokens: list[list[str]] = []
                published: list[int] = []
                entries: list[CatalogEntry] = []
                stories = self._story_assigner()
                for item in batch:
                    ids, chunk_tokens, entry = self._insert(item, now, stories)
                    new_ids.extend(ids)
                    tokens.extend(chunk_tokens)
                    published.extend([_ordinal(item.article.published_at)] * len(ids))
                    entries.append(entry)
                self._sync_vocabulary()
                generation = self._rows.bump_generation()
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
                old = self._rows.chunk_ids_of([article_id])
                if not self._rows.delete(article_id):
                    raise ArticleNotFoundError(f"no article with id {article_id!r}")
                generation = self._rows.bump_generation()
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
        if self._rows.generation(self._rows.reader()) == self._generation:
            return False
        with self._write_lock:
            with self._rows.read_transaction():
                changed = self._sync()
            if changed:
                self._publish()
        return changed

    def follow(self, interval: float = DEFAULT_FOLLOW_SECONDS) -> None:
        """Start a thread that publishes other processes' writes within about ``interval`` seconds."""
        if self._follower is None:
            self._follower = start_follower(self.refresh, interval, self._stop, "index")

    def on_publish(self, listener: Callable[[int], object]) -> None:
        self._listeners.add(listener)

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=30)
        with self._write_lock:
            self._rows.close()

    def _insert(
        self, item: ArticleWrite, now: str, stories: StoryAssigner
    ) -> tuple[list[int], list[list[str]], CatalogEntry]:
        a = item.article
        minhash = signature(a.body)
        if item.story is None:
            story = stories.assign(a.id, minhash, a.published_at)
        else:
            story = item.story
            stories.add(a.id, minhash, story, a.published_at)
        title_terms = tokenize([a.title])[0] if a.title else []
        passages = [passage_text(a, draft.text) for draft in item.chunks]
        chunk_tokens = tokenize(passages) if passages else []
        chunks = list(zip(item.chunks, item.vectors, chunk_tokens, strict=True))
        ids = self._rows.insert(
            a, now, story, minhash, title_terms, chunks, item.sentences, item.sentence_vectors
        )
        known = self._vocabulary.ids
        self._rows.add_terms({t for tokens in chunk_tokens for t in tokens if t not in known})
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
        generation = self._rows.generation()
        if generation == self._generation:
            return False
        self._sync_vocabulary()
        live = self._rows.live_chunk_ids()
        known = np.flatnonzero(self._catalog.chunk_slot >= 0).astype(np.int64)
        removed = np.setdiff1d(known, live)
        added = np.setdiff1d(live, known)
        slots = self._catalog.slots(removed)
        gone = {self._catalog.article_ids[s] for s in slots.tolist() if s >= 0}
        changed_articles = self._rows.articles_of_chunks(added)
        self._vectors.remove(removed)
        self._lexical.remove(removed)
        self._add_from_rows(added)
        self._catalog = self._catalog.changed(self._rows.catalog_entries(changed_articles), gone)
        self._stories = None  # rebuilt at this process's next write
        self._generation = generation
        return True

    def _sync_vocabulary(self) -> None:
        for term_id, term in self._rows.terms_after(len(self._vocabulary.ids)):
            self._vocabulary.ids[term] = term_id - 1  # SQLite rowids start at 1

    def _story_assigner(self) -> StoryAssigner:
        if self._stories is None:
            self._stories = StoryAssigner(self._rows.minhashes())
        return self._stories

    def _publish(self) -> None:
        """Make the in-memory state what new queries read, and save its large segments."""
        self._reader = LocalReader(
            self._generation,
            self._catalog,
            self._vectors.reader(),
            self._lexical.reader(),
            self.dimension,
            self._rows,
        )
        self._files.persist(
            {SegmentedVectors.KIND: self._vectors.segments, SegmentedBM25.KIND: self._lexical.segments}
        )
        self._listeners.tell(self._generation)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write transaction; on failure the in-memory state is reloaded from SQLite."""
        try:
            with self._rows.transaction():
                yield
        except BaseException:
            self._stories = None
            with self._rows.read_transaction():
                self._load()
            raise


def _ordinal(day: date | None) -> int:
    return day.toordinal() if day else -1
