"""Typed settings. The environment is read here and nowhere else."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from index.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
# all-MiniLM-L6-v2 truncates input at 256 word pieces (max_seq_length in the packaged
# sentence_bert_config.json). Chunks are measured in cl100k tokens, which run about 1.0-1.3 word pieces
# each on news English, so 180 tokens keep a chunk inside the model's window with room to spare.
DEFAULT_CHUNK_TOKENS = 180
DEFAULT_CHUNK_OVERLAP_TOKENS = 40
DEFAULT_TOP_K = 5
DEFAULT_MAX_QUESTION_CHARS = 2000
DEFAULT_MAX_BODY_BYTES = 5_000_000
DEFAULT_EVAL_CACHE = Path.home() / ".cache" / "newsrag" / "eval-indexes"
DEFAULT_RATE_PER_ADDRESS = 300
DEFAULT_INGEST_SYNC_CHARS = 20_000
DEFAULT_INGEST_SYNC_ARTICLES = 16


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to know, passed in rather than read ad hoc."""

    data_dir: Path = DEFAULT_DATA_DIR
    """Folder holding the index (SQLite metadata, FAISS vectors). Env: RAG_DATA_DIR."""

    model_name: str = DEFAULT_MODEL_NAME
    """Name recorded in the index; a mismatch at load stops start-up."""

    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    """Most cl100k tokens in one chunk."""

    chunk_overlap_tokens: int = DEFAULT_CHUNK_OVERLAP_TOKENS
    """Tokens of trailing sentences repeated at the start of the next chunk."""

    top_k: int = DEFAULT_TOP_K
    """Passages retrieved for a question when the caller does not say."""

    max_question_chars: int = DEFAULT_MAX_QUESTION_CHARS
    """Longer questions are refused."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest HTTP request body accepted (413 beyond)."""

    rate_per_address: int = DEFAULT_RATE_PER_ADDRESS
    """Requests a minute one client address may make to the question and article routes (0: no limit).
    Env: RAG_RATE_PER_ADDRESS."""

    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks of reverse proxies whose ``X-Forwarded-For`` is believed; none by default.
    Env: RAG_TRUSTED_PROXIES (comma-separated)."""

    allowed_hosts: tuple[str, ...] = ()
    """Host names (no port) answered while no API key exists, beside 127.0.0.1, [::1] and localhost.
    Env: RAG_ALLOWED_HOSTS (comma-separated)."""

    ingest_sync_chars: int = DEFAULT_INGEST_SYNC_CHARS
    """An HTTP ingest with more article text than this runs as a background job (202)."""

    ingest_sync_articles: int = DEFAULT_INGEST_SYNC_ARTICLES
    """An HTTP ingest of more articles than this runs as a background job (202)."""

    llm_base_url: str | None = None
    """An OpenAI-compatible API that writes answers (checked before use); none: extractive answers.
    Env: RAG_LLM_BASE_URL."""

    llm_model: str | None = None
    """The model name to ask for. Env: RAG_LLM_MODEL."""

    llm_api_key: str | None = None
    """Env: RAG_LLM_API_KEY."""

    tiktoken_cache_dir: Path = field(default_factory=lambda: DEFAULT_DATA_DIR / "tiktoken")
    """Where the offline cl100k_base file is placed for tiktoken. Env: TIKTOKEN_CACHE_DIR."""

    eval_cache_dir: Path = DEFAULT_EVAL_CACHE
    """Indexes built by `rag eval`, one folder per content hash; outside the clone so CI reuses them.
    Env: RAG_EVAL_CACHE."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from environment variables, falling back to the defaults."""
        env = dict(os.environ if environ is None else environ)
        data_dir = Path(env.get("RAG_DATA_DIR", str(DEFAULT_DATA_DIR))).expanduser().resolve()
        cache = Path(env.get("TIKTOKEN_CACHE_DIR", str(data_dir / "tiktoken"))).expanduser().resolve()
        eval_cache = Path(env.get("RAG_EVAL_CACHE", str(DEFAULT_EVAL_CACHE))).expanduser().resolve()
        try:
            rate = int(env.get("RAG_RATE_PER_ADDRESS", str(DEFAULT_RATE_PER_ADDRESS)))
        except ValueError:
            raise ConfigError("RAG_RATE_PER_ADDRESS must be a whole number of requests a minute") from None
        proxies = tuple(p.strip() for p in env.get("RAG_TRUSTED_PROXIES", "").split(",") if p.strip())
        hosts = tuple(h.strip() for h in env.get("RAG_ALLOWED_HOSTS", "").split(",") if h.strip())
        return cls(
            data_dir=data_dir,
            tiktoken_cache_dir=cache,
            eval_cache_dir=eval_cache,
            rate_per_address=rate,
            trusted_proxies=proxies,
            allowed_hosts=hosts,
            llm_base_url=env.get("RAG_LLM_BASE_URL") or None,
            llm_model=env.get("RAG_LLM_MODEL") or None,
            llm_api_key=env.get("RAG_LLM_API_KEY") or None,
        )
