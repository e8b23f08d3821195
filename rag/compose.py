"""Retrieved passages to a short answer made only of verbatim, cited sentences. No language model.

Every sentence of every retrieved passage is a candidate. A candidate's score mixes how close the
sentence is to the question (cosine of the packaged bi-encoder), the share of the question's words it
contains (stemmed, no stopwords), and how high its passage was ranked.
The best few candidates within a margin of the top one are kept, near-repeats dropped, and they are
read out grouped by article (best article first) in the order they stand in the article.

With the reader (rag/reader.py, on by default), the best candidates that fit ``read_pieces`` word
pieces (at most ``read`` of them) are read with the question: the one it gives the highest probability
of stating the answer leads the quotes when that is at least ``answers_at``, and the scored choice fills
the places left; the leading one's span is the short answer when its probability is at least
``short_at``. With the reader, every sentence of the lead article is a candidate, not only those of its
retrieved passages (the asked-for fact is often elsewhere in a long article).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import numpy as np

from index.embed import Embedder, Vectors
from index.records import Span
from index.sentences import split_sentences
from index.store.protocols import IndexReader
from index.terms import tokenize
from rag.reader import Reading, SpanReader
from rag.records import Citation, Hit, Question, Sentence, ShortAnswer
from rag.relative import long_date

DEFAULT_MAX_SENTENCES = 3
DEFAULT_MARGIN = 0.12
DEFAULT_REPEAT_COSINE = 0.9
DEFAULT_SENTENCE_WEIGHT = 0.4
DEFAULT_LEXICAL_WEIGHT = 0.4
DEFAULT_RANK_WEIGHT = 0.2
DEFAULT_MIN_SENTENCE_CHARS = 25
_CACHE_SIZE = 20_000
TIMELINE_MARGIN = 0.2
"""A story is an entry of a timeline when its best sentence scores within this of the best one."""
TIMELINE_ENTRIES = 8
DEFAULT_READ = 6
"""Candidates the reader reads for a question at most: as many of the best as fit ``read_pieces``."""
DEFAULT_READ_PIECES = 96
"""Word pieces the reader reads for a question (question and markers included): its cost follows them,
about 0.12 ms a piece here. On the tune halves, short answers holding a gold one: briefs 0.794 (64),
0.759 (96), 0.741 (128); articles 0.558, 0.628, 0.605 (benchmarks/reader.py; evals/RESULTS.md)."""
DEFAULT_ANSWERS_AT = 0.25
DEFAULT_SHORT_AT = 0.25
"""Both chosen on the tune half by ``python -m evals.fit.short`` (evals/RESULTS.md, issue 30)."""


@dataclass(frozen=True)
class Composition:
    """The composer's output: text whose sentences end in [n], and the citations behind the numbers."""

    text: str
    citations: tuple[Citation, ...]
    best_score: float
    sentences: tuple[Sentence, ...] = ()
    fallback: str | None = None
    """Set when a generative composer answered extractively instead, and why."""
    usage: dict[str, float] = field(default_factory=dict)
    """Model time (``model``, ms) and token counts, for ``timings_ms``."""
    generated: bool = False
    """Written by a language model (and checked), rather than quoted."""
    short_answer: ShortAnswer | None = None
    best_answer: float = 0.0
    """The reader's highest probability that a candidate states the answer (0 without a reader)."""


class AnswerComposer(Protocol):
    """Builds a cited answer from retrieved passages, reading sentence vectors from the question's reader
    of the index."""

    def compose(
        self, question: Question, vector: Vectors, hits: list[Hit], reader: IndexReader
    ) -> Composition: ...

    def closest(
        self, question: Question, vector: Vectors, hits: list[Hit], reader: IndexReader, articles: int
    ) -> tuple[Citation, ...]:
        """The best sentence of each of the first ``articles`` articles (what an abstention lists)."""
        ...


@dataclass(frozen=True)
class _Candidate:
    hit: Hit
    span: Span
    text: str
    score: float
    vector: Vectors


