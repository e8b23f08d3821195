"""Question to ranked passages.

``DenseRetriever``: cosine between the question and every allowed chunk (the plain baseline stage).
``NewsRetriever``: dense and BM25 candidates, within the filters and never after ``as_of``, plus the
best candidates of the period the question names (or of the last weeks); each candidate article gets
text, title and date features, a ranker orders them, and near-duplicate copies of one story collapse
into the earliest, listed as "also reported by".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import Protocol

import numpy as np

from index.embed import Vectors
from index.records import Article, Chunk
from index.store import Catalog, Window
from index.store.lexical import LexicalScores
from index.store.protocols import SnapshotView, StoreView
from index.terms import tokenize
from rag.rank import FEATURES, CandidateSignals, FusionRanker, Matrix, Ranker, features
from rag.records import Filters, Hit
from rag.when import Period, read_period, shift

_OVERFETCH = 4
DEFAULT_CANDIDATES = 40
RECENT_DAYS = 14
RECENT_PERIOD_DAYS = 7
SHORT_PERIOD_DAYS = 45


class Retriever(Protocol):
    """Finds the passages most likely to answer a question."""

    def retrieve(
        self, query: str, query_vector: Vectors, k: int, filters: Filters, as_of: date | None
    ) -> list[Hit]: ...


def _cap(filters: Filters, as_of: date | None) -> date | None:
    before = filters.published_before
    if as_of is not None and (before is None or as_of < before):
        return as_of
    return before


class DenseRetriever:
    """Inner product of unit vectors (cosine) between the question and every allowed chunk.

    Returns the best passage of each of the ``k`` best articles, so one long article cannot fill the list.
    """

    def __init__(self, store: StoreView) -> None:
        self._store = store

    def retrieve(
        self, query: str, query_vector: Vectors, k: int, filters: Filters, as_of: date | None
    ) -> list[Hit]:
        snapshot = self._store.snapshot()
        window = snapshot.catalog.window(
            filters.published_after, _cap(filters, as_of), True, filters.sources, filters.exclude
        )
        depth = k * _OVERFETCH
        while True:
            found = snapshot.search(query_vector, depth, window)
            best: dict[str, tuple[Chunk, Article]] = {}
            for chunk, article in self._store.passages([chunk_id for chunk_id, _ in found]):
                best.setdefault(chunk.article_id, (chunk, article))
            if len(best) >= k or len(found) < depth:
                break
            depth *= 4
        scores = dict(found)
        return [
            Hit(rank=rank, score=scores[chunk.id], chunk=chunk, article=article, similarity=scores[chunk.id])
            for rank, (chunk, article) in enumerate(list(best.values())[:k], start=1)
        ]


@dataclass(frozen=True)
class RetrievalConfig:
    """Which stages of NewsRetriever run (all of them in production; fewer for the ablation)."""

    hybrid: bool = True
    """Add BM25 candidates and scores to the dense ones."""
    time: bool = True
    """Add candidates from the question's period (or the last weeks) and date features."""
    collapse_stories: bool = True
    """Fold near-duplicate copies of a story into one hit."""
    candidates: int = DEFAULT_CANDIDATES
    """Chunks taken from each candidate source."""


@dataclass(frozen=True)
class Candidates:
    """Candidate articles for one question: catalog positions, best chunk, ids and feature rows, all
    about one snapshot of the index."""

    snapshot: SnapshotView
    positions: list[int]
    """Catalog slots of the candidate articles."""
    chunk_ids: list[int]
    article_ids: list[str]
    rows: Matrix
    window: Window
    """What the filters and the date cap allow."""


@dataclass
class _Candidate:
    position: int
    chunk_id: int
    dense: float
    bm25: float


