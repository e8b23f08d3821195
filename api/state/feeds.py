"""Feeds the service follows, kept in its own SQLite file (``service.sqlite``, beside the index), and the
poll that turns their new and changed entries into articles.

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
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from api.config import Settings
from api.errors import FeedNotFoundError
from api.state.sqlite import immediate
from index import Article, ArticleError, Ingestor, parse_record
from index.clean import MAX_NAME_CHARS, clip, plain_line
from index.feeds import Entry, FeedError, Parsed, article_id, parse
from index.fetch import Fetched, Fetcher, FetchError, Limits, parse_networks
from index.load import page_record, page_text
from index.urls import AddressError, canonical_url

log = logging.getLogger(__name__)

DEFAULT_EVERY_SECONDS = 15 * 60
PAUSE_AFTER_FAILURES = 5
"""Consecutive failed polls after which a feed is paused (shown in `rag feeds list`)."""
STORE_GROUP = 20
"""Entries fetched, then committed and recorded together."""
MAX_SITEMAPS = 20
"""Sitemaps of one sitemap index read in one poll."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feeds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    url TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    every_seconds INTEGER NOT NULL,
    etag TEXT,
    last_modified TEXT,
    last_poll TEXT,
    last_status TEXT,
    last_error TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    next_poll REAL NOT NULL DEFAULT 0,
    added INTEGER NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    lease_pid INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS feed_entries (
    feed_id INTEGER NOT NULL REFERENCES feeds(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    updated TEXT,
    etag TEXT,
    last_modified TEXT,
    article_id TEXT NOT NULL,
    PRIMARY KEY (feed_id, url)
);
"""


@dataclass(frozen=True)
class Feed:
    id: int
    url: str
    name: str
    kind: str
    every_seconds: int
    etag: str | None
    last_modified: str | None
    last_poll: str | None
    last_status: str | None
    last_error: str | None
    failures: int
    next_poll: float
    added: int

    @property
    def paused(self) -> bool:
        return self.failures >= PAUSE_AFTER_FAILURES

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "name": self.name,
            "kind": self.kind,
            "every_seconds": self.every_seconds,
            "last_poll": self.last_poll,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "failures": self.failures,
            "paused": self.paused,
            "next_poll": datetime.fromtimestamp(self.next_poll, UTC).isoformat()
            if self.next_poll > 0
            else None,
            "articles_added": self.added,
        }


@dataclass
class PollReport:
    """What one poll of one feed did."""

    feed: Feed
    status: str = "ok"
    """ok, not modified, failed, or busy (another process was polling it)."""
    error: str | None = None
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)
    """Entries not stored, each with the reason."""
    requests: int = 0


class FeedRegistry:
    """The feeds table of ``service.sqlite``; safe for several threads and processes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(feeds)")}
        if "lease_pid" not in columns:  # a table made before leases named their process
            self._db.execute("ALTER TABLE feeds ADD COLUMN lease_pid INTEGER NOT NULL DEFAULT 0")
        self._never_reuse_ids()
        self._db.execute("PRAGMA foreign_keys=ON")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _never_reuse_ids(self) -> None:
        """A feeds table made before ids were AUTOINCREMENT (where SQLite gives a removed feed's id to the
        next one, so a stale id reached another feed) is rebuilt as one, its feeds and entries kept. SQLite
        cannot add AUTOINCREMENT in place: this is its documented rebuild, with foreign keys off so that
        dropping the old table does not cascade to the entries. Ids removed before the rebuild above the
        largest one left cannot be known and may come again once."""
        if self._autoincrement():
            return
        self._db.execute("PRAGMA foreign_keys=OFF")
        with self._transaction():
            if self._autoincrement():  # another process rebuilt it meanwhile
                return
            table = _SCHEMA.split(";", 1)[0].replace("IF NOT EXISTS feeds", "feeds_rebuilt")
            self._db.execute(table)
            self._db.execute(f"INSERT INTO feeds_rebuilt ({_ALL}) SELECT {_ALL} FROM feeds")
            self._db.execute("DROP TABLE feeds")
            self._db.execute("ALTER TABLE feeds_rebuilt RENAME TO feeds")

    def _autoincrement(self) -> bool:
        (made,) = self._db.execute("SELECT sql FROM sqlite_master WHERE name = 'feeds'").fetchone()
        return "AUTOINCREMENT" in str(made).upper()

    def add(self, url: str, name: str, kind: str, every_seconds: int) -> Feed:
        """Follow ``url``; ``name`` (the outlet's) is stored as a one-line field is, cut to 200
        characters."""
        name = clip(plain_line(name), MAX_NAME_CHARS) or urlsplit(url).netloc
        with self._lock:
            try:
                cursor = self._db.execute(
                    "INSERT INTO feeds (url, name, kind, every_seconds) VALUES (?, ?, ?, ?)",
                    (url, name, kind, every_seconds),
                )
            except sqlite3.IntegrityError:
                raise FeedError(f"{url} is followed already") from None
        return self.get(str(cursor.lastrowid))

    def feeds(self) -> list[Feed]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM feeds ORDER BY id").fetchall()
        return [Feed(*row) for row in rows]

    def get(self, ref: str) -> Feed:
        """The feed with this id or address (an id past SQLite's integers is simply no feed)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM feeds WHERE id = ? OR url = ?",
                (int(ref) if ref.isdigit() and len(ref) <= 18 else -1, ref),
            ).fetchone()
        if row is None:
            raise FeedNotFoundError(f"no feed {ref!r}; `rag feeds list` shows them")
        return Feed(*row)

    def remove(self, ref: str) -> Feed:
        feed = self.get(ref)
        with self._lock:
            self._db.execute("DELETE FROM feeds WHERE id = ?", (feed.id,))
        return feed

    def due(self, now: float) -> list[Feed]:
        """Feeds to poll now: those due and not paused, and those asked for (``ask``), asked first."""
        due = [f for f in self.feeds() if f.next_poll <= now and (f.next_poll < 0 or not f.paused)]
        return sorted(due, key=lambda f: f.next_poll >= 0)

    def ask(self, feed_id: int) -> None:
        """Mark the feed to be polled at the next check, due or paused."""
        with self._lock, self._transaction():
            self._db.execute("UPDATE feeds SET next_poll = -1 WHERE id = ?", (feed_id,))

    def lease(self, feed: Feed, seconds: float) -> bool:
        """Take the feed for one poll; False when another live poller holds it (two processes polling at
        once do not fetch or write the same entries). A lease whose process is gone (killed mid-poll) is
        taken over at once; one that outlives ``seconds`` too."""
        now = time.time()
        with self._lock, self._transaction():
            row = self._db.execute(
                "SELECT lease_until, lease_pid FROM feeds WHERE id = ?", (feed.id,)
            ).fetchone()
            if row is not None and row[0] > now and _alive(int(row[1])):
                return False
            self._db.execute(
                "UPDATE feeds SET lease_until = ?, lease_pid = ? WHERE id = ?",
                (now + seconds, os.getpid(), feed.id),
            )
        return True

    def entry(self, feed: Feed, url: str) -> tuple[str | None, str | None, str | None, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT updated, etag, last_modified, article_id FROM feed_entries "
                "WHERE feed_id = ? AND url = ?",
                (feed.id, url),
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def record_entries(
        self, feed: Feed, entries: list[tuple[str, str | None, str | None, str | None, str]]
    ) -> None:
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO feed_entries "
                "(feed_id, url, updated, etag, last_modified, article_id) VALUES (?, ?, ?, ?, ?, ?)",
                [(feed.id, *entry) for entry in entries],
            )

    def finish(self, report: PollReport, etag: str | None, last_modified: str | None) -> None:
        feed, now = report.feed, time.time()
        failed = report.status == "failed"
        failures = feed.failures + 1 if failed else 0
        wait = feed.every_seconds * (2 ** min(failures, 6)) if failed else feed.every_seconds
        with self._lock:
            self._db.execute(
                "UPDATE feeds SET etag = ?, last_modified = ?, last_poll = ?, last_status = ?, "
                "last_error = ?, failures = ?, next_poll = ?, added = added + ?, lease_until = 0 "
                "WHERE id = ?",
                (
                    etag if not failed else feed.etag,
                    last_modified if not failed else feed.last_modified,
                    datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
                    report.status,
                    report.error,
                    failures,
                    now + min(wait, 86_400),
                    len(report.added),
                    feed.id,
                ),
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with immediate(self._db):
            yield


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_COLUMNS = (
    "id, url, name, kind, every_seconds, etag, last_modified, last_poll, last_status, last_error, failures, "
    "next_poll, added"
)
_ALL = f"{_COLUMNS}, lease_until, lease_pid"


def detect(fetcher: Fetcher, url: str) -> Parsed:
    """What ``url`` serves, read once (at `feeds add`): FetchError or FeedError when it is unusable."""
    return _parse(fetcher.get(url))


def _parse(fetched: Fetched) -> Parsed:
    """A fetched feed or sitemap read with the charset its HTTP header declares, if any."""
    return parse(fetched.body, fetched.charset)


class Poller:
    """Polls feeds into the index through ``ingestor``, fetching with ``fetcher``."""

    def __init__(self, registry: FeedRegistry, fetcher: Fetcher, ingestor: Ingestor) -> None:
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


def fetcher(settings: Settings) -> Fetcher:
    """The fetcher the settings describe (allowed networks, the pause between requests to one host)."""
    service = settings.service
    limits = Limits(host_delay_seconds=service.feeds_host_delay_seconds)
    return Fetcher(parse_networks(",".join(service.feeds_allow_networks)), limits)
