"""The poll that turns a followed feed's new and changed entries into articles; the feeds and what each
poll learned are kept by api/store/feeds.py.

A poll of one feed: the feed fetched conditionally (a 304 ends it: nothing else is fetched or embedded);
each entry whose feed stamp is unchanged since the last poll is skipped without a request; every other
page is fetched conditionally (its own ETag and Last-Modified), extracted (trafilatura: the site's
furniture left out), merged with what the feed says (title, outlet, authors, dates), and written through
the one ingest path, which embeds only what changed. An entry whose page cannot be fetched or holds no
text falls back to the feed's own text, else is skipped with the reason. What the poll learned of each
entry is recorded only after its article is committed, so a poll killed halfway is resumed by the next
one, which finds the committed articles unchanged.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from api.store.feeds import Feed, PollReport
from api.store.protocols import FeedStore
from index import Article, ArticleError, Ingestor, parse_record
from index.feeds import Entry, FeedError, Parsed, article_id, parse
from index.fetch import Fetched, Fetcher, FetchError
from index.load import page_record, page_text
from index.urls import AddressError, canonical_url

log = logging.getLogger(__name__)

STORE_GROUP = 20
"""Entries fetched, then committed and recorded together."""
MAX_SITEMAPS = 20
"""Sitemaps of one sitemap index read in one poll."""


def detect(fetcher: Fetcher, url: str) -> Parsed:
    """What ``url`` serves, read once (at `feeds add`): FetchError or FeedError when it is unusable."""
    return _parse(fetcher.get(url))


def _parse(fetched: Fetched) -> Parsed:
    """A fetched feed or sitemap read with the charset its HTTP header declares, if any."""
    return parse(fetched.body, fetched.charset)


class Poller:
    """Polls feeds into the index through ``ingestor``, fetching with ``fetcher``."""

    def __init__(self, registry: FeedStore, fetcher: Fetcher, ingestor: Ingestor) -> None:
        self.registry = registry
        self.fetcher = fetcher
        self.ingestor = ingestor

    def poll(self, feed: Feed) -> PollReport:
        report = PollReport(feed)
        before = self.fetcher.requests
        if not self.registry.lease(feed, 600):
            report.status = "busy"  # another process is polling it: nothing done, nothing failed
            return report
        etag, last_modified = feed.etag, feed.last_modified
        try:
            fetched = self.fetcher.get(feed.url, feed.etag, feed.last_modified)
            etag, last_modified = fetched.etag, fetched.last_modified
            if fetched.status == 304:
                report.status = "not modified"
            else:
                parsed = _parse(fetched)
                if parsed.problems:  # read as far as it goes; said in the report and in `feeds list`
                    report.error = "; ".join(parsed.problems)
                entries = list(parsed.entries) + self._sitemap_entries(parsed, report)
                self._store(feed, entries, report)
        except (FetchError, FeedError) as exc:
            report.status, report.error = "failed", str(exc)
        except Exception as exc:  # a bug must not keep the lease or jam the feed's schedule
            log.exception("polling feed %s failed", feed.id)
            report.status, report.error = "failed", f"internal error ({type(exc).__name__}); see the log"
        finally:  # the poll is recorded and the lease let go, whatever happened
            report.requests = self.fetcher.requests - before
            self.registry.finish(report, etag, last_modified)
        return report

    def _sitemap_entries(self, parsed: Parsed, report: PollReport) -> list[Entry]:
        entries: list[Entry] = []
        for url in parsed.sitemaps[:MAX_SITEMAPS]:
            try:
                entries.extend(_parse(self.fetcher.get(url)).entries)
            except (FetchError, FeedError) as exc:
                report.skipped.append(f"{url}: {exc}")
        return entries

    def _store(self, feed: Feed, entries: list[Entry], report: PollReport) -> None:
        """The entries in groups, each group's articles committed and then recorded, so a poll cut short
        keeps what it finished and the next one starts where it stopped."""
        for start in range(0, len(entries), STORE_GROUP):
            self._store_group(feed, entries[start : start + STORE_GROUP], report)

    def _store_group(self, feed: Feed, entries: list[Entry], report: PollReport) -> None:
        articles: list[Article] = []
        learned: list[tuple[str, str | None, str | None, str | None, str]] = []
        for entry in entries:
            known = self.registry.entry(feed, entry.url)
            if known is not None and entry.updated is not None and known[0] == entry.updated:
                report.unchanged += 1  # the feed says it has not changed: not fetched again
                continue
            made = self._article(feed, entry, known, report)
            if made is None:
                continue
            article, etag, last_modified = made
            if article is not None:
                articles.append(article)
            stored = article.id if article is not None else (known[3] if known else "")
            learned.append((entry.url, entry.updated, etag, last_modified, stored))
        if articles:
            result = self.ingestor.ingest(articles, progress=False)
            report.added.extend(result.added)
            report.replaced.extend(result.replaced)
            report.unchanged += len(result.unchanged)
            report.skipped.extend(result.failed)
        self.registry.record_entries(feed, learned)

    def _article(
        self,
        feed: Feed,
        entry: Entry,
        known: tuple[str | None, str | None, str | None, str] | None,
        report: PollReport,
    ) -> tuple[Article | None, str | None, str | None] | None:
        """The entry's article (None with the validators when the page has not changed: a 304), or None
        when it is skipped (the reason in the report)."""
        record: dict[str, Any] | None = None
        etag = last_modified = None
        reason = ""
        try:
            page = self.fetcher.get(entry.url, known[1] if known else None, known[2] if known else None)
            etag, last_modified = page.etag, page.last_modified
            if page.status == 304:
                report.unchanged += 1
                return None, etag, last_modified
            record = page_record(page_text(page.body, page.charset), page.url)
            if record is None:
                reason = "the page holds no article text"
        except FetchError as exc:
            reason = str(exc)
        if record is None:
            if not entry.content:
                report.skipped.append(f"{entry.url}: {reason}")
                return None
            record = {"body": entry.content, "url": None, "title": "", "authors": [], "source": None}
        try:
            address = canonical_url(record.get("url") or entry.url)
        except AddressError as exc:
            report.skipped.append(f"{entry.url}: {exc}")
            return None
        record.update(
            id=article_id(address),
            url=address,
            title=entry.title or record.get("title") or "",
            source=entry.source or feed.name or record.get("source"),
            published_at=entry.published.isoformat() if entry.published else record.get("published_at"),
            authors=list(entry.authors) or record.get("authors") or [],
        )
        try:
            return parse_record(record, entry.url), etag, last_modified
        except ArticleError as exc:
            report.skipped.append(f"{entry.url}: {exc}")
            return None


_EVERY = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def every_seconds(value: str) -> int:
    match = _EVERY.match(value.strip().lower())
    if not match or int(match.group(1)) <= 0:
        raise FeedError(f"every {value!r}: give a number with s, m, h or d, such as 15m")
    return int(match.group(1)) * _UNITS[match.group(2)]
