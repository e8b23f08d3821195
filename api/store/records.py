"""The records of standing questions (api/store/watches.py keeps them): a watch, a new one with its
secrets, what the matcher found, a stored alert, a webhook try due."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Watch:
    """One standing question as stored (never its feed token; its webhook secret only where asked)."""

    id: str
    owner: str | None
    question: str
    sources: tuple[str, ...]
    webhook: str | None
    min_confidence: float
    after_chunk: int
    """Chunks above this id are news to the watch (the matcher's cursor when it was made)."""
    created_at: str
    failing: str | None
    """Why its webhook stopped being tried; None while deliveries work."""
    alerts: int
    has_feed: bool
    active: bool = True
    """False once the key that owns it is revoked (without ``keep_watches``): it no longer matches,
    delivers or serves its feed."""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "sources": list(self.sources),
            "webhook": self.webhook,
            "min_confidence": self.min_confidence,
            "owner": self.owner,
            "created_at": self.created_at,
            "alerts": self.alerts,
            "failing": self.failing,
            "feed": self.has_feed,
            "active": self.active,
        }


@dataclass(frozen=True)
class Made:
    """A new watch with the secrets shown this once: its feed token and its webhook secret."""

    watch: Watch
    feed_token: str
    webhook_secret: str | None


@dataclass(frozen=True)
class Alert:
    """One alert: the watch, its number, the story, and the body every channel sends (JSON)."""

    id: str
    watch_id: str
    seq: int
    story: str
    article_id: str
    created_at: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Found:
    """What the matcher found for a watch, before it is numbered and stored."""

    watch_id: str
    story: str
    article_id: str
    answer: dict[str, Any]
    """The cited answer as ``/ask`` gives it."""
    confidence: float
    """The reader's probability that the article answers."""
    near: float = 0.0
    """The best cosine between the question and one of the article's chunks."""
    overlap: float = 0.0
    """The share of the question's words (weighted by idf) the article holds."""


@dataclass(frozen=True)
class Delivery:
    """One alert due for its webhook."""

    alert_id: str
    watch_id: str
    attempts: int
    url: str
    secret: str
    body: str
