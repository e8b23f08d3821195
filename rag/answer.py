"""The question-answering service: validate, retrieve, compose, cite, abstain when the news is silent."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import date

import numpy as np
import numpy.typing as npt
import tiktoken

from index.clean import remove_controls
from index.embed import Embedder, Vectors
from index.errors import ConfigError, QuestionError
from index.records import Span
from index.store.protocols import Index, IndexReader
from rag.abstain import Abstainer, evidence
from rag.compose import AnswerComposer, Composition, ExtractiveComposer
from rag.condense import Condenser, ModelCondenser
from rag.config import AnswerSettings
from rag.follow import MAX_HISTORY, ROLES, Resolution, Turn, resolve
from rag.generate import GenerativeComposer, ModelConfig
from rag.question import analyse
from rag.rank import LinearRanker
from rag.reader import DEFAULT_FOLDER, SpanReader, shared_reader
from rag.records import Answer, Citation, Coverage, Filters, Hit, Question, Sentence
from rag.relative import annotate, long_date
from rag.retrieve import NewsRetriever, Retriever
from rag.unstated import stated

# Below this cosine between the question and its best passage, the indexed news is taken not to answer.
# The cosine-only rule of the first version (evals/RESULTS.md, "Abstention threshold"): kept for
# comparison; answers abstain by the evidence model of rag/abstain.py unless ``abstain_below`` is given.
DEFAULT_ABSTAIN_BELOW = 0.34
MAX_TOP_K = 50
# The composer reads the best few passages only; more passages add noise and time, not answers.
DEFAULT_COMPOSE_PASSAGES = 5
TIMELINE_PASSAGES = 10
"""A timeline reads more stories than an answer: one entry each."""
ABSTAIN_TEXT = "The indexed news does not answer this question."
_CLOSEST = 3


class Answerer:
    """Answers questions from one index; safe to share between threads.

    Each question is analysed once (rag/question.py) and read from one reader of the index, taken when
    it is asked: retrieval, composition, abstention and generation all see that one generation."""

    def __init__(
        self,
        index: Index,
        embedder: Embedder,
        settings: AnswerSettings | None = None,
        retriever: Retriever | None = None,
        composer: AnswerComposer | None = None,
        abstain_below: float | None = None,
        abstainer: Abstainer | None = None,
        condenser: Condenser | None = None,
    ) -> None:
        """``abstain_below``: abstain on the best passage's cosine alone (the first version's rule) instead
        of the evidence model (``abstainer``, default rag/abstain.json)."""
        self.index = index
        self.embedder = embedder
        self.settings = settings or AnswerSettings()
        self.retriever = retriever or NewsRetriever(LinearRanker.load())
        self.quotes = ExtractiveComposer(embedder, span_reader=reader_for(self.settings))
        """The extractive composer: what abstention weighs (and the answer, unless a model writes it)."""
        self.composer: AnswerComposer = composer or self.quotes
        self.abstain_below = abstain_below
        self.abstainer = abstainer or (Abstainer.load() if abstain_below is None else None)
        self.condenser = condenser
        """Rewrites follow-ups with a language model (when one is configured)."""

    def question(
        self,
        text: str,
        as_of: date | None = None,
        top_k: int | None = None,
        filters: Filters | None = None,
        history: Sequence[Turn] = (),
    ) -> Question:
        """A validated, analysed Question; raises QuestionError for empty, over-long or contradictory
        input. ``history``: the earlier turns of its conversation, oldest first (rag/follow.py)."""
        stripped = " ".join(remove_controls(text).split()) if isinstance(text, str) else ""
        if not stripped:
            raise QuestionError("the question is empty")
        if len(text) > self.settings.max_question_chars:
            raise QuestionError(
                f"the question has {len(text)} characters; the limit is {self.settings.max_question_chars}"
            )
        top_k = self.settings.top_k if top_k is None else top_k
        if not 1 <= top_k <= MAX_TOP_K:
            raise QuestionError(f"top_k must be between 1 and {MAX_TOP_K}")
        filters = filters or Filters()
        after, before = filters.published_after, filters.published_before
        if after and before and after > before:
            raise QuestionError("published_after is later than published_before")
        follow = self.follow(stripped, history) if history else None
        return analyse(stripped, as_of, top_k, filters, follow=follow)

    @property
    def generates(self) -> bool:
        """Whether a language model writes the answers (one is configured)."""
        return not isinstance(self.composer, ExtractiveComposer)

    def follow(self, question: str, history: Sequence[Turn]) -> Resolution:
        """How ``question`` leans on ``history``: by the rules of rag/follow.py, or, when it leans and a
        language model is configured, the model's standalone rewrite if every content word of it was
        said in the conversation or the question (rag/condense.py)."""
        turns = self._checked_history(history)
        resolution = resolve(question, turns)
        if resolution.leans and self.condenser is not None:
            rewrite = self.condenser.condense(question, turns)
            if rewrite is not None:
                return replace(resolution, standalone=rewrite, carried=(), rewritten_by="model")
        return resolution

    def _checked_history(self, history: Sequence[Turn]) -> list[Turn]:
        if len(history) > MAX_HISTORY:
            raise QuestionError(f"the history has {len(history)} messages; the limit is {MAX_HISTORY}")
        turns = []
        for n, turn in enumerate(history, start=1):
            if turn.role not in ROLES:
                raise QuestionError(f"history message {n}: role must be user or assistant")
            content = " ".join(remove_controls(turn.content).split()) if isinstance(turn.content, str) else ""
            if not content:
                raise QuestionError(f"history message {n} is empty")
            if len(turn.content) > self.settings.max_question_chars:
                raise QuestionError(
                    f"history message {n} has {len(turn.content)} characters; "
                    f"the limit is {self.settings.max_question_chars}"
                )
            turns.append(replace(turn, content=content))
        return turns

    def search(self, question: Question, reader: IndexReader | None = None) -> list[Hit]:
        """Passages only."""
        vector = self.embedder.embed([question.searched])[0]
        return self.retriever.retrieve(question, vector, reader or self.index.reader())

    def ask(self, question: Question, generate: bool = True) -> Answer:
        """A short cited answer, or an abstention that still lists the closest sources. ``generate``
        False: quoted, even when a language model is configured."""
        timings: dict[str, float] = {}
        started = clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = round((now - clock) * 1000, 2)
            clock = now

        reader = self.index.reader()
        vector = self.embedder.embed([question.searched])[0]
        lap("embed")
        hits = self.retriever.retrieve(question, vector, reader)
        lap("retrieve")
        # Sentences come from bodies only; a headline-only article can be pointed to, never quoted.
        bodies = [h for h in hits if not h.article.headline_only]
        passages = bodies[:DEFAULT_COMPOSE_PASSAGES]
        quoted = self.quotes.compose(question, vector, passages, reader)
        if self.abstains(question, passages, quoted, reader):
            citations = self.composer.closest(question, vector, bodies[:_CLOSEST], reader, _CLOSEST)
            citations = _with_headlines(citations, hits[:_CLOSEST])
            text = ABSTAIN_TEXT
            if citations:
                listed = "; ".join(f"{c.title} [{c.n}]" for c in citations)
                text += f" The closest sources are: {listed}."
            lap("compose")
            timings["total"] = round((time.perf_counter() - started) * 1000, 2)
            return Answer(
                text,
                True,
                citations,
                tuple(hits),
                timings,
                (Sentence(ABSTAIN_TEXT, ()),),
                missing_shards=reader.missing_shards,
                standalone_question=question.searched,
                rewritten_by=question.follow.rewritten_by if question.follow else None,
                coverage=coverage(citations, question),
            )
        timeline = (
            self.quotes.timeline(question, vector, bodies[:TIMELINE_PASSAGES], reader)
            if "timeline" in question.wants
            else None
        )
        composition: Composition
        if timeline is not None:
            composition = timeline
        elif generate and self.generates:
            composition = self.composer.compose(question, vector, passages, reader)
        else:
            composition = quoted  # an extractive composer would quote the same again
        if not composition.generated:
            composition = _dated(composition)
        composition, unstated = stated(question, composition)
        lap("compose")
        timings.update(composition.usage)
        timings["total"] = round((time.perf_counter() - started) * 1000, 2)
        cited = _with_headlines(composition.citations, hits[:DEFAULT_COMPOSE_PASSAGES])
        return Answer(
            composition.text,
            False,
            cited,
            tuple(hits),
            timings,
            composition.sentences,
            generated=composition.generated,
            fallback=composition.fallback,
            missing_shards=reader.missing_shards,
            standalone_question=question.searched,
            rewritten_by=question.follow.rewritten_by if question.follow else None,
            coverage=coverage(cited, question),
            timeline=timeline is not None,
            short_answer=composition.short_answer,
            unstated=unstated,
        )

    def answers_from(
        self, asked: Sequence[tuple[Question, Vectors, Sequence[Hit]]], reader: IndexReader
    ) -> list[tuple[Answer, float]]:
        """For each question, the quoted answer from its ``hits`` alone (never an abstention) and the
        reader's probability that its lead sentence answers (0.0 without a reader), the reader reading
        them all in one run: what the standing questions are told when a new article arrives
        (api/work/matching.py)."""
        started = time.perf_counter()
        compositions = self.quotes.compose_many([(q, v, list(h)) for q, v, h in asked], reader)
        elapsed = round((time.perf_counter() - started) * 1000 / max(1, len(asked)), 2)
        found = []
        for (question, _, hits), composed in zip(asked, compositions, strict=True):
            composition, unstated = stated(question, _dated(composed))
            cited = _with_headlines(composition.citations, hits[:DEFAULT_COMPOSE_PASSAGES])
            answer = Answer(
                composition.text,
                False,
                cited,
                tuple(hits),
                {"compose": elapsed, "total": elapsed},
                composition.sentences,
                missing_shards=reader.missing_shards,
                standalone_question=question.searched,
                coverage=coverage(cited, question),
                short_answer=composition.short_answer,
                unstated=unstated,
            )
            found.append((answer, composition.best_answer))
        return found

    def abstains(
        self, question: Question, passages: Sequence[Hit], quoted: Composition, reader: IndexReader
    ) -> bool:
        """Whether the passages (and what would be quoted from them) do not answer the question."""
        if not passages:
            return True
        if self.abstainer is None:
            threshold = DEFAULT_ABSTAIN_BELOW if self.abstain_below is None else self.abstain_below
            return max(h.similarity for h in passages) < threshold
        return self.abstainer.abstains(self.evidence(question, passages, quoted, reader))

    def evidence(
        self, question: Question, passages: Sequence[Hit], quoted: Composition, reader: IndexReader
    ) -> npt.NDArray[np.float64]:
        """The abstention features (rag/abstain.py) of a question and its passages."""
        return evidence(question, passages, quoted.best_score, reader.idf, quoted.best_answer)


def coverage(citations: Sequence[Citation], question: Question) -> Coverage:
    """The dates of ``citations``' articles, and whether even the newest is older than the period the
    question names ("in September 2024", "last week"): then the answer says so."""
    days = [c.published_at for c in citations if c.published_at]
    articles = len({c.article_id for c in citations})
    newest = max(days) if days else None
    start = question.period.start if question.period.explicit else None
    if newest is None or start is None or newest >= start:
        return Coverage(min(days) if days else None, newest, articles)
    note = (
        f"The newest source is from {long_date(newest)}, before the period the question asks about "
        f"(from {long_date(start)})."
    )
    return Coverage(min(days), newest, articles, True, note)


def _dated(composition: Composition) -> Composition:
    """Quotes with the date each relative day means ("on Wednesday [17 April 2024]", rag/relative.py) in
    the answer's text and sentences; the citations keep the verbatim quotes."""
    by_n = {c.n: c for c in composition.citations}
    text = composition.text
    sentences = []
    for sentence in composition.sentences:
        cited = by_n.get(sentence.cites[0]) if sentence.cites else None
        shown = annotate(sentence.text, cited.published_at if cited else None)
        if shown != sentence.text:
            text = text.replace(f"{sentence.text} [{sentence.cites[0]}]", f"{shown} [{sentence.cites[0]}]", 1)
        sentences.append(replace(sentence, text=shown))
    return replace(composition, text=text, sentences=tuple(sentences))