class ExtractiveComposer:
    """Picks the sentences of the passages that best answer the question; each one is cited."""

    def __init__(
        self,
        embedder: Embedder,
        max_sentences: int = DEFAULT_MAX_SENTENCES,
        margin: float = DEFAULT_MARGIN,
        repeat_cosine: float = DEFAULT_REPEAT_COSINE,
        sentence_weight: float = DEFAULT_SENTENCE_WEIGHT,
        lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
        rank_weight: float = DEFAULT_RANK_WEIGHT,
        span_reader: SpanReader | None = None,
        read: int = DEFAULT_READ,
        read_pieces: int = DEFAULT_READ_PIECES,
        answers_at: float = DEFAULT_ANSWERS_AT,
        short_at: float = DEFAULT_SHORT_AT,
    ) -> None:
        """Sentence vectors come from the index (computed at ingest); sentences it lacks are embedded
        here with ``embedder`` (and cached). ``span_reader``: None chooses by scores alone."""
        self._embedder = embedder
        self.max_sentences = max_sentences
        self.margin = margin
        self.repeat_cosine = repeat_cosine
        self.sentence_weight = sentence_weight
        self.lexical_weight = lexical_weight
        self.rank_weight = rank_weight
        self.span_reader = span_reader
        self.read = read
        self.read_pieces = read_pieces
        self.answers_at = answers_at
        self.short_at = short_at
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self._cache_lock = threading.Lock()

    def compose(
        self, question: Question, vector: Vectors, hits: list[Hit], reader: IndexReader
    ) -> Composition:
        return self.compose_many([(question, vector, hits)], reader)[0]

    def compose_many(
        self, asked: Sequence[tuple[Question, Vectors, list[Hit]]], reader: IndexReader
    ) -> list[Composition]:
        """``compose`` for several questions, the reader reading them all in one run (a new article
        checked against the standing questions it comes near)."""
        prepared = [
            self.candidates(question, vector, hits, reader, whole_lead=self.span_reader is not None)
            for question, vector, hits in asked
        ]
        readings: list[list[Reading]] = [[] for _ in asked]
        if self.span_reader is not None:
            wanted = [
                (question.searched or question.text, [c.text for c in candidates[: self.read]])
                for (question, _, _), candidates in zip(asked, prepared, strict=True)
            ]
            readings = self.span_reader.read_many(wanted, rows=1, max_length=self.read_pieces)
        return [self._composed(c, r) for c, r in zip(prepared, readings, strict=True)]

    def _composed(self, candidates: list[_Candidate], readings: list[Reading]) -> Composition:
        """The answer from ``candidates`` (best first) and the reader's readings of the first of them."""
        if not candidates:
            return Composition("", (), 0.0)
        chosen = self._select(candidates)
        lead: tuple[_Candidate, Reading] | None = None
        best_answer = 0.0
        if readings:
            best = max(zip(candidates, readings, strict=False), key=lambda pair: pair[1].probability)
            best_answer = best[1].probability
            if best_answer >= self.answers_at:
                lead = best
                chosen = self._select([lead[0], *chosen], floor=-np.inf)
        rest = chosen[1:] if lead is not None else chosen
        order = {c.hit.article.id: i for i, c in reversed(list(enumerate(rest)))}
        rest.sort(key=lambda c: (order[c.hit.article.id], c.span.start))
        chosen = chosen[:1] + rest if lead is not None else rest
        citations = tuple(_citation(n, c) for n, c in enumerate(chosen, start=1))
        text = " ".join(f"{c.quote} [{c.n}]" for c in citations)
        sentences = tuple(Sentence(c.quote, (c.n,)) for c in citations)
        short = None
        if lead is not None and lead[1].probability >= self.short_at:
            reading = lead[1]
            words = lead[0].text[reading.start : reading.end]
            short = ShortAnswer(words, 1, reading.start, reading.end, round(reading.probability, 4))
        return Composition(
            text, citations, candidates[0].score, sentences, short_answer=short, best_answer=best_answer
        )

    def timeline(
        self, question: Question, vector: Vectors, hits: list[Hit], reader: IndexReader
    ) -> Composition | None:
        """How a story developed: the best sentence of each dated story among ``hits`` whose best is
        within ``TIMELINE_MARGIN`` of the best of all, oldest first, each entry opening with its date
        ("2 May 2024: ..."); None when no such story is dated (then the answer is composed as usual)."""
        candidates = self.candidates(question, vector, hits, reader)
        if not candidates:
            return None
        floor = candidates[0].score - TIMELINE_MARGIN
        best: dict[str, _Candidate] = {}
        for candidate in candidates:
            if candidate.score >= floor and candidate.hit.article.published_at is not None:
                best.setdefault(candidate.hit.article.id, candidate)
        if not best:
            return None
        chosen = sorted(best.values(), key=lambda c: (c.hit.article.published_at or date.max, c.span.start))
        citations = tuple(_citation(n, c) for n, c in enumerate(chosen[:TIMELINE_ENTRIES], start=1))
        sentences = tuple(
            Sentence(f"{long_date(c.published_at)}: {c.quote}", (c.n,)) for c in citations if c.published_at
        )
        text = " ".join(f"{s.text} [{s.cites[0]}]" for s in sentences)
        return Composition(text, citations, candidates[0].score, sentences)

    def closest(
        self, question: Question, vector: Vectors, hits: list[Hit], reader: IndexReader, articles: int
    ) -> tuple[Citation, ...]:
        """The best sentence of each of the first ``articles`` distinct articles (used when abstaining)."""
        best: dict[str, _Candidate] = {}
        for candidate in self.candidates(question, vector, hits, reader):
            best.setdefault(candidate.hit.article.id, candidate)
        return tuple(_citation(n, c) for n, c in enumerate(list(best.values())[:articles], start=1))

    def candidates(
        self,
        question: Question,
        vector: Vectors,
        hits: list[Hit],
        reader: IndexReader,
        whole_lead: bool = False,
    ) -> list[_Candidate]:
        """Every distinct sentence of the hits, best first; ``whole_lead``: every sentence of the first
        hit's article too, not only of its retrieved passages (the reader may find the answer there)."""
        seen: set[tuple[str, int]] = set()
        found: list[tuple[Hit, Span, str]] = []
        parts = [(hit, hit.chunk.text, hit.chunk.span.start) for hit in hits]
        if whole_lead and hits:
            parts.append((hits[0], hits[0].article.body, 0))
        for hit, part, base in parts:
            body = hit.article.body
            for local in split_sentences(part):
                span = Span(base + local.start, base + local.end)
                key = (hit.article.id, span.start)
                text = body[span.start : span.end]
                if key in seen or len(text) < DEFAULT_MIN_SENTENCE_CHARS:
                    continue
                seen.add(key)
                found.append((hit, span, text))
        if not found:
            return []
        vectors = self._vectors(found, reader)
        similarity = vectors @ vector.reshape(-1)
        query_terms = set(question.asked)
        sentence_terms = tokenize([text for _, _, text in found])
        scored = []
        for (hit, span, text), sim, sentence_vector, terms in zip(
            found, similarity, vectors, sentence_terms, strict=True
        ):
            overlap = len(query_terms & set(terms)) / len(query_terms) if query_terms else 0.0
            score = (
                self.sentence_weight * float(sim)
                + self.lexical_weight * overlap
                + self.rank_weight / hit.rank
            )
            scored.append(_Candidate(hit, span, text, score, sentence_vector))
        scored.sort(key=lambda c: -c.score)
        return scored

    def _select(self, candidates: list[_Candidate], floor: float | None = None) -> list[_Candidate]:
        """The first ``max_sentences`` of ``candidates`` scoring within the margin of the first (or above
        ``floor``), near-repeats of one already chosen left out."""
        chosen: list[_Candidate] = []
        floor = candidates[0].score - self.margin if floor is None else floor
        for candidate in candidates:
            if len(chosen) == self.max_sentences or candidate.score < floor:
                break
            if any(float(candidate.vector @ c.vector) >= self.repeat_cosine for c in chosen):
                continue
            chosen.append(candidate)
        return chosen

    def _vectors(self, found: list[tuple[Hit, Span, str]], reader: IndexReader) -> Vectors:
        stored: dict[tuple[str, Span], Vectors] = {}
        by_article: dict[str, list[Span]] = {}
        for hit, span, _ in found:
            by_article.setdefault(hit.article.id, []).append(span)
        for article_id, spans in by_article.items():
            for span, vector in reader.sentence_vectors(article_id, spans).items():
                stored[(article_id, span)] = vector
        missing = [text for hit, span, text in found if (hit.article.id, span) not in stored]
        embedded = dict(zip(missing, self._embed(missing), strict=True)) if missing else {}
        rows = [
            stored[(h.article.id, s)] if (h.article.id, s) in stored else embedded[t] for h, s, t in found
        ]
        return np.vstack(rows).astype(np.float32)

    def _embed(self, texts: list[str]) -> Vectors:
        with self._cache_lock:
            known = {t: self._cache[t] for t in texts if t in self._cache}
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            fresh = dict(zip(missing, self._embedder.embed(missing), strict=True))
            known.update(fresh)
            with self._cache_lock:
                self._cache.update(fresh)
                while len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
        return np.vstack([known[t] for t in texts])


def _citation(n: int, candidate: _Candidate) -> Citation:
    article = candidate.hit.article
    return Citation(
        n=n,
        article_id=article.id,
        title=article.headline,
        source=article.source,
        url=article.url,
        published_at=article.published_at,
        quote=candidate.text,
        span=candidate.span,
        score=round(candidate.score, 4),
    )