class NewsRetriever:
    """Hybrid candidates, news-aware features, a learned ranker, collapsed duplicates."""

    def __init__(
        self, store: StoreView, ranker: Ranker | None = None, config: RetrievalConfig | None = None
    ) -> None:
        self._store = store
        self._ranker = ranker or FusionRanker()
        self.config = config or RetrievalConfig()

    def retrieve(
        self, query: str, query_vector: Vectors, k: int, filters: Filters, as_of: date | None
    ) -> list[Hit]:
        found = self.candidates(query, query_vector, filters, as_of)
        if found is None:
            return []
        scores = self._ranker.score(found.rows)
        order = sorted(range(len(found.positions)), key=lambda i: -scores[i])
        dense = found.rows[:, FEATURES.index("dense")]
        ranked = [(float(scores[i]), found.positions[i], found.chunk_ids[i], float(dense[i])) for i in order]
        return self._hits(found.snapshot, ranked, k, found.window, query_vector)

    def candidates(
        self, query: str, query_vector: Vectors, filters: Filters, as_of: date | None
    ) -> Candidates | None:
        """Candidate articles and their feature rows (what the ranker sees); None when nothing is allowed."""
        snapshot, config = self._store.snapshot(), self.config
        catalog = snapshot.catalog
        if not catalog.chunks:
            return None
        today = as_of or date.today()
        cap = _cap(filters, today)
        window = catalog.window(filters.published_after, cap, True, filters.sources, filters.exclude)
        if window.ids is not None and not window.ids.size:
            return None
        period = read_period(query, today) if config.time else Period()
        candidate_ids = {i for i, _ in snapshot.search(query_vector, config.candidates, window)}
        tokens = tokenize([query])[0]
        lexical = snapshot.lexical.query(tokens if config.hybrid else [])
        if config.hybrid:
            candidate_ids |= {i for i, _ in lexical.top(config.candidates, window)}
        if config.time:
            recent_start = shift(today, -RECENT_DAYS)
            start, end = (period.start, period.end) if period.explicit else (recent_start, today)
            after = max(start, filters.published_after) if start and filters.published_after else start
            before = min(end, cap) if end and cap else end
            recent = replace(window, after=_ordinal(after), before=_ordinal(before), undated=False)
            candidate_ids |= {i for i, _ in snapshot.search(query_vector, config.candidates, recent)}
        if not candidate_ids:
            return None
        ids = sorted(candidate_ids)
        return self._features(snapshot, tokens, query_vector, ids, lexical, period, today, window)

    def _features(
        self,
        snapshot: SnapshotView,
        tokens: list[str],
        query_vector: Vectors,
        chunk_ids: list[int],
        lexical: LexicalScores,
        period: Period,
        today: date,
        window: Window,
    ) -> Candidates:
        catalog = snapshot.catalog
        ids = np.array(chunk_ids, dtype=np.int64)
        slots = catalog.slots(ids)
        dense = snapshot.vectors(ids) @ query_vector.reshape(-1)
        bm25_scores = lexical.of(ids)
        by_article: dict[int, _Candidate] = {}
        for chunk_id, slot, cosine, bm25 in zip(chunk_ids, slots.tolist(), dense, bm25_scores, strict=True):
            seen = by_article.get(slot)
            if seen is None:
                by_article[slot] = _Candidate(slot, chunk_id, float(cosine), float(bm25))
            else:
                if cosine > seen.dense:
                    seen.dense, seen.chunk_id = float(cosine), chunk_id
                seen.bm25 = max(seen.bm25, float(bm25))
        candidates = list(by_article.values())
        dense_rank = _ranks([c.dense for c in candidates])
        bm25_rank = _ranks([c.bm25 for c in candidates])
        query_terms = set(tokens)
        signals = []
        for i, c in enumerate(candidates):
            published = int(catalog.published[c.position])
            day = date.fromordinal(published) if published > 0 else None
            title_terms = catalog.title_terms[c.position]
            signals.append(
                CandidateSignals(
                    dense=c.dense,
                    bm25=c.bm25,
                    dense_rank=dense_rank[i],
                    bm25_rank=bm25_rank[i],
                    title_overlap=len(query_terms & title_terms) / len(query_terms) if query_terms else 0.0,
                    age_days=None if day is None else _distance(day, period, today),
                    in_period=bool(day and period.start and period.end and period.start <= day <= period.end),
                )
            )
        return Candidates(
            snapshot=snapshot,
            positions=[c.position for c in candidates],
            chunk_ids=[c.chunk_id for c in candidates],
            article_ids=[catalog.article_ids[c.position] for c in candidates],
            rows=features(signals, period.explicit, period.recent),
            window=window,
        )

    def _hits(
        self,
        snapshot: SnapshotView,
        ranked: list[tuple[float, int, int, float]],
        k: int,
        window: Window,
        query_vector: Vectors,
    ) -> list[Hit]:
        """The first ``k`` stories of ``ranked`` (score, article position, chunk id, cosine) as hits.

        Text comes from SQLite after the ranking; an article deleted since the snapshot was taken is
        skipped, and the next story moves up."""
        catalog = snapshot.catalog
        chosen: list[_Slot] = []
        story_slot: dict[str, int] = {}
        for score, position, chunk_id, cosine in ranked:
            story = catalog.stories[position]
            if self.config.collapse_stories and story in story_slot:
                chosen[story_slot[story]].members.append(position)
                continue
            story_slot[story] = len(chosen)
            chosen.append(_Slot(score, chunk_id, cosine, [position]))
        if self.config.collapse_stories:
            for slot in chosen:
                for position in catalog.copies(catalog.stories[slot.members[0]]):
                    if position not in slot.members and _admits(catalog, position, window):
                        slot.members.append(position)
        hits: list[Hit] = []
        for start in range(0, len(chosen), k):
            page = chosen[start : start + k]
            passages = {
                chunk.id: (chunk, article)
                for chunk, article in self._store.passages([slot.chunk_id for slot in page])
            }
            copies = (catalog.article_ids[p] for slot in page for p in slot.members[1:])
            copies_by_id = self._store.articles(copies)
            for slot in page:
                if slot.chunk_id not in passages:
                    continue
                passage = passages[slot.chunk_id]
                hits.append(self._hit(snapshot, len(hits) + 1, slot, passage, copies_by_id, query_vector))
                if len(hits) == k:
                    return hits
        return hits

    def _hit(
        self,
        snapshot: SnapshotView,
        rank: int,
        slot: _Slot,
        passage: tuple[Chunk, Article],
        copies_by_id: dict[str, Article],
        query_vector: Vectors,
    ) -> Hit:
        (chunk, shown), cosine = passage, slot.cosine
        catalog = snapshot.catalog
        copies = [
            copies_by_id[article_id]
            for article_id in (catalog.article_ids[p] for p in slot.members)
            if article_id != shown.id and article_id in copies_by_id
        ]
        earliest = min([shown, *copies], key=_published_key)
        if earliest is not shown:  # keep the earliest copy of the story, list the others
            best = self._best_chunk(snapshot, earliest.id, query_vector)
            if best is not None:
                copies = [shown, *[c for c in copies if c is not earliest]]
                chunk, shown, cosine = best
        return Hit(rank, slot.score, chunk, shown, cosine, tuple(sorted(copies, key=_published_key)))

    def _best_chunk(
        self, snapshot: SnapshotView, article_id: str, query_vector: Vectors
    ) -> tuple[Chunk, Article, float] | None:
        """The chunk of an article closest to the question, or None when it was deleted meanwhile."""
        catalog = snapshot.catalog
        position = catalog.slot_of.get(article_id)
        if position is None:
            return None
        ids = np.array(catalog.chunks_of[position], dtype=np.int64)
        cosines = snapshot.vectors(ids) @ query_vector.reshape(-1)
        best = int(np.argmax(cosines))
        found = self._store.passages([int(ids[best])])
        return (*found[0], float(cosines[best])) if found else None


