"""The feeds the service follows (``feeds``, and what each poll learned of each entry in
``feed_entries``), kept in ``service.sqlite`` beside the keys and the watches. The poll itself is
api/work/poll.py's."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from api.errors import FeedNotFoundError
from api.store.sqlite import Table, immediate
from index.clean import MAX_NAME_CHARS, clip, plain_line
from index.feeds import FeedError

log = logging.getLogger(__name__)

DEFAULT_EVERY_SECONDS = 15 * 60
PAUSE_AFTER_FAILURES = 5
"""Consecutive failed polls after which a feed is paused (shown in `rag feeds list`)."""

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


def outlet_name(url: str, name: str) -> str:
    """A feed's outlet name as stored: one plain line, cut to 200 characters; its host when empty."""
    return clip(plain_line(name), MAX_NAME_CHARS) or urlsplit(url).netloc


def due_now(feeds: list[Feed], now: float) -> list[Feed]:
    """Of ``feeds``, those to poll now: due and not paused, or asked for (first)."""
    due = [f for f in feeds if f.next_poll <= now and (f.next_poll < 0 or not f.paused)]
    return sorted(due, key=lambda f: f.next_poll >= 0)


def finished(report: PollReport, etag: str | None, last_modified: str | None) -> tuple[object, ...]:
    """What a poll leaves on its feed: etag, last_modified, last_poll, last_status, last_error, failures,
    next_poll (failures back off, doubling, up to a day), articles added, and the feed's id."""
    feed, now = report.feed, time.time()
    failed = report.status == "failed"
    failures = feed.failures + 1 if failed else 0
    wait = feed.every_seconds * (2 ** min(failures, 6)) if failed else feed.every_seconds
    return (
        etag if not failed else feed.etag,
        last_modified if not failed else feed.last_modified,
        datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        report.status,
        report.error,
        failures,
        now + min(wait, 86_400),
        len(report.added),
        feed.id,
    )


class FeedRegistry:
    """The feeds table of ``service.sqlite``; safe for several threads and processes."""

    def __init__(self, path: Path) -> None:
        self._table = Table(path, "feed tables", _SCHEMA)
        self._db, self._lock = self._table.db, self._table.lock
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(feeds)")}
        if "lease_pid" not in columns:  # a table made before leases named their process
            self._db.execute("ALTER TABLE feeds ADD COLUMN lease_pid INTEGER NOT NULL DEFAULT 0")
        self._never_reuse_ids()

    def close(self) -> None:
        self._table.close()

    def _never_reuse_ids(self) -> None:
        """A feeds table made before ids were AUTOINCREMENT (where SQLite gives a removed feed's id to the
        next one, so a stale id reached another feed) is rebuilt as one, its feeds and entries kept. SQLite
        cannot add AUTOINCREMENT in place: this is its documented rebuild, with foreign keys off so that
        dropping the old table does not cascade to the entries. Ids removed before the rebuild above the
        largest one left cannot be known and may come again once."""
        if self._autoincrement():
            return
        self._db.execute("PRAGMA foreign_keys = OFF")
        try:
            with self._transaction():
                if self._autoincrement():  # another process rebuilt it meanwhile
                    return
                table = _SCHEMA.split(";", 1)[0].replace("IF NOT EXISTS feeds", "feeds_rebuilt")
                self._db.execute(table)
                self._db.execute(f"INSERT INTO feeds_rebuilt ({_ALL}) SELECT {_ALL} FROM feeds")
                self._db.execute("DROP TABLE feeds")
                self._db.execute("ALTER TABLE feeds_rebuilt RENAME TO feeds")
        finally:
            self._db.execute("PRAGMA foreign_keys = ON")

    def _autoincrement(self) -> bool:
        (made,) = self._db.execute("SELECT sql FROM sqlite_master WHERE name = 'feeds'").fetchone()
        return "AUTOINCREMENT" in str(made).upper()

    def add(self, url: str, name: str, kind: str, every_seconds: int) -> Feed:
        """Follow ``url``; ``name`` (the outlet's) is stored as a one-line field is, cut to 200
        characters."""
        name = outlet_name(url, name)
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
            rows = self._db.execute(f"SELECT {COLUMNS} FROM feeds ORDER BY id").fetchall()
        return [Feed(*row) for row in rows]

    def get(self, ref: str) -> Feed:
        """The feed with this id or address (an id past SQLite's integers is simply no feed)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {COLUMNS} FROM feeds WHERE id = ? OR url = ?",
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
        return due_now(self.feeds(), now)

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
        with self._lock:
            self._db.execute(
                "UPDATE feeds SET etag = ?, last_modified = ?, last_poll = ?, last_status = ?, "
                "last_error = ?, failures = ?, next_poll = ?, added = added + ?, lease_until = 0 "
                "WHERE id = ?",
                finished(report, etag, last_modified),
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


COLUMNS = (
    "id, url, name, kind, every_seconds, etag, last_modified, last_poll, last_status, last_error, failures, "
    "next_poll, added"
)
_ALL = f"{COLUMNS}, lease_until, lease_pid"
