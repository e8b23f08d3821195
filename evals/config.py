"""Typed settings of the evaluation harness (read from the environment by ``EvalSettings.from_env``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from index.config import IndexSettings
from rag.config import AnswerSettings

DEFAULT_EVAL_CACHE = Path.home() / ".cache" / "newsrag" / "eval-indexes"


@dataclass(frozen=True)
class EvalSettings:
    """Where evaluation indexes are cached, and how they are built."""

    cache_dir: Path = DEFAULT_EVAL_CACHE
    """Indexes built by `rag eval`, one folder per content hash; outside the clone so CI reuses them.
    Env: RAG_EVAL_CACHE."""

    index: IndexSettings = field(default_factory=IndexSettings)
    """Chunking, model and tiktoken cache of the indexes built (their folder is the cache's)."""

    answers: AnswerSettings = field(default_factory=AnswerSettings)
    """How the scored Answerer answers (the reader on or off: `RAG_READER=off rag eval ...` scores the
    composer of before)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EvalSettings:
        env = os.environ if env is None else env
        cache = Path(env.get("RAG_EVAL_CACHE", str(DEFAULT_EVAL_CACHE))).expanduser().resolve()
        return cls(cache_dir=cache, index=IndexSettings.from_env(env), answers=AnswerSettings.from_env(env))
