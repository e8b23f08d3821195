"""Request limits: token buckets per client address and per key, and daily caps per key, kept in one SQLite
file (``limits.sqlite`` in the data folder) that every worker of `rag serve --workers N` shares, so a
client meets the same limit whichever worker answers it.

A bucket holds up to ``per_minute`` requests and refills at ``per_minute / 60`` a second, so a client
may burst up to its minute's allowance and then goes at the steady rate. Daily caps count requests per
key per UTC day; the counts are also copied to the key table every few seconds (``rag keys``) and read
back from it whenever a process opens the limits file.

The limits file is scratch: it is written with ``synchronous = OFF`` (a request never waits for the
disk), so a power cut may forget the last seconds of counting, and a damaged one is started afresh. Never
under a live process, though: deleting a WAL database under an open connection corrupts it (and that
connection, closing later, may unlink the new file's ``-wal``). So every process holds a shared flock on
``limits.sqlite.lock`` while it has the file open; a process that meets damage closes the file and lets
the lock go, and only one that then gets the lock exclusively (no other process has the file open)
deletes and recreates it. Until then, its requests get LimitsUnavailableError (503). Each process looks
at the file through a new connection every few seconds (a connection's page cache can hide damage that
a starting worker meets), so every process lets go within seconds and the last one repairs.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from api.errors import LimitsUnavailableError
from api.state.keys import ApiKey, KeyRing

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
T = TypeVar("T")


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
    in-memory table (one process, as the unit tests use).

    Two Counts on one path behave as two processes would (a flock belongs to an open file description)."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._seeds: list[Callable[[sqlite3.Connection], object]] = []
        self._db: sqlite3.Connection | None = None
        self._fd: int | None = None
        """The lock file, flocked shared while ``_db`` is open."""
        self._closed = False
        if path is None:
            self._db = _connect(":memory:")
            self._db.executescript("PRAGMA synchronous = OFF;" + _SCHEMA)
            return
        self._fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with self._lock:
            try:
                self._attached(wait=True)
            except LimitsUnavailableError as exc:  # a starting worker still answers what needs no limits
                log.warning("%s; retrying on the next request", exc)

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` in one write transaction. LimitsUnavailableError while the file is damaged and another
        process still has it open."""
        with self._lock:
            for _ in range(2):  # once more on a file this process has just started afresh
                try:
                    return _transaction(self._attached(wait=False), work)
                except sqlite3.DatabaseError as exc:
                    if self._path is None or not _damaged(exc):
                        raise
                    self._let_go(str(exc))
            raise LimitsUnavailableError(f"the limits file {self._name} was damaged again at once")

    def on_open(self, seed: Callable[[sqlite3.Connection], object]) -> None:
        """Run ``seed`` in a write transaction now and whenever this process opens the file again (a file
        started afresh takes the daily counts back from the key table)."""
        with self._lock:
            self._seeds.append(seed)
        with contextlib.suppress(LimitsUnavailableError):
            self.write(seed)

    def check(self) -> None:
        """Look at the file through a new connection, as a starting worker would; let go of it when it is
        damaged, and open it again when it was let go of (started afresh when no other process has it
        open). DailyCaps' saver calls this every few seconds."""
        if self._path is None:
            return
        with self._lock:
            if self._db is not None:
                problem = _look(self._path, alone=False)
                if problem is not None:
                    self._let_go(problem)
        with contextlib.suppress(LimitsUnavailableError):
            self.write(_nothing)

    def close(self) -> None:
        """Close the file (closing twice is harmless)."""
        with self._lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._fd is not None:
                os.close(self._fd)  # closing the descriptor releases the lock
                self._fd = None

    @property
    def _name(self) -> str:
        return "(in memory)" if self._path is None else self._path.name

    def _attached(self, wait: bool) -> sqlite3.Connection:
        """The open connection, or a new one under a shared lock (after repairing the file when no other
        process has it open); the caller holds ``_lock``."""
        if self._db is not None:
            return self._db
        if self._closed or self._path is None or self._fd is None:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        if _flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB):
            try:
                _repair(self._path)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        # flock cannot turn exclusive into shared at once: released first (nothing is open meanwhile), so
        # another process may repair in between, and this one then opens its file.
        if not _flock(self._fd, fcntl.LOCK_SH | (0 if wait else fcntl.LOCK_NB)):
            raise LimitsUnavailableError(f"another process is repairing the limits file {self._name}")
        try:
            db = _connect(self._path)
            try:
                problem = _verify(db, alone=False)
                if problem is not None:
                    raise LimitsUnavailableError(
                        f"the limits file {self._name} is damaged ({problem}) and another process still "
                        "has it open"
                    )
                for seed in self._seeds:
                    _transaction(db, seed)
            except BaseException:
                db.close()
                raise
        except BaseException:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            raise
        self._db = db
        return db

    def _let_go(self, problem: str) -> None:
        """Close the damaged file and release the shared lock, so that the last process to let go of it can
        start it afresh; the caller holds ``_lock``."""
        log.warning("the limits file %s is damaged (%s); this process lets go of it", self._name, problem)
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


def _connect(where: str | Path) -> sqlite3.Connection:
    """A connection that has not read the file yet (``_verify`` is the first to)."""
    db = sqlite3.connect(where, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 10000")
    return db


def _repair(path: Path) -> None:
    """Start the file afresh if it is damaged; the caller holds the lock file exclusively."""
    problem = _look(path, alone=True)
    if problem is None:
        return
    log.warning(
        "the limits file %s was damaged (%s); no other process has it open, so it is started afresh "
        "(the daily counts come back from the key table)",
        path.name,
        problem,
    )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    problem = _look(path, alone=True)
    if problem is not None:
        raise LimitsUnavailableError(f"the limits file {path.name} cannot be made afresh ({problem})")


def _look(path: Path, alone: bool) -> str | None:
    """What is wrong with the file, through a connection of its own; None when it is sound."""
    db = _connect(path)
    try:
        return _verify(db, alone)
    finally:
        db.close()


def _verify(db: sqlite3.Connection, alone: bool) -> str | None:
    """What is wrong with the file, None when sound (its tables are then there). ``alone``: no other
    process has it open, so a new file may be put in WAL mode; otherwise it must be in WAL mode already
    (a truncated file reads as an empty one in another mode, and writing it so would corrupt it)."""
    try:
        mode = db.execute("PRAGMA journal_mode = WAL" if alone else "PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            return f"it is in journal mode {mode!r}, not WAL"
        db.execute("PRAGMA synchronous = OFF")
        checked = [str(row[0]) for row in db.execute("PRAGMA quick_check(3)")]
        if checked != ["ok"]:
            return "; ".join(checked)
        db.executescript(_SCHEMA)  # a missing table is made again in place
    except sqlite3.DatabaseError as exc:
        if not _damaged(exc):
            raise
        return str(exc)
    return None


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """Whether an error means the file cannot be read as it is (garbage, a malformed page, a short read, a
    missing table), as opposed to a busy file or a full disk."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    damage = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_IOERR)
    return code in damage or "no such table" in str(exc)


def _flock(fd: int, how: int) -> bool:
    try:
        fcntl.flock(fd, how)
    except BlockingIOError:
        return False
    return True


def _transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """``BEGIN IMMEDIATE`` (the write lock now, so two processes' read-then-write cannot interleave), and
    a rollback that tolerates the one SQLite already made on meeting damage."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _nothing(db: sqlite3.Connection) -> None:
    del db


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
        keys: KeyRing,
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
