"""Records that flow from ingest to answers. Frozen: stages take records in and give new ones out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date


@dataclass(frozen=True)
class Article:
    """A cleaned news article, ready to chunk."""

    id: str
    title: str
    body: str
    source: str | None = None
    url: str | None = None
    published_at: date | None = None
    authors: tuple[str, ...] = ()
    origin: str = ""
    """Where the article came from (file path, record number); for messages only."""

    @property
    def content_hash(self) -> str:
        """Hash of everything indexed about the article; equal hashes mean re-ingest changes nothing."""
        parts = [
            self.title,
            self.body,
            self.source or "",
            self.url or "",
            self.published_at.isoformat() if self.published_at else "",
            "\x1f".join(self.authors),
        ]
        return hashlib.sha256("\x1e".join(parts).encode()).hexdigest()

    @property
    def headline(self) -> str:
        """The title, or the body's first words when there is none."""
        if self.title:
            return self.title
        words = self.body.split()
        return " ".join(words[:12]) + (" …" if len(words) > 12 else "")


@dataclass(frozen=True)
class Span:
    """A half-open character range ``[start, end)`` into an article body."""

    start: int
    end: int


@dataclass(frozen=True)
class Chunk:
    """A run of whole sentences of one article, the unit that is embedded and retrieved."""

    id: int
    article_id: str
    ordinal: int
    span: Span
    text: str
    n_tokens: int


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did, article by article."""

    added: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    failed: tuple[str, ...] = field(default=())
    """Messages naming the file or record and the reason."""

    @property
    def chunk_changes(self) -> int:
        return len(self.added) + len(self.replaced)
