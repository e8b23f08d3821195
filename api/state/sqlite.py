"""One write transaction on the service's SQLite file, as keys, feeds and watches take it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (the write lock now, so two processes' read-then-write cannot interleave),
    committed when the block ends, rolled back when it raises. ``db`` is in autocommit mode
    (``isolation_level=None``)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
