"""Request limits: token buckets per client address and per key, and daily caps per key, kept in one SQLite
file (``limits.sqlite`` in the data folder) that every worker of `rag serve --workers N` shares, so a
client meets the same limit whichever worker answers it.

A bucket holds up to ``per_minute`` requests and refills at ``per_minute / 60`` a second, so a client
may burst up to its minute's allowance and then goes at the steady rate. Daily caps count requests per
key per UTC day; the counts are also copied to the key table every few seconds (``rag keys``) and read
back from it when the limits file is new.

The limits file is scratch: it is written with ``synchronous = OFF`` (a request never waits for the
disk), so a power cut may forget the last seconds of counting, and a damaged one is started afresh.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from api.state.keys import ApiKey, KeyRing
from api.state.sqlite import immediate

log = logging.getLogger("api.state.limits")
_FORGET_EVERY = 1000
_IDLE_SECONDS = 3600.0
_SAVE_EVERY_SECONDS = 5.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, tokens REAL NOT NULL, stamp REAL NOT NULL);
CREATE TABLE IF NOT EXISTS daily (
    name TEXT NOT NULL, day TEXT NOT NULL, used INTEGER NOT NULL, PRIMARY KEY (name, day)
);
"""
Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one limit for one request."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    """Seconds until the next request would be allowed (when refused) or the bucket is full again."""
    kind: str
    """Which limit: ``address``, ``key`` or ``daily``."""


class Counts:
    """The limits file: one connection, one short write transaction per request. ``None``: a private
    in-memory table (one process, as the unit tests use)."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        where = ":memory:" if self._path is None else str(self._path)
        db = sqlite3.connect(where, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            if self._path is not None:
                db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = OFF")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            if self._path is None:
                raise
            log.warning("the limits file %s was unreadable; starting it afresh", self._path.name)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self._path}{suffix}").unlink(missing_ok=True)
            return self._open()
        return db

    @contextlib.contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self._db):
            yield self._db

    def close(self) -> None:
        """Close the file (closing twice is harmless)."""
        with self._lock:
            self._db.close()


class Buckets:
    """Token buckets by name in the shared limits file; buckets idle for an hour are forgotten."""

    def __init__(self, counts: Counts | None = None, clock: Callable[[], float] = time.time) -> None:
        self._counts = counts or Counts()
        self._clock = clock
        self._taken = 0

    def close(self) -> None:
        self._counts.close()

    def take(self, name: str, per_minute: int, kind: str) -> Verdict:
        rate = per_minute / 60.0
        now = self._clock()
        with self._counts.writing() as db:
            row = db.execute("SELECT tokens, stamp FROM buckets WHERE name = ?", (name,)).fetchone()
            # A clock that stepped back (or a bucket saved with a larger limit) never grants extra.
            tokens = float(per_minute)
            if row is not None:
                tokens = min(tokens, float(row[0]) + max(now - float(row[1]), 0.0) * rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            db.execute(
                "INSERT INTO buckets VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET tokens = excluded.tokens, stamp = excluded.stamp",
                (name, tokens, now),
            )
            self._taken += 1
            if self._taken % _FORGET_EVERY == 0:
                db.execute("DELETE FROM buckets WHERE stamp < ?", (now - _IDLE_SECONDS,))
        if allowed:
            return Verdict(True, per_minute, int(tokens), math.ceil((per_minute - tokens) / rate), kind)
        return Verdict(False, per_minute, 0, max(math.ceil((1.0 - tokens) / rate), 1), kind)


class DailyCaps:
    """Requests per key per UTC day in the shared limits file; a background thread copies them to the key
    table (a request never waits for the service database)."""

    def __init__(
        self,
        keys: KeyRing,
        counts: Counts | None = None,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        self._keys = keys
        self._counts = counts or Counts()
        self._today = today
        day = today()
        with self._counts.writing() as db:  # the key table's counts, for a limits file started afresh
            db.executemany(
                "INSERT INTO daily VALUES (?, ?, ?) ON CONFLICT (name, day) "
                "DO UPDATE SET used = max(used, excluded.used)",
                [(name, day.isoformat(), used) for name, used in keys.usage(day).items()],
            )
        self._stop = threading.Event()
        self._saver = threading.Thread(target=self._save_periodically, name="daily-caps", daemon=True)
        self._saver.start()

    def take(self, key: ApiKey) -> Verdict | None:
        if key.per_day is None:
            return None
        day = self._today()
        with self._counts.writing() as db:
            row = db.execute(
                "SELECT used FROM daily WHERE name = ? AND day = ?", (key.name, day.isoformat())
            ).fetchone()
            used = 0 if row is None else int(row[0])
            if used < key.per_day:
                db.execute(
                    "INSERT INTO daily VALUES (?, ?, 1) "
                    "ON CONFLICT (name, day) DO UPDATE SET used = used + 1",
                    (key.name, day.isoformat()),
                )
        if used >= key.per_day:
            midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
            wait = math.ceil((midnight - datetime.now(UTC)).total_seconds())
            return Verdict(False, key.per_day, 0, max(wait, 1), "daily")
        return Verdict(True, key.per_day, key.per_day - used - 1, 0, "daily")

    def save(self) -> None:
        """Copy today's counts to the key table (they only grow there)."""
        day = self._today()
        with self._counts.writing() as db:
            db.execute("DELETE FROM daily WHERE day < ?", (day.isoformat(),))
            rows = db.execute("SELECT name, used FROM daily WHERE day = ?", (day.isoformat(),)).fetchall()
        self._keys.save_usage(day, {str(name): int(used) for name, used in rows})

    def close(self) -> None:
        """Stop the saving thread and save once more."""
        self._stop.set()
        self._saver.join(timeout=60)
        self.save()

    def _save_periodically(self) -> None:
        while not self._stop.wait(_SAVE_EVERY_SECONDS):
            try:
                self.save()
            except Exception:
                log.exception("saving daily usage failed; retrying")


def client_address(
    peer: str | None,
    forwarded_for: str | None,
    trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str:
    """The address a request came from: the peer, or, when the peer is a trusted proxy, the last address
    in ``X-Forwarded-For`` that is not itself a trusted proxy."""
    if not peer:
        return "unknown"
    if not trusted or not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _is_trusted(hop, trusted):
            return hop
    return peer


def _is_trusted(address: str, trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def parse_networks(values: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``["10.0.0.0/8", "127.0.0.1"]`` as networks; raises ValueError on a bad one."""
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip()]


@dataclass
class Doorkeeper:
    """The state the guard consults; created when the index has loaded."""

    keys: KeyRing
    daily: DailyCaps
    open_without_keys: bool
    """Whether the service answers without a key when none is configured (loopback or --insecure)."""
    per_address_per_minute: int
    """Requests a minute from one client address on limited routes; 0: no limit."""
    trusted_proxies: Networks = ()
    allowed_hosts: frozenset[str] = frozenset()
    """``Host`` names answered while open, beside the loopback ones (lowercase, no port)."""
    buckets: Buckets = field(default_factory=Buckets)

    def close(self) -> None:
        self.daily.close()
        self.keys.close()
        self.buckets.close()
