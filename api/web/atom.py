"""A watch's alerts as an Atom feed (feedgen), with what XML cannot carry removed."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from feedgen.feed import FeedGenerator

from api.store.records import Alert, Watch

_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(text: str) -> str:
    """The last guard: text kept before ingest and the watch store removed these still renders."""
    return _NOT_XML.sub("", text)


def atom(watch: Watch, alerts: list[Alert], self_url: str) -> bytes:
    """An Atom feed of ``alerts`` (newest first), one entry each: the short answer as its title, the
    cited answer as its content, the first cited article as its link."""
    feed = FeedGenerator()
    feed.id(f"urn:newsrag:watch:{watch.id}")
    feed.title(_xml(f"News answering: {watch.question}"))
    feed.subtitle("Alerts when a new article answers this question, each with its cited sentences.")
    feed.link(href=self_url, rel="self")
    feed.updated(_when(alerts[0].created_at) if alerts else _when(watch.created_at))
    feed.generator("newsrag")
    for alert in reversed(alerts):  # feedgen puts each new entry first
        body = alert.body
        citations = body.get("citations") or []
        short = (body.get("short_answer") or {}).get("text")
        entry = feed.add_entry()
        entry.id(f"urn:newsrag:alert:{alert.id}")
        headline = citations[0].get("title") if citations else None
        entry.title(_xml(short or headline or watch.question))
        if citations and citations[0].get("url"):
            entry.link(href=_xml(citations[0]["url"]))
        lines = [body.get("answer", "")] + [
            f"[{c['n']}] {c.get('source') or ''}, {c.get('title') or ''} "
            f"({c.get('published_at') or 'undated'}) {c.get('url') or ''}"
            for c in citations
        ]
        entry.content(_xml("\n".join(lines)), type="text")
        entry.published(_when(alert.created_at))
        entry.updated(_when(alert.created_at))
    written: bytes = feed.atom_str(pretty=True)
    return written


def _when(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