def _ordinal(day: date | None) -> int | None:
    return day.toordinal() if day else None


def _admits(catalog: Catalog, slot: int, window: Window) -> bool:
    """Whether an article passes the window's dates and outlets (a copy of a story must, to be listed)."""
    day = int(catalog.published[slot])
    if day < 0:
        dated_ok = window.undated
    else:
        after, before = window.after, window.before
        dated_ok = (after is None or day >= after) and (before is None or day <= before)
    if not dated_ok:
        return False
    if window.ids is None:
        return True
    chunks = catalog.chunks_of.get(slot, ())
    return bool(chunks) and bool(np.isin(chunks[0], window.ids))


@dataclass
class _Slot:
    score: float
    chunk_id: int
    cosine: float
    members: list[int]


def _distance(day: date, period: Period, today: date) -> int:
    """Days from the day asked, or, when the question names a short period (a day, a month) that ended
    over a week ago ("on June 5, 2023", "in March 2023"), days outside that period (0 inside it).

    Years ("in 2019", "last year") stay soft: in the dev questions they are mostly background to recent
    news ("... rose in 2020 from 78.8 years in 2019. What was ...?"), and measuring age from them cost
    1.4 points of Hit@1 on the briefs tune half."""
    start, end = period.start, period.end
    if start is None or end is None or end >= shift(today, -RECENT_PERIOD_DAYS):
        return (today - day).days
    if (end - start).days > SHORT_PERIOD_DAYS:
        return (today - day).days
    if day < start:
        return (start - day).days
    return max((day - end).days, 0)


def _published_key(article: Article) -> tuple[bool, date, str]:
    return (article.published_at is None, article.published_at or date.max, article.id)


def _ranks(values: list[float]) -> list[int]:
    """1-based rank of each value, highest first; zero values rank last."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0] * len(values)
    for rank, i in enumerate(order, start=1):
        ranks[i] = rank if values[i] > 0 else len(values) + 1
    return ranks
