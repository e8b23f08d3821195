"""Answers written by a language model behind an OpenAI-compatible API, every sentence checked first.

The model sees the numbered passages (outlet, date, text), the question and the day it is asked, and
must end every sentence with the ``[n]`` of its passage. Each sentence it writes is checked against the
passages it cites (rag/check.py); a sentence that fails is dropped (or, with ``keep_unverified``, kept and
marked unverified), and each citation of a kept sentence quotes the passage's supporting sentence
verbatim. When nothing survives, or the model is down, slow or failing, the extractive answer is given and
the answer says why (``fallback``). A circuit breaker stops calling a failing model for a while.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import tiktoken

from index.embed import Vectors
from index.store.protocols import IndexReader
from rag.check import SentenceChecker
from rag.compose import Composition, ExtractiveComposer
from rag.records import Citation, Hit, Question, Sentence

log = logging.getLogger("rag.generate")

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_TOKENS = 220
DEFAULT_PASSAGES = 5
DEFAULT_BREAKER_FAILURES = 3
DEFAULT_BREAKER_SECONDS = 60.0
_PASSAGE_CHARS = 1200
_MARK = re.compile(r"\s*\[(\d+)\]")
_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+(?:\s*\[\d+\])*|$)")
SYSTEM_PROMPT = (
    "You answer questions about the news using only the numbered passages you are given. Write at most three "
    "short sentences. End every sentence with the number of the passage it comes from in square brackets, "
    "for example [1]. Use only facts stated in the passages. If the passages do not answer the question, "
    "write: The passages do not answer this question."
)


@dataclass(frozen=True)
class ModelConfig:
    """Where the language model is and how to use it."""

    base_url: str
    """An OpenAI-compatible API, for example http://127.0.0.1:8080/v1. Env: RAG_LLM_BASE_URL."""
    model: str
    """Env: RAG_LLM_MODEL."""
    api_key: str = "none"
    """Env: RAG_LLM_API_KEY (local servers need none)."""
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    retries: int = 1
    max_tokens: int = DEFAULT_MAX_TOKENS
    keep_unverified: bool = False
    """Keep sentences that fail the check, marked ``verified: false``, instead of dropping them."""
    breaker_failures: int = DEFAULT_BREAKER_FAILURES
    breaker_seconds: float = DEFAULT_BREAKER_SECONDS


class CircuitBreaker:
    """Open after ``failures`` failures in a row; closed again after ``seconds`` (then one call is tried)."""

    def __init__(self, failures: int, seconds: float) -> None:
        self._limit, self._seconds = failures, seconds
        self._failures = 0
        self._open_until = 0.0
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        with self._lock:
            return time.monotonic() < self._open_until

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self._limit:
                self._open_until = time.monotonic() + self._seconds
                self._failures = 0


class GenerativeComposer:
    """Generated, checked, cited sentences; the extractive composer when generation cannot be trusted."""

    def __init__(
        self,
        config: ModelConfig,
        fallback: ExtractiveComposer,
        encoding: tiktoken.Encoding,
        checker: SentenceChecker | None = None,
        passages: int = DEFAULT_PASSAGES,
    ) -> None:
        from openai import OpenAI

        self.config = config
        self._fallback = fallback
        self._encoding = encoding
        self._checker = checker or SentenceChecker()
        self._passages = passages
        self._client = OpenAI(
            base_url=config.base_url,
            api_key=config.api_key,
            timeout=config.timeout_seconds,
            max_retries=config.retries,
        )
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_seconds)

    def closest(
        self, question: Question, vector: Vectors, hits: list[Hit], reader: IndexReader, articles: int
    ) -> tuple[Citation, ...]:
        return self._fallback.closest(question, vector, hits, reader, articles)

    def compose(
        self, question: Question, vector: Vectors, hits: list[Hit], reader: IndexReader
    ) -> Composition:
        passages = hits[: self._passages]
        if not passages:
            return Composition("", (), 0.0)

        def fall_back(reason: str) -> Composition:
            extractive = self._fallback.compose(question, vector, hits, reader)
            return dataclasses.replace(extractive, fallback=reason)

        if self.breaker.open:
            return fall_back("the language model failed repeatedly; paused")
        messages: Any = self._messages(question.searched, passages, question.today)
        started = time.perf_counter()
        try:
            response = self._client.chat.completions.create(
                model=self.config.model, messages=messages, temperature=0.0, max_tokens=self.config.max_tokens
            )
            text = response.choices[0].message.content or ""
        except Exception as exc:  # noqa: BLE001 - any failure of the model answers extractively
            self.breaker.failed()
            log.warning("the language model failed (%s: %s); answering extractively", type(exc).__name__, exc)
            return fall_back(f"the language model is unavailable ({type(exc).__name__})")
        self.breaker.succeeded()
        usage = {
            "model": round((time.perf_counter() - started) * 1000, 2),
            "prompt_tokens": float(sum(len(self._encoding.encode_ordinary(m["content"])) for m in messages)),
            "completion_tokens": float(len(self._encoding.encode_ordinary(text))),
        }
        composition = self._checked(text, passages)
        if composition is None:
            fallen = fall_back("no generated sentence was supported by its sources")
            return dataclasses.replace(fallen, usage=usage)
        return Composition(
            composition.text, composition.citations, 1.0, composition.sentences, None, usage, generated=True
        )

    def _messages(self, query: str, passages: Sequence[Hit], today: date) -> list[dict[str, str]]:
        numbered = []
        for n, hit in enumerate(passages, start=1):
            a = hit.article
            when = a.published_at.isoformat() if a.published_at else "undated"
            numbered.append(
                f"[{n}] {a.source or 'unknown outlet'}, {when}: {hit.chunk.text[:_PASSAGE_CHARS]}"
            )
        day = today.isoformat()
        user = f"Today is {day}.\n\nPassages:\n" + "\n\n".join(numbered) + f"\n\nQuestion: {query}"
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def _checked(self, text: str, passages: Sequence[Hit]) -> Composition | None:
        kept: list[tuple[str, tuple[int, ...], bool, dict[int, Any]]] = []
        for raw in _SENTENCE.findall(" ".join(text.split())):
            cites = tuple(int(n) for n in _MARK.findall(raw))
            sentence = _MARK.sub("", raw).strip()
            if len(sentence) < 3:
                continue
            verdict = self._checker.check(sentence, cites, passages)
            if verdict.supported or self.config.keep_unverified:
                kept.append((sentence, cites, verdict.supported, verdict.evidence))
        if not any(verified for _, _, verified, _ in kept):
            return None
        citations: list[Citation] = []
        number: dict[tuple[str, int], int] = {}
        sentences = []
        for sentence, cites, verified, evidence in kept:
            mine = []
            for n in cites:
                if n not in evidence:
                    continue
                quote, span = evidence[n]
                article = passages[n - 1].article
                key = (article.id, span.start)
                if key not in number:
                    number[key] = len(citations) + 1
                    citations.append(
                        Citation(
                            n=number[key],
                            article_id=article.id,
                            title=article.headline,
                            source=article.source,
                            url=article.url,
                            published_at=article.published_at,
                            quote=quote,
                            span=span,
                            score=1.0,
                        )
                    )
                mine.append(number[key])
            sentences.append(Sentence(sentence, tuple(dict.fromkeys(mine)), verified))
        body = " ".join(f"{s.text} " + " ".join(f"[{n}]" for n in s.cites) for s in sentences)
        return Composition(" ".join(body.split()), tuple(citations), 1.0, tuple(sentences))
