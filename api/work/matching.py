"""Which new articles answer which standing questions.

After a commit, the chunks above the stored cursor are the news: their articles (new, or changed: an
unchanged re-ingest writes no chunk) are checked in the order they were written. The cost follows the
news, not watches times corpus: every watch's question vector sits in one matrix, so one product with
an article's chunk vectors scores it against every watch at once; the watches whose question comes near
one of its chunks (cosine at least ``near``) and whose words it holds (at least ``overlap`` of them,
weighted by idf, counted through a sparse words × watches matrix) are read, every one of them: no watch
can crowd another out, whoever owns them (watches asking the same question share one reading). For
those, the composer reads the article's sentences with the trained reader (rag/reader.py) and quotes
what it says answers (one run of the reader for ``batch`` questions at a time, which bounds its memory
and shares the cores better than a run each); the
watch fires when the reader's probability reaches the watch's ``min_confidence``, with the article it is
surest of when a check brings several (stories it was told of left out first). Its alert is the answer
as ``/ask`` gives it, from that article, for that story (api/store/watches.py keeps one alert per watch
and story).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse

from api.store.records import Alert, Found
from api.store.standing import WatchTables
from index.errors import QuestionError
from index.store.protocols import IndexReader
from index.terms import tokenize
from rag import Answerer
from rag.records import Answer, Hit, Question

log = logging.getLogger("api.work.matching")
DEFAULT_NEAR = 0.4
"""The cosine between a watch's question and one of an article's chunks at which the article is read
for it (chosen on the replay's tune half, benchmarks/watches.py)."""
DEFAULT_BATCH = 16
"""Questions the reader reads in one run."""
DEFAULT_OVERLAP = 0.05
"""The share of a watch's question words (weighted by their idf) that an article must hold to be read
for it (chosen with DEFAULT_NEAR on the replay's tune half)."""

Render = Callable[[Answer], dict[str, Any]]


@dataclass(frozen=True)
class _Watches:
    """Every active watch, as one matrix of question vectors and the arrays the eligibility filters on."""

    version: tuple[int, int]
    ids: list[str]
    questions: list[str]
    sources: list[frozenset[str]]
    min_confidence: npt.NDArray[np.float64]
    after: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]
    keys: list[str]
    """Each watch's question as compared with the others' (case and spacing aside)."""
    vocabulary: dict[str, int]
    """Every word of every watch's question (as the index stems them), numbered."""
    terms: sparse.csr_matrix
    """Which watch asks which word: (words, watches), ones."""


