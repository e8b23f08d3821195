"""Records that flow from ingest to answers. Frozen: stages take records in and give new ones out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date

ID_PATTERN = r"^[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,199}(?![\s\S])"
"""An article id: 1-200 ASCII letters, digits and ``_ . : -``, not starting with a dot (so never ``.``
or ``..``), no slashes, spaces or control characters; the same regex in Python and in the HTTP schema
(which is why it ends with a lookahead, not ``$``: see index/dates.py ``END``)."""

_SLUG_NOISE = frozenset(
    ["index", "html", "htm", "cnn", "intl", "spt", "vpx", "nr", "sot", "ovn", "contd", "hnk", "gbr", "trnd"]
)


def url_topic(url: str | None) -> str:
    """Words of the most descriptive path segment of a URL (``/2022/06/15/business/ford-recall/index.html``
    gives "ford recall"): many news records carry no title, but their address names the story."""
    if not url:
        return ""
    path = url.split("://", 1)[-1].split("?", 1)[0].split("#", 1)[0]
    segments = [
        s.rsplit(".", 1)[0] if s.endswith((".html", ".htm", ".cnn")) else s for s in path.split("/")[1:]
    ]
    best = max(segments, key=lambda s: s.count("-"), default="")
    words = [w for w in best.replace("_", "-").split("-") if w and w.lower() not in _SLUG_NOISE]
    return " ".join(words) if len(words) >= 2 else ""


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
    def headline_only(self) -> bool:
        """Kept for its headline (or the words of its address) alone: nothing of the body survived
        cleaning (a video or gallery page, a feed of headlines). Found by its headline, never quoted."""
        return not self.body

    @property
    def headline(self) -> str:
        """The title, or without one the body's first words (the address's words when there is no body)."""
        if self.title:
            return self.title
        if self.headline_only:
            topic = url_topic(self.url)
            return topic[:1].upper() + topic[1:]
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
