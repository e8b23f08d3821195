"""Feeds and sitemaps read into entries: RSS 0.9x/1.0/2.0 and Atom (feedparser), news sitemaps, plain
sitemaps and sitemap indexes (defusedxml's ElementTree).

Nothing is parsed that declares entities: every document is first read by defusedxml, which refuses
entity declarations and external references (an entity-expansion bomb or an external-entity feed stops
there, before anything expands), and feedparser only ever sees bytes, never an address (it would fetch
one). A document that is not well-formed but declares nothing is still given to feedparser, whose loose
parser recovers what it can; what it reports as wrong is kept as a problem.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from index.clean import plain_line, strip_html
from index.errors import InputError

KINDS = ("rss", "atom", "news-sitemap", "sitemap", "sitemap-index")
MAX_ENTRIES = 1000
"""Entries read from one document; a feed or sitemap longer than this is read to here."""
_SITEMAP = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
_NEWS = "{http://www.google.com/schemas/sitemap-news/0.9}"
_ENCODING = re.compile(r"""^(\s*<\?xml[^>]*?)\s+encoding\s*=\s*["'][^"']*["']""")


class FeedError(InputError):
    """A document that is not a feed or sitemap this service can read, or that it refuses to read."""


@dataclass(frozen=True)
class Entry:
    """One item of a feed or sitemap: the page it links to and what the feed says about it."""

    url: str
    title: str = ""
    published: date | None = None
    updated: str | None = None
    """The feed's own last-changed stamp for the entry (ISO), when it gives one: unchanged, not fetched."""
    authors: tuple[str, ...] = ()
    source: str | None = None
    """The publication, when the feed names it (news sitemaps)."""
    content: str = ""
    """The feed's own text of the entry (summary or content, markup removed): the fallback body."""


@dataclass(frozen=True)
class Parsed:
    """A document read: its kind, title, entries (or, for a sitemap index, the sitemaps it lists)."""

    kind: str
    title: str = ""
    entries: tuple[Entry, ...] = ()
    sitemaps: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)


def article_id(url: str) -> str:
    """An entry's article id, from its canonical address: the same page is one article, however often
    and from whichever feed it comes."""
    return "feed-" + hashlib.sha256(url.encode()).hexdigest()[:20]


def parse(body: bytes, charset: str | None = None) -> Parsed:
    """The feed or sitemap in ``body``; FeedError when it is neither or is refused. ``charset`` is the one
    the HTTP header declares: it outranks the document's own declaration (RFC 7303)."""
    if not body.strip():
        raise FeedError("the document is empty")
    if charset:
        body = _as_utf8(body, charset)
    try:
        root = fromstring(body, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise FeedError(f"refused: the document declares entities or external references ({exc})") from None
    except ParseError as exc:
        if b"<!ENTITY" in body.upper():
            raise FeedError("refused: the document declares entities") from None
        return _with_feedparser(body, (f"not well-formed XML ({exc})",))
    name = root.tag.rsplit("}", 1)[-1].lower()
    if name == "urlset":
        return _urlset(root)
    if name == "sitemapindex":
        locs = [plain_line(loc.text or "") for loc in root.iter(f"{_SITEMAP}loc")]
        return Parsed("sitemap-index", sitemaps=tuple(loc for loc in locs if loc)[:MAX_ENTRIES])
    if name in ("rss", "rdf", "feed"):
        return _with_feedparser(body, ())
    raise FeedError(f"not a feed or a sitemap (the document is <{name}>)")


def _as_utf8(body: bytes, charset: str) -> bytes:
    """``body`` read in ``charset`` and written as UTF-8, its XML declaration saying so: both parsers then
    read what the server declared. An unknown charset leaves the bytes to the document's declaration."""
    try:
        text = body.decode(charset, "replace")
    except LookupError:
        return body
    return _ENCODING.sub(r"\1", text.removeprefix("\ufeff"), count=1).encode("utf-8")


def _urlset(root: Element) -> Parsed:
    entries = []
    news = False
    for item in root.iter(f"{_SITEMAP}url"):
        loc = plain_line(item.findtext(f"{_SITEMAP}loc") or "")
        if not loc:
            continue
        lastmod = plain_line(item.findtext(f"{_SITEMAP}lastmod") or "") or None
        story = item.find(f"{_NEWS}news")
        title, published, source = "", _date(lastmod), None
        if story is not None:
            news = True
            title = plain_line(story.findtext(f"{_NEWS}title") or "")
            stamp = plain_line(story.findtext(f"{_NEWS}publication_date") or "") or None
            published = _date(stamp) or published
            lastmod = lastmod or stamp
            source = plain_line(story.findtext(f"{_NEWS}publication/{_NEWS}name") or "") or None
        entries.append(Entry(loc, title, published, lastmod, (), source))
        if len(entries) >= MAX_ENTRIES:
            break
    return Parsed("news-sitemap" if news else "sitemap", entries=tuple(entries))


def _with_feedparser(body: bytes, problems: tuple[str, ...]) -> Parsed:
    import feedparser

    feed: Any = feedparser.parse(body, sanitize_html=True, resolve_relative_uris=True)
    version = str(feed.get("version") or "")
    if not version or (not feed.entries and feed.get("bozo") and not feed.feed):
        reason = problems[0] if problems else "no entries and no channel"
        raise FeedError(f"not a feed or a sitemap: {reason}")
    if feed.get("bozo") and not problems:
        problems = (f"malformed feed, read as far as possible ({feed.get('bozo_exception')})",)
    entries = []
    for item in feed.entries[:MAX_ENTRIES]:
        link = plain_line(str(item.get("link") or ""))
        if not link:
            continue
        # dict.get: feedparser's own get maps a missing "updated" to "published" with a warning
        stamp = _struct(dict.get(item, "updated_parsed"))
        published = _struct(dict.get(item, "published_parsed")) or stamp
        updated = stamp or published
        authors = tuple(
            name for name in (plain_line(str(a.get("name") or "")) for a in item.get("authors") or []) if name
        )
        text = ""
        for part in item.get("content") or []:
            text = part.get("value") or text
        text = text or str(item.get("summary") or "")
        entries.append(
            Entry(
                url=link,
                title=plain_line(str(item.get("title") or "")),
                published=published.date() if published else None,
                updated=updated.isoformat() if updated else None,
                authors=authors,
                content=strip_html(text).strip(),
            )
        )
    kind = "atom" if version.startswith("atom") else "rss"
    return Parsed(kind, plain_line(str(feed.feed.get("title") or "")), tuple(entries), (), problems)


def _struct(value: Any) -> datetime | None:
    if not isinstance(value, time.struct_time):
        return None
    return datetime.fromtimestamp(calendar.timegm(value), UTC)


def _date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None