class WatchMatcher:
    """Checks committed articles against the watches; one per process that checks (thread-safe enough
    for one checking thread: `rag serve`'s alert worker, or `rag watch check`)."""

    def __init__(
        self,
        store: WatchTables,
        answerer: Answerer,
        render: Render,
        near: float = DEFAULT_NEAR,
        overlap: float = DEFAULT_OVERLAP,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self.store = store
        self.answerer = answerer
        self.render = render
        self.near = near
        self.overlap = overlap
        self.batch = max(batch, 1)
        self._watches: _Watches | None = None
        self._questions: dict[tuple[str, date | None], Question] = {}
        self.reads = 0
        """Distinct questions read against an article so far."""

    def check(self, as_of: date | None = None) -> list[Alert]:
        """Check what was committed since the last check, store the alerts it earns (and the cursor) and
        return them. The first check only sets the cursor: watches are told of news, not of the past.
        ``as_of``: the day the watches' questions are asked on (default today, UTC)."""
        day = as_of or datetime.now(UTC).date()
        for _ in range(3):  # another process may move the cursor first: then check what it left
            reader = self.answerer.index.reader()
            start = self.store.alerts.cursor()
            ids = reader.chunk_ids()
            top = int(ids.max()) if ids.size else 0
            if start is None:
                self.store.alerts.advance(None, top, [])
                return []
            if top <= start:  # nothing new; or a snapshot behind another process's (it catches up)
                return []
            found = self.match(reader, ids[ids > start], day)
            told = self.store.alerts.told([(f.watch_id, f.story) for f in found])
            stored = self.store.alerts.advance(
                start, top, strongest([f for f in found if (f.watch_id, f.story) not in told])
            )
            if stored is not None:
                return stored
        return []

    def match(self, reader: IndexReader, chunk_ids: npt.NDArray[np.int64], as_of: date | None) -> list[Found]:
        """What the articles of ``chunk_ids`` answer, watch by watch."""
        watches = self._current()
        if not watches.ids:
            return []
        entries = reader.entries_of([int(i) for i in np.sort(chunk_ids)])
        idf = reader.idf(list(watches.vocabulary)).astype(np.float64)
        weight = watches.terms.T @ idf  # each watch's words, weighted
        seen: set[str] = set()
        found: list[Found] = []
        for entry in entries:
            if entry is None or entry.article_id in seen:
                continue
            seen.add(entry.article_id)
            chunks = np.asarray(entry.chunk_ids, dtype=np.int64)
            sims = reader.vectors(chunks) @ watches.vectors.T  # (chunks, watches)
            best = sims.max(axis=0)
            eligible = (best >= self.near) & (watches.after < int(chunks.max()))
            source = (entry.source or "").lower()
            for w in np.flatnonzero(eligible):
                if watches.sources[w] and source not in watches.sources[w]:
                    eligible[w] = False
            if not eligible.any():
                continue
            passages = reader.passages([int(c) for c in chunks])
            if not passages:
                continue
            texts = {chunk.id: (chunk, article) for chunk, article in passages}  # a removed chunk is left out
            article = passages[0][1]
            held = np.zeros(len(watches.vocabulary))
            words = tokenize([f"{article.title}\n{article.body}"])[0]
            places = [watches.vocabulary[word] for word in set(words) if word in watches.vocabulary]
            held[places] = idf[places]
            overlap = (watches.terms.T @ held) / np.maximum(weight, 1e-9)
            eligible &= overlap >= self.overlap
            # Every eligible question is read, each once: watches asking the same question (several keys
            # following one story) share its reading.
            groups = self._groups(watches, eligible)
            asked = []
            for members in groups.values():
                first = members[0]
                question = self._question(watches.ids[first], watches.questions[first], as_of)
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
                    [(q, watches.vectors[m[0]], h) for m, q, h in asked[start : start + self.batch]], reader
                )
            ]
            for (members, _, _), (answer, confidence) in zip(asked, answers, strict=True):
                if not answer.citations:
                    continue
                rendered = self.render(answer)
                found.extend(
                    Found(
                        watches.ids[w],
                        entry.story,
                        entry.article_id,
                        rendered,
                        confidence,
                        float(best[w]),
                        float(overlap[w]),
                    )
                    for w in members
                    if confidence >= watches.min_confidence[w]
                )
        return found

    @staticmethod
    def _groups(watches: _Watches, eligible: npt.NDArray[np.bool_]) -> dict[str, list[int]]:
        """The distinct questions of the eligible watches, each with every eligible watch that asks it."""
        groups: dict[str, list[int]] = {}
        for w in np.flatnonzero(eligible):
            groups.setdefault(watches.keys[w], []).append(int(w))
        return groups

    def _question(self, watch_id: str, text: str, as_of: date | None) -> Question | None:
        key = (watch_id, as_of)
        question = self._questions.get(key)
        if question is None:
            try:
                question = self.answerer.question(text, as_of=as_of)
            except QuestionError as exc:  # made valid; only a changed limit can refuse it now
                log.warning("watch %s cannot be asked: %s", watch_id, exc)
                return None
            if len(self._questions) > 50_000:
                self._questions.clear()
            self._questions[key] = question
        return question

    def _current(self) -> _Watches:
        """The watches, read again when one was added or removed (in any process)."""
        version = self.store.watches.version()
        if self._watches is not None and self._watches.version == version:
            return self._watches
        rows = self.store.watches.questions()
        dimension = self.answerer.embedder.dimension
        vectors = np.zeros((len(rows), dimension), dtype=np.float32)
        missing: list[int] = []
        for i, row in enumerate(rows):
            blob = row[5]
            if blob is not None and len(blob) == dimension * 4:
                vectors[i] = np.frombuffer(blob, dtype=np.float32)
            else:
                missing.append(i)
        if missing:
            texts = [self._searched(rows[i][1]) for i in missing]
            made = self.answerer.embedder.embed(texts)
            for i, vector in zip(missing, made, strict=True):
                vectors[i] = vector
            self.store.watches.save_vectors({rows[i][0]: vectors[i] for i in missing})
        vocabulary: dict[str, int] = {}
        places: list[int] = []
        owners: list[int] = []
        for w, words in enumerate(tokenize([r[1] for r in rows]) if rows else []):
            for word in set(words):
                places.append(vocabulary.setdefault(word, len(vocabulary)))
                owners.append(w)
        terms = sparse.csr_matrix(
            (np.ones(len(places)), (places, owners)), shape=(len(vocabulary), len(rows))
        )
        self._watches = _Watches(
            version,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [frozenset(s.lower() for s in r[2]) for r in rows],
            np.array([r[3] for r in rows], dtype=np.float64),
            np.array([r[4] for r in rows], dtype=np.int64),
            vectors,
            [" ".join(r[1].lower().split()) for r in rows],
            vocabulary,
            terms,
        )
        return self._watches

    def _searched(self, text: str) -> str:
        try:
            return self.answerer.question(text).searched
        except QuestionError:
            return text


def strongest(found: list[Found]) -> list[Found]:
    """One alert per watch and check: of the new articles that answer a watch, the one the reader is
    surest of (a commit that brings several stories near a question tells it the best answer, not all)."""
    best: dict[str, Found] = {}
    for item in found:
        if item.watch_id not in best or item.confidence > best[item.watch_id].confidence:
            best[item.watch_id] = item
    return [item for item in found if best[item.watch_id] is item]
