"""What crosses HTTP: request and response bodies, and their conversion from rag/index records."""

from __future__ import annotations

from datetime import date

import msgspec

from index.records import Article, IngestReport
from rag.records import Answer, Citation, Hit


class FiltersIn(msgspec.Struct, forbid_unknown_fields=True):
    sources: list[str] | None = None
    published_after: date | None = None
    published_before: date | None = None


class AskIn(msgspec.Struct, forbid_unknown_fields=True):
    question: str
    as_of: date | None = None
    top_k: int | None = None
    filters: FiltersIn | None = None


class SpanOut(msgspec.Struct):
    start: int
    end: int


class CitationOut(msgspec.Struct):
    n: int
    article_id: str
    title: str
    source: str | None
    url: str | None
    published_at: date | None
    quote: str
    span: SpanOut


class CopyOut(msgspec.Struct):
    """Another outlet's (or a later) copy of the same story."""

    article_id: str
    title: str
    source: str | None
    url: str | None
    published_at: date | None


class PassageOut(msgspec.Struct):
    rank: int
    score: float
    """The ranker's score: orders this list, not comparable across questions."""
    similarity: float
    """Cosine between the question and the passage (what abstention looks at)."""
    article_id: str
    title: str
    source: str | None
    url: str | None
    published_at: date | None
    chunk_id: int
    text: str
    span: SpanOut
    also_reported: list[CopyOut]


class AnswerOut(msgspec.Struct):
    answer: str
    abstained: bool
    citations: list[CitationOut]
    passages: list[PassageOut]
    timings_ms: dict[str, float]


class SearchOut(msgspec.Struct):
    passages: list[PassageOut]


class ArticleOut(msgspec.Struct):
    id: str
    title: str
    source: str | None
    url: str | None
    published_at: date | None
    authors: list[str]
    body: str


class IngestOut(msgspec.Struct):
    added: list[str]
    replaced: list[str]
    unchanged: list[str]
    failed: list[str]


class HealthOut(msgspec.Struct):
    status: str
    articles: int
    chunks: int


def citation_out(c: Citation) -> CitationOut:
    return CitationOut(
        c.n,
        c.article_id,
        c.title,
        c.source,
        c.url,
        c.published_at,
        c.quote,
        SpanOut(c.span.start, c.span.end),
    )


def passage_out(h: Hit) -> PassageOut:
    a = h.article
    return PassageOut(
        rank=h.rank,
        score=round(h.score, 4),
        similarity=round(h.similarity, 4),
        article_id=a.id,
        title=a.headline,
        source=a.source,
        url=a.url,
        published_at=a.published_at,
        chunk_id=h.chunk.id,
        text=h.chunk.text,
        span=SpanOut(h.chunk.span.start, h.chunk.span.end),
        also_reported=[CopyOut(c.id, c.headline, c.source, c.url, c.published_at) for c in h.also_reported],
    )


def answer_out(answer: Answer) -> AnswerOut:
    return AnswerOut(
        answer=answer.text,
        abstained=answer.abstained,
        citations=[citation_out(c) for c in answer.citations],
        passages=[passage_out(h) for h in answer.passages],
        timings_ms=answer.timings_ms,
    )


def article_out(a: Article) -> ArticleOut:
    return ArticleOut(a.id, a.title, a.source, a.url, a.published_at, list(a.authors), a.body)


def ingest_out(report: IngestReport) -> IngestOut:
    return IngestOut(list(report.added), list(report.replaced), list(report.unchanged), list(report.failed))
