"""Request limits: token buckets per client address and per key, and daily caps per key, counted in the
limits file (api/store/counts.py); the Doorkeeper holds them with the keys for the guard (api/web/guard.py).

A bucket holds up to ``per_minute`` requests and refills at ``per_minute / 60`` a second, so a client
may burst up to its minute's allowance and then goes at the steady rate. Daily caps count requests per
key per UTC day; the counts are also copied to the key table every few seconds (``rag keys``) and read
back from it whenever a process opens the limits file.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from api.errors import LimitsUnavailableError
from api.store.counts import Counts
from api.store.keys import ApiKey
from api.store.protocols import KeyStore

log = logging.getLogger("api.store.limits")
_FORGET_EVERY = 1000
_IDLE_SECONDS = 3600.0
_SAVE_EVERY_SECONDS = 5.0
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

        def count(db: sqlite3.Connection) -> float:
            row = db.execute("SELECT tokens, stamp FROM buckets WHERE name = ?", (name,)).fetchone()
            # A clock that stepped back (or a bucket saved with a larger limit) never grants extra.
            tokens = float(per_minute)
            if row is not None:
                tokens = min(tokens, float(row[0]) + max(now - float(row[1]), 0.0) * rate)
            left = tokens - 1.0 if tokens >= 1.0 else tokens
            db.execute(
                "INSERT INTO buckets VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET tokens = excluded.tokens, stamp = excluded.stamp",
                (name, left, now),
            )
            if self._taken % _FORGET_EVERY == 0:
                db.execute("DELETE FROM buckets WHERE stamp < ?", (now - _IDLE_SECONDS,))
            return tokens

        self._taken += 1
        tokens = self._counts.write(count)
        if tokens >= 1.0:
            tokens -= 1.0
            return Verdict(True, per_minute, int(tokens), math.ceil((per_minute - tokens) / rate), kind)
        return Verdict(False, per_minute, 0, max(math.ceil((1.0 - tokens) / rate), 1), kind)


class DailyCaps:
    """Requests per key per UTC day in the shared limits file; a background thread copies them to the key
    table (a request never waits for the service database)."""

    def __init__(
        self,
        keys: KeyStore,
        counts: Counts | None = None,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        self._keys = keys
        self._counts = counts or Counts()
        self._today = today
        self._counts.on_open(self._seed)
        self._stop = threading.Event()
        self._saver = threading.Thread(target=self._save_periodically, name="daily-caps", daemon=True)
        self._saver.start()

    def take(self, key: ApiKey) -> Verdict | None:
        if key.per_day is None:
            return None
        day = self._today()
        per_day = key.per_day

        def count(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT used FROM daily WHERE name = ? AND day = ?", (key.name, day.isoformat())
            ).fetchone()
            used = 0 if row is None else int(row[0])
            if used < per_day:
                db.execute(
                    "INSERT INTO daily VALUES (?, ?, 1) "
                    "ON CONFLICT (name, day) DO UPDATE SET used = used + 1",
                    (key.name, day.isoformat()),
                )
            return used

        used = self._counts.write(count)
        if used >= key.per_day:
            midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
            wait = math.ceil((midnight - datetime.now(UTC)).total_seconds())
            return Verdict(False, key.per_day, 0, max(wait, 1), "daily")
        return Verdict(True, key.per_day, key.per_day - used - 1, 0, "daily")

    def save(self) -> None:
        """Copy today's counts to the key table (they only grow there)."""
        day = self._today()

        def today(db: sqlite3.Connection) -> list[tuple[str, int]]:
            db.execute("DELETE FROM daily WHERE day < ?", (day.isoformat(),))
            rows = db.execute("SELECT name, used FROM daily WHERE day = ?", (day.isoformat(),))
            return [(str(name), int(used)) for name, used in rows]

        self._keys.save_usage(day, dict(self._counts.write(today)))

    def close(self) -> None:
        """Stop the saving thread and save once more."""
        self._stop.set()
        self._saver.join(timeout=60)
        try:
            self.save()
        except LimitsUnavailableError as exc:  # the key table has the counts of the last save
            log.warning("daily usage not saved at shutdown: %s", exc)

    def _seed(self, db: sqlite3.Connection) -> None:
        """The key table's counts, for a limits file started afresh."""
        day = self._today()
        db.executemany(
            "INSERT INTO daily VALUES (?, ?, ?) ON CONFLICT (name, day) "
            "DO UPDATE SET used = max(used, excluded.used)",
            [(name, day.isoformat(), used) for name, used in self._keys.usage(day).items()],
        )

    def _save_periodically(self) -> None:
        while not self._stop.wait(_SAVE_EVERY_SECONDS):
            try:
                self._counts.check()
                self.save()
            except LimitsUnavailableError as exc:
                log.warning("daily usage not saved: %s; retrying", exc)
            except Exception:
                log.exception("saving daily usage failed; retrying")


@dataclass
class Doorkeeper:
    """The state the guard consults; created when the index has loaded."""

    keys: KeyStore
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
