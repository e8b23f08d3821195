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
from index.store.probe import Probe
from index.store.protocols import CatalogEntry, IndexReader, LexicalScores
from index.store.window import Window
from rag.linear import Matrix
from rag.rank import NAMES, CandidateSignals, FusionRanker, Ranker, features
from rag.records import Filters, Hit, Question
from rag.when import Period, shift

_OVERFETCH = 4
DEFAULT_CANDIDATES = 40
RECENT_DAYS = 14
RECENT_PERIOD_DAYS = 7
SHORT_PERIOD_DAYS = 45
MAX_CARRIED_ARTICLES = 10
"""A follow-up's candidates from the last answer's citations, at most."""


class Retriever(Protocol):
    """Finds the passages most likely to answer a question, in one reader of the index."""

    def retrieve(self, question: Question, vector: Vectors, reader: IndexReader) -> list[Hit]: ...


def _cap(filters: Filters, as_of: date | None) -> date | None:
    before = filters.published_before
    if as_of is not None and (before is None or as_of < before):
        return as_of
    return before


def _window(reader: IndexReader, filters: Filters, cap: date | None) -> Window:
    return reader.window(filters.published_after, cap, True, filters.sources, filters.exclude)


class DenseRetriever:
    """Inner product of unit vectors (cosine) between the question and every allowed chunk.

    Returns the best passage of each of the ``k`` best articles, so one long article cannot fill the list.
    """

    def retrieve(self, question: Question, vector: Vectors, reader: IndexReader) -> list[Hit]:
        k = question.top_k
        window = _window(reader, question.filters, _cap(question.filters, question.as_of))
        depth = k * _OVERFETCH
        while True:
            found = reader.dense(vector, depth, window)
            best: dict[str, tuple[Chunk, Article]] = {}
            for chunk, article in reader.passages([chunk_id for chunk_id, _ in found]):
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
    """Candidate articles for one question, each with its best chunk and its feature row, all read
    from one reader of the index."""

    entries: list[CatalogEntry]
    chunk_ids: list[int]
    rows: Matrix
    window: Window
    """What the filters and the date cap allow."""

    @property
    def article_ids(self) -> list[str]:
        return [e.article_id for e in self.entries]


@dataclass
class _Candidate:
    entry: CatalogEntry
    chunk_id: int
    dense: float
    bm25: float


