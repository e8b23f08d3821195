"""The service's settings: the index's, answering's and the HTTP service's own, put together. The
environment is read by the ``from_env`` of each part (index/config.py, rag/config.py and here), and only
``Settings.from_env`` calls them.

The data folder (RAG_DATA_DIR) holds the index in ``index/`` and the service's own state (API keys, daily
counts) in ``service.sqlite`` beside it, so that rebuilding the index keeps every key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from index.config import DEFAULT_DATA_DIR, IndexSettings, data_dir_from_env
from index.errors import ConfigError
from index.fetch import DEFAULT_HOST_DELAY_SECONDS
from rag.config import AnswerSettings
from rag.standing import DEFAULT_NEAR

DEFAULT_MAX_BODY_BYTES = 5_000_000
DEFAULT_RATE_PER_ADDRESS = 300
DEFAULT_INGEST_SYNC_CHARS = 20_000
DEFAULT_INGEST_SYNC_ARTICLES = 16
DEFAULT_FEEDS_CHECK_SECONDS = 1.0
DEFAULT_WATCH_CHECK_SECONDS = 2.0
DEFAULT_WEBHOOK_RETRY_SECONDS = 10.0
DEFAULT_WEBHOOK_TRIES = 8
DEFAULT_WATCHES_PER_KEY = 100
STATE_DB = "service.sqlite"
LIMITS_DB = "limits.sqlite"


@dataclass(frozen=True)
class ServiceSettings:
    """What the HTTP service needs beside the index and the answers."""

    data_dir: Path = DEFAULT_DATA_DIR
    """The data folder: ``service.sqlite`` (keys, daily counts) and the index's folder. Env: RAG_DATA_DIR."""

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

    feeds_check_seconds: float = DEFAULT_FEEDS_CHECK_SECONDS
    """How often `rag serve`'s feed worker looks for due feeds, and for feeds another worker was asked to
    poll now (one small query). Env: RAG_FEEDS_CHECK_SECONDS."""

    feeds_host_delay_seconds: float = DEFAULT_HOST_DELAY_SECONDS
    """Pause between two requests to one host while polling feeds. Env: RAG_FEEDS_HOST_DELAY."""

    feeds_allow_networks: tuple[str, ...] = ()
    """Networks (CIDRs) feeds may be fetched from although they are not public (loopback, private,
    link-local, reserved): an intranet lists its own. Env: RAG_FEEDS_ALLOW_NETWORKS (comma-separated)."""

    watch_check_seconds: float = DEFAULT_WATCH_CHECK_SECONDS
    """How often `rag serve` looks for other processes' commits to check against the watches (its own
    are checked at once). Env: RAG_WATCH_CHECK_SECONDS."""

    watch_near: float = DEFAULT_NEAR
    """The cosine between a watch's question and a new article's chunk at which the reader reads the
    article for it. Env: RAG_WATCH_NEAR."""

    webhook_retry_seconds: float = DEFAULT_WEBHOOK_RETRY_SECONDS
    """The first pause before a failed webhook is tried again; each further try waits twice as long.
    Env: RAG_WEBHOOK_RETRY_SECONDS."""

    webhook_tries: int = DEFAULT_WEBHOOK_TRIES
    """Tries of one webhook delivery before the watch is marked failing. Env: RAG_WEBHOOK_TRIES."""

    watches_per_key: int = DEFAULT_WATCHES_PER_KEY
    """Watches one API key may keep (over HTTP; one pool while the service has no keys). Env:
    RAG_WATCHES_PER_KEY."""

    @property
    def state_path(self) -> Path:
        """The service's own SQLite file (keys, daily counts)."""
        return self.data_dir / STATE_DB

    @property
    def limits_path(self) -> Path:
        """The request counts every worker shares (api/store/limits.py)."""
        return self.data_dir / LIMITS_DB

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServiceSettings:
        env = os.environ if env is None else env
        try:
            rate = int(env.get("RAG_RATE_PER_ADDRESS", str(DEFAULT_RATE_PER_ADDRESS)))
        except ValueError:
            raise ConfigError("RAG_RATE_PER_ADDRESS must be a whole number of requests a minute") from None
        try:
            check = float(env.get("RAG_FEEDS_CHECK_SECONDS", str(DEFAULT_FEEDS_CHECK_SECONDS)))
            delay = float(env.get("RAG_FEEDS_HOST_DELAY", str(DEFAULT_HOST_DELAY_SECONDS)))
        except ValueError:
            raise ConfigError("RAG_FEEDS_CHECK_SECONDS and RAG_FEEDS_HOST_DELAY are seconds") from None
        try:
            watch_check = float(env.get("RAG_WATCH_CHECK_SECONDS", str(DEFAULT_WATCH_CHECK_SECONDS)))
            near = float(env.get("RAG_WATCH_NEAR", str(DEFAULT_NEAR)))
            retry = float(env.get("RAG_WEBHOOK_RETRY_SECONDS", str(DEFAULT_WEBHOOK_RETRY_SECONDS)))
            tries = int(env.get("RAG_WEBHOOK_TRIES", str(DEFAULT_WEBHOOK_TRIES)))
            per_key = int(env.get("RAG_WATCHES_PER_KEY", str(DEFAULT_WATCHES_PER_KEY)))
        except ValueError:
            raise ConfigError(
                "RAG_WATCH_CHECK_SECONDS, RAG_WATCH_NEAR and RAG_WEBHOOK_RETRY_SECONDS are numbers, "
                "RAG_WEBHOOK_TRIES and RAG_WATCHES_PER_KEY whole numbers"
            ) from None
        return cls(
            data_dir=data_dir_from_env(env),
            watch_check_seconds=max(watch_check, 0.05),
            watch_near=near,
            webhook_retry_seconds=max(retry, 0.0),
            webhook_tries=max(tries, 1),
            watches_per_key=max(per_key, 1),
            rate_per_address=rate,
            feeds_check_seconds=max(check, 0.1),
            feeds_host_delay_seconds=max(delay, 0.0),
            trusted_proxies=_listed(env.get("RAG_TRUSTED_PROXIES", "")),
            allowed_hosts=_listed(env.get("RAG_ALLOWED_HOSTS", "")),
            feeds_allow_networks=_listed(env.get("RAG_FEEDS_ALLOW_NETWORKS", "")),
        )


@dataclass(frozen=True)
class Settings:
    """Everything the service is built from (api/root.py builds it)."""

    index: IndexSettings = field(default_factory=IndexSettings)
    answers: AnswerSettings = field(default_factory=AnswerSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The only place that reads the environment."""
        return cls(IndexSettings.from_env(env), AnswerSettings.from_env(env), ServiceSettings.from_env(env))

    @classmethod
    def under(cls, data_dir: Path, tiktoken_cache_dir: Path | None = None, **service: object) -> Settings:
        """Defaults for the data folder ``data_dir`` (``service`` overrides ServiceSettings fields)."""
        return cls(
            IndexSettings.under(data_dir, tiktoken_cache_dir),
            AnswerSettings(),
            ServiceSettings(data_dir=data_dir, **service),  # type: ignore[arg-type]
        )


def _listed(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())
