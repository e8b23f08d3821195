"""Typed settings of answering: how many passages, how long a question, and the language model (when
one writes the answers). Read from the environment by ``AnswerSettings.from_env`` only."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from index.embed import core_count
from index.errors import ConfigError

DEFAULT_TOP_K = 5
DEFAULT_MAX_QUESTION_CHARS = 2000


@dataclass(frozen=True)
class AnswerSettings:
    """What the Answerer needs to know."""

    top_k: int = DEFAULT_TOP_K
    """Passages retrieved for a question when the caller does not say."""

    max_question_chars: int = DEFAULT_MAX_QUESTION_CHARS
    """Longer questions are refused."""

    llm_base_url: str | None = None
    """An OpenAI-compatible API that writes answers (checked before use); none: extractive answers.
    Env: RAG_LLM_BASE_URL."""

    llm_model: str | None = None
    """The model name to ask for. Env: RAG_LLM_MODEL."""

    llm_api_key: str | None = None
    """Env: RAG_LLM_API_KEY."""

    reader: bool = True
    """Read the candidate sentences with the trained reader (rag/reader.py) to quote those that state the
    answer and give its short answer; False: the sentences are chosen by their scores alone (before issue
    30). Env: RAG_READER=off."""

    reader_folder: Path | None = None
    """The reader's model folder; None: the one in the project (rag/models/reader). Env: RAG_READER_PATH."""

    reader_threads: int = field(default_factory=core_count)
    """ONNX Runtime threads the reader uses for one question (default: the cores, as the embedder's
    `--model-threads`; a question is read in one run of about one row). Env: RAG_READER_THREADS."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AnswerSettings:
        env = os.environ if env is None else env
        return cls(
            llm_base_url=env.get("RAG_LLM_BASE_URL") or None,
            llm_model=env.get("RAG_LLM_MODEL") or None,
            llm_api_key=env.get("RAG_LLM_API_KEY") or None,
            reader=env.get("RAG_READER", "on").strip().lower() not in {"off", "0", "false", "no"},
            reader_folder=Path(env["RAG_READER_PATH"]) if env.get("RAG_READER_PATH") else None,
            reader_threads=_count(env.get("RAG_READER_THREADS") or str(core_count())),
        )


def _count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= 64:
        raise ConfigError("RAG_READER_THREADS must be a whole number from 1 to 64")
    return count
