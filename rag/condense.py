"""Follow-ups made standalone by a language model (when one is configured), checked before use.

The model sees the conversation and the last question and is asked for the question rewritten to stand
alone. The rewrite is kept only when every content word of it was said in the conversation or the
question (nothing the model brings in is searched), it keeps every content word of the question (it
still asks what was asked), and it brings in at least one word of the conversation. Otherwise, and
when the model is down, slow or failing, the rules of rag/follow.py resolve the follow-up. The same
circuit breaker as answers keeps a failing model from being asked again for a while.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Protocol

from index.terms import tokenize
from rag.follow import Turn, content_words
from rag.generate import CircuitBreaker, ModelConfig

log = logging.getLogger("rag.condense")

CONDENSE_TIMEOUT_SECONDS = 10.0
"""A rewrite is worth a short wait only: the rules answer without it."""
MAX_REWRITE_CHARS = 400
_TURNS_SHOWN = 6
_CHARS_SHOWN = 600
_PREFIX = re.compile(
    r"^\s*(standalone question|rewritten question|rewritten|question|user)\s*:\s*", re.IGNORECASE
)
SYSTEM_PROMPT = (
    "You rewrite the user's last question so that it can be understood without the conversation before "
    "it. Replace words such as it, they, he, she, that with what they refer to. Use only words from the "
    "conversation and the question. Do not answer it. Reply with the rewritten question only."
)


class Condenser(Protocol):
    """Makes a follow-up standalone, or says it cannot (None)."""

    def condense(self, question: str, history: Sequence[Turn]) -> str | None: ...


def _stems(texts: Sequence[str]) -> set[str]:
    return {t for words in tokenize([" ".join(content_words(text)) for text in texts]) for t in words}


def supported(rewrite: str, question: str, history: Sequence[Turn]) -> bool:
    """Whether ``rewrite`` may be searched for ``question``: every content word of it said in the
    conversation or the question, every content word of the question kept, and something of the
    conversation brought in (else it is no more standalone than the question)."""
    if not rewrite.strip() or len(rewrite) > MAX_REWRITE_CHARS:
        return False
    words = _stems([rewrite])
    own = _stems([question])
    said = _stems([question, *(t.content for t in history)])
    return words <= said and own <= words and bool(words - own)


class ModelCondenser:
    """Asks an OpenAI-compatible model for the standalone question, and checks it (``supported``)."""

    def __init__(self, config: ModelConfig) -> None:
        from openai import OpenAI

        self.config = config
        self._client = OpenAI(
            base_url=config.base_url,
            api_key=config.api_key,
            timeout=min(config.timeout_seconds, CONDENSE_TIMEOUT_SECONDS),
            max_retries=0,
        )
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_seconds)

    def condense(self, question: str, history: Sequence[Turn]) -> str | None:
        if self.breaker.open:
            return None
        said = "\n".join(
            f"{'User' if t.role == 'user' else 'Assistant'}: {t.content[:_CHARS_SHOWN]}"
            for t in history[-_TURNS_SHOWN:]
        )
        messages: Any = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Conversation:\n{said}\n\nLast question: {question}"},
        ]
        try:
            response = self._client.chat.completions.create(
                model=self.config.model, messages=messages, temperature=0.0, max_tokens=80
            )
            text = response.choices[0].message.content or ""
        except Exception as exc:  # noqa: BLE001 - any failure of the model leaves the follow-up to the rules
            self.breaker.failed()
            log.warning("the language model failed to rewrite a follow-up (%s: %s)", type(exc).__name__, exc)
            return None
        self.breaker.succeeded()
        lines = [line for line in text.strip().splitlines() if line.strip()]
        rewrite = _PREFIX.sub("", lines[0]).strip().strip('"“”') if lines else ""
        if supported(rewrite, question, history):
            return rewrite
        log.info("a follow-up's rewrite brought in words nobody said; the rules resolve it")
        return None
