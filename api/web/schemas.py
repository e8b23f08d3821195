"""What crosses HTTP: request and response bodies, and their conversion from rag/index records."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

import msgspec

from api.store.jobs import Job
from index.clean import MAX_AUTHORS, MAX_NAME_CHARS, MAX_TITLE_CHARS, VISIBLE
from index.dates import DATE_PATTERN
from index.records import ID_PATTERN, Article, IngestReport
from index.urls import MAX_URL_CHARS
from rag.answer import MAX_TOP_K
from rag.config import DEFAULT_MAX_QUESTION_CHARS
from rag.follow import MAX_HISTORY
from rag.records import Answer, Citation, Coverage, Hit, ShortAnswer

MAX_ARTICLE_CHARS = 200_000
"""Longest article body accepted over HTTP (about 30,000 words)."""
MAX_ARTICLES_PER_REQUEST = 1000

# "Not blank" is one visible character (index/clean.py VISIBLE), stated so that JSON Schema's regexes and
# Python's agree on it: both count control characters and every kind of space as blank.
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=DEFAULT_MAX_QUESTION_CHARS, pattern=VISIBLE)]
TopK = Annotated[int, msgspec.Meta(ge=1, le=MAX_TOP_K)]
Outlet = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]


class FiltersIn(msgspec.Struct, forbid_unknown_fields=True):
    sources: Annotated[list[Outlet], msgspec.Meta(max_length=50)] | None = None
    """Only these outlets (case-insensitive)."""
    published_after: date | None = None
    published_before: date | None = None


class TurnIn(msgspec.Struct, forbid_unknown_fields=True):
    """One earlier message of the conversation."""

    role: Literal["user", "assistant"]
    content: Text
    """What was asked or answered: 1-2,000 characters, not only spaces."""
    article_ids: (
        Annotated[list[Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]], msgspec.Meta(max_length=50)] | None
    ) = None
    """An assistant turn's cited articles (its citations' ``article_id``): candidates for a follow-up."""
    as_of: date | None = None
    """A user turn's ``as_of``: carried to a follow-up that gives none."""


class AskIn(msgspec.Struct, forbid_unknown_fields=True):
    question: Text
    """The question in plain language: 1-2,000 characters, not only spaces."""
    as_of: date | None = None
    """Answer as on this day: nothing published later is used. Default: today."""
    top_k: TopK | None = None
    """Passages to retrieve (1-50, default 5)."""
    filters: FiltersIn | None = None
    history: Annotated[list[TurnIn], msgspec.Meta(max_length=MAX_HISTORY)] | None = None
    """The conversation so far, oldest first (at most 20 messages). A question that leans on it ("When
    will it be back?") is searched with what the conversation was about; one that stands alone is
    answered as if asked alone. ``standalone_question`` in the answer says what was searched."""


