"""Question to ranked passages.

``DenseRetriever``: cosine between the question and every allowed chunk (the plain baseline stage).
``NewsRetriever``: dense and BM25 candidates, within the filters and never after ``as_of``, plus the
best candidates of the period the question names (or of the last weeks); each candidate article gets
text, title and date features, a ranker orders them, and near-duplicate copies of one story collapse
into the earliest, listed as "also reported by".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

import numpy as np
import numpy.typing as npt

from index.embed import Embedder, Vectors
from index.lexical import tokenize
from index.records import Article, Chunk
from index.store import IndexStore
from rag.rank import FEATURES, CandidateSignals, FusionRanker, Matrix, Ranker, features
from rag.records import Filters, Hit
from rag.when import Period, read_period

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

    def __init__(self, store: IndexStore, embedder: Embedder) -> None:
        self._store = store
        self._embedder = embedder

    def retrieve(
        self, query: str, query_vector: Vectors, k: int, filters: Filters, as_of: date | None
    ) -> list[Hit]:
        before = _cap(filters, as_of)
        allowed = None
        if filters.sources or filters.published_after or before:
            allowed = self._store.chunk_ids(filters.sources, filters.published_after, before)
        depth = k * _OVERFETCH
        while True:
            found = self._store.search(query_vector, depth, allowed)
            chunks = self._store.chunks([chunk_id for chunk_id, _ in found])
            best: dict[str, Chunk] = {}
            for chunk in chunks:
                best.setdefault(chunk.article_id, chunk)
            if len(best) >= k or len(found) < depth:
                break
            depth *= 4
        scores = dict(found)
        top = list(best.values())[:k]
        articles = self._store.articles(c.article_id for c in top)
        return [
            Hit(
                rank=rank,
                score=scores[chunk.id],
                chunk=chunk,
                article=articles[chunk.article_id],
                similarity=scores[chunk.id],
            )
            for rank, chunk in enumerate(top, start=1)
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
    """Candidate articles for one question: catalog positions, best chunk, ids and feature rows."""

    positions: list[int]
    chunk_ids: list[int]
    article_ids: list[str]
    rows: Matrix
    mask: npt.NDArray[np.bool_]


@dataclass
class _Candidate:
    position: int
    chunk_id: int
    dense: float
    bm25: float


class NewsRetriever:
    """Hybrid candidates, news-aware features, a learned ranker, collapsed duplicates."""

    def __init__(
        self, store: IndexStore, ranker: Ranker | None = None, config: RetrievalConfig | None = None
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
        return self._hits(ranked, k, found.mask, query_vector)

    def candidates(
        self, query: str, query_vector: Vectors, filters: Filters, as_of: date | None
    ) -> Candidates | None:
        """Candidate articles and their feature rows (what the ranker sees); None when nothing is allowed."""
        store, catalog, config = self._store, self._store.catalog, self.config
        if catalog.chunk_ids.size == 0:
            return None
        today = as_of or date.today()
        mask = store.chunk_mask(filters.sources, filters.published_after, _cap(filters, today))
        if not mask.any():
            return None
        period = read_period(query, today) if config.time else Period()
        candidate_ids = self._dense_candidates(query_vector, mask)
        lexical = np.zeros(catalog.chunk_ids.size, dtype=np.float32)
        if config.hybrid:
            index = store.lexical
            lexical = index.scores(query)
            if np.array_equal(index.chunk_ids, catalog.chunk_ids):
                masked = np.where(mask, lexical, 0.0)
                top = np.argsort(-masked)[: config.candidates]
                candidate_ids |= {int(catalog.chunk_ids[i]) for i in top if masked[i] > 0}
            else:  # BM25 is rebuilt at the end of an ingest; until then it is left out
                lexical = np.zeros(catalog.chunk_ids.size, dtype=np.float32)
        if config.time:
            start, end = (
                (period.start, period.end)
                if period.explicit
                else (today - timedelta(days=RECENT_DAYS), today)
            )
            window = mask & store.chunk_mask(None, start, end, undated=False)
            if window.any():
                candidate_ids |= self._dense_candidates(query_vector, window)
        return self._features(query, query_vector, sorted(candidate_ids), lexical, period, today, mask)

    def _dense_candidates(self, query_vector: Vectors, mask: npt.NDArray[np.bool_]) -> set[int]:
        catalog = self._store.catalog
        allowed = None if mask.all() else catalog.chunk_ids[mask]
        return {i for i, _ in self._store.search(query_vector, self.config.candidates, allowed)}

    def _features(
        self,
        query: str,
        query_vector: Vectors,
        chunk_ids: list[int],
        lexical: npt.NDArray[np.float32],
        period: Period,
        today: date,
        mask: npt.NDArray[np.bool_],
    ) -> Candidates:
        catalog = self._store.catalog
        ids = np.array(chunk_ids, dtype=np.int64)
        positions = np.searchsorted(catalog.chunk_ids, ids)
        dense = self._store.vectors(ids) @ query_vector.reshape(-1)
        by_article: dict[int, _Candidate] = {}
        for chunk_id, position, cosine in zip(chunk_ids, positions, dense, strict=True):
            article = int(catalog.chunk_article[position])
            bm25 = float(lexical[position])
            seen = by_article.get(article)
            if seen is None:
                by_article[article] = _Candidate(article, chunk_id, float(cosine), bm25)
            else:
                if cosine > seen.dense:
                    seen.dense, seen.chunk_id = float(cosine), chunk_id
                seen.bm25 = max(seen.bm25, bm25)
        candidates = list(by_article.values())
        dense_rank = _ranks([c.dense for c in candidates])
        bm25_rank = _ranks([c.bm25 for c in candidates])
        query_terms = set(tokenize([query])[0])
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
            positions=[c.position for c in candidates],
            chunk_ids=[c.chunk_id for c in candidates],
            article_ids=[catalog.article_ids[c.position] for c in candidates],
            rows=features(signals, period.explicit, period.recent),
            mask=mask,
        )

    def _hits(
        self,
        ranked: list[tuple[float, int, int, float]],
        k: int,
        mask: npt.NDArray[np.bool_],
        query_vector: Vectors,
    ) -> list[Hit]:
        """The first ``k`` stories of ``ranked`` (score, article position, chunk id, cosine) as hits."""
        catalog = self._store.catalog
        chosen: list[_Slot] = []
        story_slot: dict[str, int] = {}
        for score, position, chunk_id, cosine in ranked:
            story = catalog.stories[position]
            if self.config.collapse_stories and story in story_slot:
                chosen[story_slot[story]].members.append(position)
                continue
            if len(chosen) < k:
                story_slot[story] = len(chosen)
                chosen.append(_Slot(score, chunk_id, cosine, [position]))
        if self.config.collapse_stories and catalog.copies:
            allowed_articles = set(catalog.chunk_article[mask].tolist())
            for slot in chosen:
                for position in catalog.copies.get(catalog.stories[slot.members[0]], ()):
                    if position not in slot.members and position in allowed_articles:
                        slot.members.append(position)
        chunk_list = self._store.chunks([slot.chunk_id for slot in chosen])
        articles = self._store.articles(catalog.article_ids[p] for slot in chosen for p in slot.members)
        hits = []
        for rank, (slot, best) in enumerate(zip(chosen, chunk_list, strict=True), start=1):
            shown, chunk, cosine = articles[best.article_id], best, slot.cosine
            copies = [
                articles[catalog.article_ids[p]] for p in slot.members if catalog.article_ids[p] != shown.id
            ]
            earliest = min([shown, *copies], key=_published_key)
            if earliest is not shown:  # keep the earliest copy of the story, list the others
                copies = [shown, *[c for c in copies if c is not earliest]]
                shown = earliest
                chunk, cosine = self._best_chunk(earliest.id, query_vector)
            hits.append(
                Hit(rank, slot.score, chunk, shown, cosine, tuple(sorted(copies, key=_published_key)))
            )
        return hits

    def _best_chunk(self, article_id: str, query_vector: Vectors) -> tuple[Chunk, float]:
        catalog = self._store.catalog
        position = catalog.article_ids.index(article_id)
        ids = catalog.chunk_ids[catalog.chunk_article == position]
        cosines = self._store.vectors(ids) @ query_vector.reshape(-1)
        best = int(np.argmax(cosines))
        return self._store.chunks([int(ids[best])])[0], float(cosines[best])


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
    if start is None or end is None or end >= today - timedelta(days=RECENT_PERIOD_DAYS):
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
