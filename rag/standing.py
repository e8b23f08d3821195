"""Which new articles answer which standing questions.

The cost follows the news, not questions times corpus: every question's vector sits in one matrix
(``Shortlist``), so one product with an article's chunk vectors scores it against every question at once;
the questions that come near one of its chunks (cosine at least ``near``) and whose words it holds (at
least ``overlap`` of them, weighted by idf, counted through a sparse words × questions matrix) are read,
every one of them: no question can crowd another out (questions asked alike share one reading). The
composer reads the article's sentences with the trained reader (rag/reader.py) and quotes what it says
answers, ``batch`` questions to a run of the reader; a question is answered when the reader's
probability reaches its ``min_confidence``. The service keeps the questions and what they were told
(api/store/watches.py, api/work/matching.py); this module only scores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from scipy import sparse

from index.errors import QuestionError
from index.store.protocols import IndexReader
from index.terms import tokenize
from rag.answer import Answerer
from rag.records import Answer, Hit, Question

log = logging.getLogger("rag.standing")
DEFAULT_NEAR = 0.4
"""The cosine between a question and one of an article's chunks at which the article is read for it
(chosen on the replay's tune half, benchmarks/watches.py)."""
DEFAULT_BATCH = 16
"""Questions the reader reads in one run."""
DEFAULT_OVERLAP = 0.05
"""The share of a question's words (weighted by their idf) that an article must hold to be read for it
(chosen with DEFAULT_NEAR on the replay's tune half)."""


@dataclass(frozen=True)
class StandingQuestion:
    """A question asked of all news to come."""

    id: str
    text: str
    sources: frozenset[str]
    """The outlets it reads, lowercase; empty: any."""
    min_confidence: float
    """The reader's probability an answer needs."""
    after: int
    """Its news is the chunks numbered above this one."""
    vector: npt.NDArray[np.float32] | None = None
    """Its embedding when one was kept; embedded again otherwise."""


@dataclass(frozen=True)
class Match:
    """A new article that answers a standing question."""

    question_id: str
    story: str
    article_id: str
    answer: Answer
    """The quoted answer from that article alone."""
    confidence: float
    """The reader's probability that the article answers."""
    near: float
    """The best cosine between the question and one of the article's chunks."""
    overlap: float
    """The share of the question's words (weighted by idf) the article holds."""


@dataclass(frozen=True)
class Shortlist:
    """Every standing question as one matrix of vectors and the arrays the eligibility filters on."""

    questions: Sequence[StandingQuestion]
    vectors: npt.NDArray[np.float32]
    keys: list[str]
    """Each question's text as compared with the others' (case and spacing aside)."""
    vocabulary: dict[str, int]
    """Every word of every question (as the index stems them), numbered."""
    terms: sparse.csr_matrix
    """Which question asks which word: (words, questions), ones."""
    embedded: dict[str, npt.NDArray[np.float32]]
    """The vectors made for this shortlist (questions that had none kept), by question id."""


class Scored(Protocol):
    @property
    def confidence(self) -> float: ...


S = TypeVar("S", bound=Scored)


def strongest(found: Sequence[S], asked: Callable[[S], str]) -> list[S]:
    """One answer per question and check: of the new articles that answer a question (``asked`` names
    each one's), the one the reader is surest of (a commit that brings several stories near a question
    tells it the best answer, not all)."""
    best: dict[str, S] = {}
    for item in found:
        if (question := asked(item)) not in best or item.confidence > best[question].confidence:
            best[question] = item
    return [item for item in found if best[asked(item)] is item]


class StandingMatcher:
    """Scores new articles against standing questions through ``answerer``'s reader."""

    def __init__(
        self,
        answerer: Answerer,
        near: float = DEFAULT_NEAR,
        overlap: float = DEFAULT_OVERLAP,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self.answerer = answerer
        self.near = near
        self.overlap = overlap
        self.batch = max(batch, 1)
        self._asked: dict[tuple[str, date | None], Question] = {}
        self.reads = 0
        """Distinct questions read against an article so far."""

    def shortlist(self, questions: Sequence[StandingQuestion]) -> Shortlist:
        """``questions`` ready to match, those without a kept vector embedded (``Shortlist.embedded``)."""
        dimension = self.answerer.embedder.dimension
        vectors = np.zeros((len(questions), dimension), dtype=np.float32)
        missing: list[int] = []
        for i, question in enumerate(questions):
            if question.vector is not None and question.vector.shape == (dimension,):
                vectors[i] = question.vector
            else:
                missing.append(i)
        if missing:
            made = self.answerer.embedder.embed([self._searched(questions[i].text) for i in missing])
            for i, vector in zip(missing, made, strict=True):
                vectors[i] = vector
        vocabulary: dict[str, int] = {}
        places: list[int] = []
        owners: list[int] = []
        for q, words in enumerate(tokenize([q.text for q in questions]) if questions else []):
            for word in set(words):
                places.append(vocabulary.setdefault(word, len(vocabulary)))
                owners.append(q)
        terms = sparse.csr_matrix(
            (np.ones(len(places)), (places, owners)), shape=(len(vocabulary), len(questions))
        )
        keys = [" ".join(q.text.lower().split()) for q in questions]
        embedded = {questions[i].id: vectors[i] for i in missing}
        return Shortlist(questions, vectors, keys, vocabulary, terms, embedded)

    def match(
        self,
        shortlist: Shortlist,
        reader: IndexReader,
        chunk_ids: npt.NDArray[np.int64],
        as_of: date | None,
    ) -> list[Match]:
        """What the articles of ``chunk_ids`` answer, question by question."""
        questions = shortlist.questions
        if not questions:
            return []
        after = np.array([q.after for q in questions], dtype=np.int64)
        entries = reader.entries_of([int(i) for i in np.sort(chunk_ids)])
        idf = reader.idf(list(shortlist.vocabulary)).astype(np.float64)
        weight = shortlist.terms.T @ idf  # each question's words, weighted
        seen: set[str] = set()
        found: list[Match] = []
        for entry in entries:
            if entry is None or entry.article_id in seen:
                continue
            seen.add(entry.article_id)
            chunks = np.asarray(entry.chunk_ids, dtype=np.int64)
            sims = reader.vectors(chunks) @ shortlist.vectors.T  # (chunks, questions)
            best = sims.max(axis=0)
            eligible = (best >= self.near) & (after < int(chunks.max()))
            source = (entry.source or "").lower()
            for q in map(int, np.flatnonzero(eligible)):
                if questions[q].sources and source not in questions[q].sources:
                    eligible[q] = False
            if not eligible.any():
                continue
            passages = reader.passages([int(c) for c in chunks])
            if not passages:
                continue
            texts = {chunk.id: (chunk, article) for chunk, article in passages}  # a removed chunk is left out
            article = passages[0][1]
            held = np.zeros(len(shortlist.vocabulary))
            words = tokenize([f"{article.title}\n{article.body}"])[0]
            places = [shortlist.vocabulary[word] for word in set(words) if word in shortlist.vocabulary]
            held[places] = idf[places]
            overlap = (shortlist.terms.T @ held) / np.maximum(weight, 1e-9)
            eligible &= overlap >= self.overlap
            # Every eligible question is read, each once: questions asked alike share their reading.
            groups: dict[str, list[int]] = {}
            for q in map(int, np.flatnonzero(eligible)):
                groups.setdefault(shortlist.keys[q], []).append(q)
            asked = []
            for members in groups.values():
                first = members[0]
                question = self._question(questions[first], as_of)
                if question is None:
                    continue
                order = [i for i in np.argsort(-sims[:, first]) if int(chunks[i]) in texts]
                hits = [
                    Hit(rank, float(sims[i, first]), *texts[int(chunks[i])], float(sims[i, first]))
                    for rank, i in enumerate(order, start=1)
                ]
                asked.append((members, question, hits))
            if not asked:
                continue
            self.reads += len(asked)
            answers = [
                answer
                for start in range(0, len(asked), self.batch)
                for answer in self.answerer.answers_from(
                    [(q, shortlist.vectors[m[0]], h) for m, q, h in asked[start : start + self.batch]],
                    reader,
                )
            ]
            for (members, _, _), (answer, confidence) in zip(asked, answers, strict=True):
                if not answer.citations:
                    continue
                found.extend(
                    Match(
                        questions[q].id,
                        entry.story,
                        entry.article_id,
                        answer,
                        confidence,
                        float(best[q]),
                        float(overlap[q]),
                    )
                    for q in members
                    if confidence >= questions[q].min_confidence
                )
        return found

    def _question(self, standing: StandingQuestion, as_of: date | None) -> Question | None:
        key = (standing.id, as_of)
        question = self._asked.get(key)
        if question is None:
            try:
                question = self.answerer.question(standing.text, as_of=as_of)
            except QuestionError as exc:  # made valid; only a changed limit can refuse it now
                log.warning("standing question %s cannot be asked: %s", standing.id, exc)
                return None
            if len(self._asked) > 50_000:
                self._asked.clear()
            self._asked[key] = question
        return question

    def _searched(self, text: str) -> str:
        try:
            return self.answerer.question(text).searched
        except QuestionError:
            return text