def _with_headlines(citations: tuple[Citation, ...], hits: Sequence[Hit]) -> tuple[Citation, ...]:
    """``citations`` and, numbered after them, the headline-only articles among ``hits`` that rank above
    every quoted article: the reader sees where the story is, though there is no text to quote."""
    cited = {c.article_id for c in citations}
    first_quoted = next((h.rank for h in hits if h.article.id in cited), None)
    pointers = [
        h.article for h in hits if h.article.headline_only and (first_quoted is None or h.rank < first_quoted)
    ]
    extra = tuple(
        Citation(
            n=len(citations) + i,
            article_id=a.id,
            title=a.headline,
            source=a.source,
            url=a.url,
            published_at=a.published_at,
            quote="",
            span=Span(0, 0),
            score=0.0,
            headline_only=True,
        )
        for i, a in enumerate(pointers, start=1)
    )
    return citations + extra


def reader_for(settings: AnswerSettings) -> SpanReader | None:
    """The process's reader when ``settings`` want one (checked when first opened: ConfigError with the
    fix when its file is missing or damaged), else None."""
    if not settings.reader:
        return None
    return shared_reader(settings.reader_folder or DEFAULT_FOLDER, settings.reader_threads)


def make_composer(
    settings: AnswerSettings, embedder: Embedder, encoding: tiktoken.Encoding
) -> AnswerComposer:
    """The generative composer when ``settings`` name a model (``llm_base_url`` and ``llm_model``), else the
    extractive one; the extractive one is the generative one's fallback. ``encoding`` counts the model's
    tokens."""
    extractive = ExtractiveComposer(embedder, span_reader=reader_for(settings))
    if not settings.llm_base_url:
        return extractive
    return GenerativeComposer(model_config(settings), extractive, encoding)


def model_config(settings: AnswerSettings) -> ModelConfig:
    """The language model that ``settings`` name (``llm_base_url`` and ``llm_model``)."""
    if not settings.llm_model:
        raise ConfigError(
            "a language model's address is set (RAG_LLM_BASE_URL) but not its name (RAG_LLM_MODEL)"
        )
    return ModelConfig(settings.llm_base_url or "", settings.llm_model, settings.llm_api_key or "none")


def make_condenser(settings: AnswerSettings) -> Condenser | None:
    """The model that rewrites follow-ups when ``settings`` name one, else None (the rules alone)."""
    if not settings.llm_base_url:
        return None
    return ModelCondenser(model_config(settings))
