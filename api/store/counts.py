"""The limits file (``limits.sqlite`` in the data folder), which every worker of `rag serve --workers N`
shares, so a client meets the same limit whichever worker answers it (api/store/limits.py counts in it).

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
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from api.errors import LimitsUnavailableError
from api.store.sqlite import connect, immediate

log = logging.getLogger("api.store.counts")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, tokens REAL NOT NULL, stamp REAL NOT NULL);
CREATE TABLE IF NOT EXISTS daily (
    name TEXT NOT NULL, day TEXT NOT NULL, used INTEGER NOT NULL, PRIMARY KEY (name, day)
);
"""
_BUSY_SECONDS = 10.0
"""A limited request waits this long at most for another worker's count."""
T = TypeVar("T")


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
            self._db = connect(":memory:", durable=False)
            self._db.executescript(_SCHEMA)
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
            db = connect(self._path, busy_seconds=_BUSY_SECONDS, unread=True)
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
    db = connect(path, busy_seconds=_BUSY_SECONDS, unread=True)
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
    with immediate(db):
        return work(db)


def _nothing(db: sqlite3.Connection) -> None:
    del db