class ArticleIn(msgspec.Struct, forbid_unknown_fields=True):
    """One article, with the fields of a corpus.jsonl record. Title, outlet and authors are stored as
    plain text (markup removed); the body is cleaned of markup and page furniture."""

    body: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ARTICLE_CHARS, pattern=VISIBLE)]
    id: Annotated[str, msgspec.Meta(pattern=ID_PATTERN)] | None = None
    """Stable id (1-200 ASCII letters, digits and ``_ . : -``, not starting with a dot); default: a hash
    of the url, else of title, outlet and opening text."""
    title: Annotated[str, msgspec.Meta(max_length=MAX_TITLE_CHARS)] | None = None
    url: (
        Annotated[str, msgspec.Meta(max_length=MAX_URL_CHARS, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://")] | None
    ) = None
    """An http(s) address, stored in canonical, escaped form; one that cannot be read is refused (422)."""
    source: Outlet | None = None
    published_at: Annotated[str, msgspec.Meta(max_length=64, pattern=DATE_PATTERN)] | None = None
    """A date: 2024-01-19, an ISO date-time, or a written form such as "January 19, 2024" or
    "Fri, 19 Jan 2024 10:00:00 GMT" (a day that does not exist, such as 2023-02-30, is refused: 422)."""
    authors: (
        Annotated[
            list[Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]],
            msgspec.Meta(max_length=MAX_AUTHORS),
        ]
        | None
    ) = None


ArticlesIn = (
    ArticleIn | Annotated[list[ArticleIn], msgspec.Meta(min_length=1, max_length=MAX_ARTICLES_PER_REQUEST)]
)


class ProblemOut(msgspec.Struct):
    """RFC 9457 problem details (``application/problem+json``)."""

    status: int
    title: str
    detail: str | None = None


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
    headline_only: bool = False
    """A source known by its headline alone (no article text was captured): pointed to, never quoted;
    ``quote`` is empty."""


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
    """The chunk's text; empty for a headline-only article (found by its headline, outlet, date and
    address)."""
    span: SpanOut
    also_reported: list[CopyOut]
    headline_only: bool = False


class SentenceOut(msgspec.Struct):
    text: str
    cites: list[int]
    verified: bool
    """Checked against its citations (quotes always are; generated sentences that fail are dropped unless
    the service keeps them marked)."""


class CoverageOut(msgspec.Struct):
    """How old the cited sources are."""

    oldest: date | None
    newest: date | None
    articles: int
    """Distinct articles cited."""
    before_period: bool
    """Even the newest source is older than the period the question asks about."""
    note: str | None
    """Says so, when ``before_period``."""


class ShortAnswerOut(msgspec.Struct):
    """The words that answer, inside citation ``n``'s quote (``quote[start:end] == text``)."""

    text: str
    n: int
    start: int
    end: int
    probability: float
    """The reader's probability that the quote states the answer."""


class AnswerOut(msgspec.Struct):
    answer: str
    abstained: bool
    citations: list[CitationOut]
    passages: list[PassageOut]
    timings_ms: dict[str, float]
    """Per stage, in ms; with a language model also ``model`` (ms), ``prompt_tokens`` and
    ``completion_tokens``."""
    sentences: list[SentenceOut]
    generated: bool
    """Written by the language model and checked, rather than quoted."""
    fallback: str | None
    """Why the quoted answer is given although a language model is configured (it was down, slow, or
    nothing it wrote was supported)."""
    degraded: bool
    """On a cluster: some shards could not take part; the answer comes from the others."""
    missing_shards: list[int]
    standalone_question: str
    """What was searched: the question itself, or a follow-up made standalone from its ``history``."""
    rewritten_by: str | None
    """How a follow-up was made standalone: ``rules`` (no model) or ``model`` (checked); null when the
    question stood alone."""
    coverage: CoverageOut
    """The dates of the cited sources: oldest, newest, how many articles."""
    timeline: bool
    """The answer is a timeline ("how did ... unfold?"): dated entries, oldest first, one per story."""
    short_answer: ShortAnswerOut | None
    """The words of the first quote that answer, when the reader is confident; null otherwise (and when
    the answer is refused, generated, a timeline, or RAG_READER=off)."""
    unstated: str | None
    """Says in words that the quotes are about the question but none states what it asks (a why the
    articles never give); null otherwise."""


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
    headline_only: bool = False
    """Nothing of the body survived cleaning; the article is indexed by its headline and address."""


class IngestOut(msgspec.Struct):
    added: list[str]
    replaced: list[str]
    unchanged: list[str]
    failed: list[str]


class JobOut(msgspec.Struct):
    """A background ingest; poll ``url`` until ``status`` is done or failed."""

    id: str
    url: str
    status: str
    """queued, running, done or failed."""
    total: int
    done: int
    submitted_at: str
    finished_at: str | None
    report: IngestOut | None
    error: str | None


class HealthOut(msgspec.Struct):
    status: str
    articles: int
    chunks: int
    generation: int


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
        c.headline_only,
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
        headline_only=a.headline_only,
    )


def render_answer(answer: Answer) -> dict[str, Any]:
    """An answer as /ask gives it, as JSON values (what an alert carries)."""
    rendered: dict[str, Any] = msgspec.to_builtins(answer_out(answer))
    return rendered


def answer_out(answer: Answer) -> AnswerOut:
    return AnswerOut(
        answer=answer.text,
        abstained=answer.abstained,
        citations=[citation_out(c) for c in answer.citations],
        passages=[passage_out(h) for h in answer.passages],
        timings_ms=answer.timings_ms,
        sentences=[SentenceOut(s.text, list(s.cites), s.verified) for s in answer.sentences],
        generated=answer.generated,
        fallback=answer.fallback,
        degraded=bool(answer.missing_shards),
        missing_shards=list(answer.missing_shards),
        standalone_question=answer.standalone_question,
        rewritten_by=answer.rewritten_by,
        coverage=coverage_out(answer.coverage),
        timeline=answer.timeline,
        short_answer=short_answer_out(answer.short_answer),
        unstated=answer.unstated,
    )


def short_answer_out(s: ShortAnswer | None) -> ShortAnswerOut | None:
    return None if s is None else ShortAnswerOut(s.text, s.n, s.start, s.end, s.probability)


def coverage_out(c: Coverage | None) -> CoverageOut:
    if c is None:
        return CoverageOut(None, None, 0, False, None)
    return CoverageOut(c.oldest, c.newest, c.articles, c.before_period, c.note)


def article_out(a: Article) -> ArticleOut:
    return ArticleOut(
        a.id, a.title, a.source, a.url, a.published_at, list(a.authors), a.body, a.headline_only
    )


def ingest_out(report: IngestReport) -> IngestOut:
    return IngestOut(list(report.added), list(report.replaced), list(report.unchanged), list(report.failed))


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        url=f"/jobs/{job.id}",
        status=job.status,
        total=job.total,
        done=job.done,
        submitted_at=job.submitted_at,
        finished_at=job.finished_at,
        report=ingest_out(job.report) if job.report else None,
        error=job.error,
    )


def cited_source(c: Citation) -> dict[str, Any]:
    """A citation as /v1 and MCP give it: ``outlet`` and ``headline`` are /ask's ``source`` and
    ``title`` (the names those protocols' clients expect; docs/http-api.md has the mapping)."""
    return {
        "n": c.n,
        "article_id": c.article_id,
        "outlet": c.source,
        "headline": c.title,
        "published_at": c.published_at,
        "url": c.url,
        "quote": c.quote,
    }