class NewsRetriever:
    """Hybrid candidates, news-aware features, a learned ranker, collapsed duplicates."""

    def __init__(self, ranker: Ranker | None = None, config: RetrievalConfig | None = None) -> None:
        self._ranker = ranker or FusionRanker()
        self.config = config or RetrievalConfig()

    def retrieve(self, question: Question, vector: Vectors, reader: IndexReader) -> list[Hit]:
        found = self.candidates(question, vector, reader)
        if found is None:
            return []
        scores = self._ranker.score(found.rows)
        order = sorted(range(len(found.entries)), key=lambda i: -scores[i])
        dense = found.rows[:, NAMES.index("dense")]
        ranked = [(float(scores[i]), found.entries[i], found.chunk_ids[i], float(dense[i])) for i in order]
        return self._hits(reader, ranked, question.top_k, found.window, vector)

    def candidates(self, question: Question, vector: Vectors, reader: IndexReader) -> Candidates | None:
        """Candidate articles and their feature rows (what the ranker sees); None when nothing is allowed."""
        config, filters, today = self.config, question.filters, question.today
        if not reader.size:
            return None
        cap = _cap(filters, today)
        window = _window(reader, filters, cap)
        if window.ids is not None and not window.ids.size:
            return None
        cited = _cited(reader, question, window)
        days = [e.published for e in cited if e.published]
        if question.follow and question.follow.after_cited and days:
            # "What happened after that?": only what was published after the last answer's newest source.
            later = shift(max(days), 1)
            if filters.published_after is None or filters.published_after < later:
                filters = replace(filters, published_after=later)
                window = _window(reader, filters, cap)
                cited = [e for e in cited if _admits(e, window)]
        period = question.period if config.time else Period()
        tokens = list(question.tokens) if config.hybrid else []
        searches = [(window, config.candidates)]
        if config.time:
            recent_start = shift(today, -RECENT_DAYS)
            start, end = (period.start, period.end) if period.explicit else (recent_start, today)
            after = max(start, filters.published_after) if start and filters.published_after else start
            before = min(end, cap) if end and cap else end
            recent = replace(window, after=_ordinal(after), before=_ordinal(before), undated=False)
            searches.append((recent, config.candidates))
        lexical_search = (window, config.candidates) if config.hybrid else None
        reader.prefetch(Probe(vector, tuple(tokens), tuple(searches), lexical_search))
        candidate_ids = {i for w, n in searches for i, _ in reader.dense(vector, n, w)}
        lexical = reader.lexical(tokens)
        if lexical_search is not None:
            candidate_ids |= {i for i, _ in lexical.top(config.candidates, window)}
        candidate_ids |= {int(i) for e in cited for i in e.chunk_ids}
        if not candidate_ids:
            return None
        ids = sorted(candidate_ids)
        return self._features(reader, tokens, vector, ids, lexical, period, today, window)

    def _features(
        self,
        reader: IndexReader,
        tokens: list[str],
        vector: Vectors,
        chunk_ids: list[int],
        lexical: LexicalScores,
        period: Period,
        today: date,
        window: Window,
    ) -> Candidates:
        ids = np.array(chunk_ids, dtype=np.int64)
        dense = reader.similarities(vector, ids)
        bm25_scores = lexical.of(ids)
        by_article: dict[str, _Candidate] = {}
        entries = reader.entries_of(chunk_ids)
        for chunk_id, entry, cosine, bm25 in zip(chunk_ids, entries, dense, bm25_scores, strict=True):
            if entry is None:
                continue
            seen = by_article.get(entry.article_id)
            if seen is None:
                by_article[entry.article_id] = _Candidate(entry, chunk_id, float(cosine), float(bm25))
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
            day = c.entry.published
            title_terms = c.entry.title_terms
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
            entries=[c.entry for c in candidates],
            chunk_ids=[c.chunk_id for c in candidates],
            rows=features(signals, period.explicit, period.recent),
            window=window,
        )

    def _hits(
        self,
        reader: IndexReader,
        ranked: list[tuple[float, CatalogEntry, int, float]],
        k: int,
        window: Window,
        vector: Vectors,
    ) -> list[Hit]:
        """The first ``k`` stories of ``ranked`` (score, article, chunk id, cosine) as hits.

        Text comes from the reader after the ranking; an article deleted since the reader was taken is
        skipped, and the next story moves up."""
        chosen: list[_Slot] = []
        story_slot: dict[str, int] = {}
        for score, entry, chunk_id, cosine in ranked:
            if self.config.collapse_stories and entry.story in story_slot:
                chosen[story_slot[entry.story]].members.append(entry)
                continue
            story_slot[entry.story] = len(chosen)
            chosen.append(_Slot(score, chunk_id, cosine, [entry]))
        if self.config.collapse_stories:
            for slot in chosen:
                known = {m.article_id for m in slot.members}
                for copy in reader.story(slot.members[0].story):
                    if copy.article_id not in known and _admits(copy, window):
                        slot.members.append(copy)
        hits: list[Hit] = []
        for start in range(0, len(chosen), k):
            page = chosen[start : start + k]
            passages = {
                chunk.id: (chunk, article) for chunk, article in reader.passages([s.chunk_id for s in page])
            }
            copies_by_id = reader.articles(m.article_id for slot in page for m in slot.members[1:])
            for slot in page:
                if slot.chunk_id not in passages:
                    continue
                passage = passages[slot.chunk_id]
                hits.append(self._hit(reader, len(hits) + 1, slot, passage, copies_by_id, vector))
                if len(hits) == k:
                    return hits
        return hits

    def _hit(
        self,
        reader: IndexReader,
        rank: int,
        slot: _Slot,
        passage: tuple[Chunk, Article],
        copies_by_id: dict[str, Article],
        vector: Vectors,
    ) -> Hit:
        (chunk, shown), cosine = passage, slot.cosine
        copies = [
            copies_by_id[m.article_id]
            for m in slot.members
            if m.article_id != shown.id and m.article_id in copies_by_id
        ]
        earliest = min([shown, *copies], key=_published_key)
        if earliest is not shown:  # keep the earliest copy of the story, list the others
            best = self._best_chunk(reader, earliest.id, vector)
            if best is not None:
                copies = [shown, *[c for c in copies if c is not earliest]]
                chunk, shown, cosine = best
        return Hit(rank, slot.score, chunk, shown, cosine, tuple(sorted(copies, key=_published_key)))

    def _best_chunk(
        self, reader: IndexReader, article_id: str, vector: Vectors
    ) -> tuple[Chunk, Article, float] | None:
        """The chunk of an article closest to the question, or None when it was deleted meanwhile."""
        entry = reader.entry(article_id)
        if entry is None:
            return None
        ids = np.array(entry.chunk_ids, dtype=np.int64)
        cosines = reader.similarities(vector, ids)
        best = int(np.argmax(cosines))
        found = reader.passages([int(ids[best])])
        return (*found[0], float(cosines[best])) if found else None


def _cited(reader: IndexReader, question: Question, window: Window) -> list[CatalogEntry]:
    """A follow-up's carried articles (what the last answer cited) that the window admits."""
    if question.follow is None:
        return []
    entries = (reader.entry(i) for i in question.follow.article_ids[:MAX_CARRIED_ARTICLES])
    return [e for e in entries if e is not None and _admits(e, window)]


def _ordinal(day: date | None) -> int | None:
    return day.toordinal() if day else None


def _admits(entry: CatalogEntry, window: Window) -> bool:
    """Whether an article passes the window's dates and outlets (a copy of a story must, to be listed)."""
    if not window.admits(entry.published.toordinal() if entry.published else -1):
        return False
    if window.ids is None:
        return True
    return bool(entry.chunk_ids) and bool(np.isin(entry.chunk_ids[0], window.ids))


@dataclass
class _Slot:
    score: float
    chunk_id: int
    cosine: float
    members: list[CatalogEntry]


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
