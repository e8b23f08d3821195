"""How every table of the service opens its SQLite file: one ``connect`` with one set of pragmas and
timeouts, one write transaction (``immediate``), and ``Table``, a connection shared by a process's
threads with the lock that keeps their transactions apart."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from index.errors import ConfigError

_HEADER = b"SQLite format 3\x00"
BUSY_SECONDS = 60.0
"""How long a statement waits for another process's write lock before it fails."""


def connect(
    path: Path | str,
    *,
    busy_seconds: float = BUSY_SECONDS,
    read_only: bool = False,
    durable: bool = True,
    unread: bool = False,
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are ``immediate``'s), usable from any thread (callers
    serialise their use), in WAL mode so readers never wait for a writer, with foreign keys enforced.
    ``read_only`` refuses writes (a reader of its own beside a writer); ``durable=False`` skips the fsync
    of each commit (counters that may lose their last second on a power cut: the limits). ``unread``:
    only the timeout is set and the file not read yet (the limits check a file for damage first)."""
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if not unread:
            _refuse_damaged(path)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=busy_seconds)
    db.execute(f"PRAGMA busy_timeout = {int(busy_seconds * 1000)}")
    if unread:
        return db
    if read_only:
        db.execute("PRAGMA query_only = ON")
    else:
        db.execute("PRAGMA journal_mode = WAL")
    if not durable:
        db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA foreign_keys = ON")
    return db


def _refuse_damaged(path: Path) -> None:
    """A file that is not SQLite's stops here: opened in WAL mode beside another process's ``-wal``,
    SQLite would read the pages that WAL holds and never look at the damaged file's own header."""
    try:
        with path.open("rb") as file:
            header = file.read(len(_HEADER))
    except FileNotFoundError:
        return
    if header and header != _HEADER:
        raise sqlite3.DatabaseError("file is not a database")


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (the write lock now, so two processes' read-then-write cannot interleave),
    committed when the block ends, rolled back when it raises (unless SQLite already rolled it back, as it
    does on meeting a damaged file)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class Table:
    """One store's connection to ``path`` with its schema created, shared by the process's threads."""

    def __init__(self, path: Path, what: str, schema: str = "") -> None:
        """``what`` names the tables in errors ("the watch tables cannot be opened")."""
        try:
            self.db = connect(path)
            if schema:
                self.db.executescript(schema)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"the {what} cannot be opened ({exc})") from exc
        self.lock = threading.Lock()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            yield self.db

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, this process's other threads held off meanwhile."""
        with self.lock, immediate(self.db):
            yield self.db

    def close(self) -> None:
        with self.lock:
            self.db.close()
