"""Records of the question-answering side: what is asked, what is found, what is answered."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from index.records import Article, Chunk, Span
from rag.follow import Resolution
from rag.when import Period


@dataclass(frozen=True)
class Filters:
    """Restrictions on which articles may be used."""

    sources: tuple[str, ...] = ()
    published_after: date | None = None
    published_before: date | None = None
    exclude: tuple[str, ...] = ()
    """Article ids to leave out (and with them, nothing else)."""


@dataclass(frozen=True)
class Question:
    """A question as the service receives it, validated and analysed once (rag/question.py)."""

    text: str
    as_of: date | None
    """Only articles published on or before this day are used (undated articles always are)."""
    top_k: int
    filters: Filters
    today: date
    """The day it is asked: ``as_of``, or the day it arrived."""
    tokens: tuple[str, ...]
    """Its words as the lexical index counts them (index/terms.py), in order."""
    period: Period
    """The period it names, read against ``today`` (rag/when.py)."""
    names: tuple[str, ...]
    """Capitalised words after the first (names it mentions)."""
    wants: frozenset[str]
    """The kind of thing it asks for: ``count`` ("how many", "what percentage"), ``date`` ("when did"),
    ``timeline`` ("how did ... unfold", "what has happened since ...", "timeline of ..."), ``reason``
    ("why did ...", "what caused ...")."""
    focus: tuple[str, ...] = ()
    """The thing it asks for when it names one ("population" in "What is the population of Baku?"), as
    index tokens: the answer must speak of it, not only of the topic."""
    asked: tuple[str, ...] = ()
    """Its own words (``tokens`` without what a follow-up carries): what its answer's sentences should
    hold."""
    searched: str = ""
    """What is embedded and shown as searched: ``text``, or for a follow-up its standalone question."""
    follow: Resolution | None = None
    """How a follow-up leans on its conversation (rag/follow.py); None when it stands alone."""


@dataclass(frozen=True)
class Hit:
    """A retrieved passage with its article and score (higher is better)."""

    rank: int
    score: float
    """The ranker's score: comparable within one result list only."""
    chunk: Chunk
    article: Article
    similarity: float
    """Cosine between the question and this passage: comparable across questions (used to abstain)."""
    also_reported: tuple[Article, ...] = ()
    """Near-duplicate copies of the same story (syndicated or updated), collapsed into this hit."""


@dataclass(frozen=True)
class Citation:
    """One quoted sentence of one article; ``quote == article.body[span.start:span.end]``. A headline-only
    article is cited as a source only, never quoted (``headline_only``; its quote is empty)."""

    n: int
    article_id: str
    title: str
    source: str | None
    url: str | None
    published_at: date | None
    quote: str
    span: Span
    score: float
    headline_only: bool = False
    """Points to a headline-only article (ranked above what is quoted): no quote, an empty span."""


@dataclass(frozen=True)
class Sentence:
    """One sentence of an answer and the numbers of the citations behind it (what a stream sends)."""

    text: str
    cites: tuple[int, ...]
    verified: bool = True
    """Checked and supported by its citations (always, for verbatim quotes)."""


@dataclass(frozen=True)
class ShortAnswer:
    """The words of a quote that answer, when the reader is confident (rag/reader.py)."""

    text: str
    n: int
    """The citation whose quote holds it."""
    start: int
    """Character offsets in that citation's quote: ``quote[start:end] == text``."""
    end: int
    probability: float
    """The reader's probability that its sentence states the answer."""


@dataclass(frozen=True)
class Coverage:
    """How old the sources an answer cites are."""

    oldest: date | None
    newest: date | None
    articles: int
    """Distinct articles cited."""
    before_period: bool = False
    """The newest source was published before the period the question asks about."""
    note: str | None = None
    """Says so, in words, when ``before_period``."""


@dataclass(frozen=True)
class Answer:
    """A short answer whose every sentence is a verbatim quote ending in ``[n]``."""

    text: str
    abstained: bool
    citations: tuple[Citation, ...]
    passages: tuple[Hit, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)
    sentences: tuple[Sentence, ...] = ()
    """The answer sentence by sentence, without the ``[n]`` marks (``text`` has them)."""
    generated: bool = False
    """Written by the language model (and checked), rather than quoted."""
    fallback: str | None = None
    """Why a generated answer was asked for but the extractive one is given (the model was down, ...)."""
    missing_shards: tuple[int, ...] = ()
    """On a cluster: shards that could not take part (the answer comes from the others)."""
    standalone_question: str = ""
    """What was searched: the question, or a follow-up made standalone (rag/follow.py)."""
    rewritten_by: str | None = None
    """``rules`` or ``model`` when the question leaned on its conversation."""
    coverage: Coverage | None = None
    """The dates of the cited sources."""
    timeline: bool = False
    """Dated entries, oldest first, one per story ("how did ... unfold?")."""
    short_answer: ShortAnswer | None = None
    """The words that answer, inside one citation's quote; None when the reader is off or unsure."""
    unstated: str | None = None
    """Says in words that the quotes are about the question but none states what it asks (a why the
    articles never give: rag/unstated.py); None otherwise."""
