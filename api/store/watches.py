"""Standing questions ("watches") and their alerts, kept in the service's own SQLite file
(``service.sqlite``, beside the index) with the keys and the feeds.

A watch is a question someone wants answered when the news answers it: its owner (the key that made
it; none while the service runs without keys), the outlets it reads (any when empty), the reader's
confidence it needs, and optionally a webhook. Its Atom feed is read with a secret token in the address;
only the token's SHA-256 is kept, so the feed can be revoked or given a new address.

An alert is one cited answer (as ``/ask`` gives it) from one story, numbered per watch. A watch is told
of a story once: ``UNIQUE (watch_id, story)`` turns a copy or a re-ingest of an alerted story into
nothing. An alert for a watch with a webhook gets a row in the outbox in the same transaction, so an
alert stored is an alert delivered, after a crash too (api/work/alerts.py delivers it).

A watch lives as long as the key that made it: once that key is revoked (``KeyRing.revoke``, unless
with ``keep_watches``) it stops matching, delivering and serving its feed, read from the key table in the
same file at every use rather than copied here, so no process can miss a revocation.

The matcher (rag/standing.py scores, api/work/matching.py stores) checks the chunks committed after a
cursor kept here (api/store/alerts.py); it advances the cursor and stores its alerts in one transaction,
and only when the cursor is still where it started, so two processes checking at once store each alert
once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from api.errors import WatchLimitError, WatchNotFoundError, WatchRefusedError
from api.store.keys import STOPPED_OWNER, create_key_tables
from api.store.records import Made, Watch
from api.store.sqlite import Table
from index.clean import plain_line, remove_controls
from rag.config import DEFAULT_MAX_QUESTION_CHARS as MAX_QUESTION_CHARS
from rag.standing import StandingQuestion

DEFAULT_MIN_CONFIDENCE = 0.2
"""The reader's probability a watch needs by default (chosen on the replay's tune half:
benchmarks/watches.py)."""
MAX_WATCH_SOURCES = 20
DELIVERY_LEASE_SECONDS = 120.0
"""How long a process that took a delivery has it to itself (longer than a fetch's deadline)."""
FEED_TOKEN_PREFIX = "wft_"  # noqa: S105 - a marker for feed tokens, not a secret
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks secret prefix, not a secret
SCHEMA = """
CREATE TABLE IF NOT EXISTS watches (
    id TEXT PRIMARY KEY, owner TEXT, question TEXT NOT NULL, sources TEXT NOT NULL, webhook TEXT,
    webhook_secret TEXT, min_confidence REAL NOT NULL, feed_token_hash TEXT, vector BLOB,
    after_chunk INTEGER NOT NULL, created_at TEXT NOT NULL, failing TEXT, alerts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS watch_alerts (
    id TEXT PRIMARY KEY, watch_id TEXT NOT NULL, seq INTEGER NOT NULL, story TEXT NOT NULL,
    article_id TEXT NOT NULL, created_at TEXT NOT NULL, body TEXT NOT NULL,
    UNIQUE (watch_id, story), UNIQUE (watch_id, seq)
);
CREATE TABLE IF NOT EXISTS watch_outbox (
    alert_id TEXT PRIMARY KEY, watch_id TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, last_error TEXT, delivered_at TEXT, given_up INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS watch_outbox_due ON watch_outbox (next_at) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS watch_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
STOPPED = STOPPED_OWNER.format(owner="w.owner")
WATCH_COLUMNS = (
    "id, owner, question, sources, webhook, min_confidence, after_chunk, created_at, failing, alerts, "
    f"feed_token_hash IS NOT NULL, NOT {STOPPED}"
)


def hash_secret(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def get_state(db: sqlite3.Connection, name: str) -> int | None:
    """A counter of ``watch_state``: the matcher's ``cursor``, the watches' ``version``."""
    row = db.execute("SELECT value FROM watch_state WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def set_state(db: sqlite3.Connection, name: str, value: int) -> None:
    db.execute(
        "INSERT INTO watch_state VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def bump(db: sqlite3.Connection, name: str) -> None:
    set_state(db, name, (get_state(db, name) or 0) + 1)


def checked_watch(question: str, sources: Sequence[str], min_confidence: float) -> tuple[str, list[str]]:
    """A new watch's question and outlets as every backend keeps them (plain one-line text: control
    characters and what XML cannot carry removed, since they reach the Atom feed); WatchRefusedError
    with the reason."""
    question = " ".join(remove_controls(question).split())
    kept = [name for name in (plain_line(s) for s in sources) if name]
    if not question or len(question) > MAX_QUESTION_CHARS:
        raise WatchRefusedError(f"a watch's question is 1 to {MAX_QUESTION_CHARS} characters")
    if not 0.0 < min_confidence <= 1.0:
        raise WatchRefusedError("min_confidence is a probability above 0 and at most 1")
    if len(kept) > MAX_WATCH_SOURCES:
        raise WatchRefusedError(f"a watch reads at most {MAX_WATCH_SOURCES} outlets")
    return question, sorted(set(kept))


def new_watch_secrets(webhook: str | None) -> tuple[str, str, str | None]:
    """A new watch's id, feed token and webhook secret (when it has a webhook)."""
    token = FEED_TOKEN_PREFIX + secrets.token_urlsafe(24)
    secret = WEBHOOK_SECRET_PREFIX + _b64(secrets.token_bytes(24)) if webhook else None
    return "w_" + uuid.uuid4().hex[:16], token, secret


def watch_table(path: Path) -> Table:
    """The watch, alert and outbox tables of ``path``, with the key table beside them (whose revocation
    stops a watch): what the three stores of standing questions each open."""
    table = Table(path, "watch tables", SCHEMA)
    create_key_tables(table.db)
    return table


def standing_of_row(r: Sequence[Any]) -> StandingQuestion:
    """A watch as a standing question, from: id, question, sources, min_confidence, after_chunk, vector."""
    return StandingQuestion(
        id=str(r[0]),
        text=str(r[1]),
        sources=frozenset(s.lower() for s in json.loads(r[2])),
        min_confidence=float(r[3]),
        after=int(r[4]),
        vector=None if r[5] is None else np.frombuffer(r[5], dtype=np.float32),
    )


class Watches:
    """The watch table: standing questions, their owners, feeds and webhooks; safe for several threads
    and processes."""

    def __init__(self, path: Path) -> None:
        self._table = watch_table(path)
        self._db, self._lock, self._writing = self._table.db, self._table.lock, self._table.writing

    def close(self) -> None:
        self._table.close()

    def add(
        self,
        question: str,
        owner: str | None,
        sources: Sequence[str] = (),
        webhook: str | None = None,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        limit: int | None = None,
    ) -> Made:
        """A new watch, news to it from the matcher's cursor on; WatchLimitError when ``owner`` has
        ``limit`` already. The question and outlets are kept as plain one-line text (control characters,
        and what XML cannot carry, removed: they reach the Atom feed)."""
        question, sources = checked_watch(question, sources, min_confidence)
        watch_id, token, secret = new_watch_secrets(webhook)
        with self._writing():
            # Counted inside the write transaction: creations racing in threads or processes see each
            # other's rows, so none passes the cap.
            (kept,) = self._db.execute("SELECT count(*) FROM watches WHERE owner IS ?", (owner,)).fetchone()
            if limit is not None and kept >= limit:
                raise WatchLimitError(
                    f"{owner or 'this service'} has {limit} watches, the most a key may keep"
                )
            after = get_state(self._db, "cursor")
            self._db.execute(
                "INSERT INTO watches (id, owner, question, sources, webhook, webhook_secret, min_confidence,"
                " feed_token_hash, after_chunk, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    watch_id,
                    owner,
                    question,
                    json.dumps(sources),
                    webhook,
                    secret,
                    float(min_confidence),
                    hash_secret(token),
                    -1 if after is None else after,
                    now(),
                ),
            )
            bump(self._db, "version")
        return Made(self.get(watch_id), token, secret)

    def watches(self, owner: str | None = None, everyone: bool = False) -> list[Watch]:
        """The watches of ``owner`` (every watch when ``everyone``), oldest first."""
        with self._lock:
            if everyone:
                rows = self._db.execute(f"SELECT {WATCH_COLUMNS} FROM watches w ORDER BY rowid")
            else:
                rows = self._db.execute(
                    f"SELECT {WATCH_COLUMNS} FROM watches w WHERE owner IS ? ORDER BY rowid",
                    (owner,),
                )
            return [watch_of_row(row) for row in rows.fetchall()]

    def get(self, watch_id: str, owner: str | None = None, everyone: bool = True) -> Watch:
        """One watch; WatchNotFoundError when there is none, or when it is not ``owner``'s."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {WATCH_COLUMNS} FROM watches w WHERE id = ?", (watch_id,)
            ).fetchone()
        if row is None or (not everyone and row[1] != owner):
            raise WatchNotFoundError(f"no watch {watch_id!r}")
        return watch_of_row(row)

    def remove(self, watch_id: str, owner: str | None = None, everyone: bool = True) -> Watch:
        """Remove a watch with its alerts and undelivered webhooks."""
        watch = self.get(watch_id, owner, everyone)
        with self._writing():
            self._db.execute("DELETE FROM watch_outbox WHERE watch_id = ?", (watch_id,))
            self._db.execute("DELETE FROM watch_alerts WHERE watch_id = ?", (watch_id,))
            self._db.execute("DELETE FROM watches WHERE id = ?", (watch_id,))
            bump(self._db, "version")
        return watch

    def new_feed_token(self, watch_id: str, owner: str | None = None, everyone: bool = True) -> str:
        """A new feed address for the watch; the old one stops working."""
        self.get(watch_id, owner, everyone)
        token = FEED_TOKEN_PREFIX + secrets.token_urlsafe(24)
        with self._writing():
            self._db.execute(
                "UPDATE watches SET feed_token_hash = ? WHERE id = ?", (hash_secret(token), watch_id)
            )
        return token

    def revoke_feed(self, watch_id: str, owner: str | None = None, everyone: bool = True) -> None:
        """The watch's feed address stops working (until a new one is made)."""
        self.get(watch_id, owner, everyone)
        with self._writing():
            self._db.execute("UPDATE watches SET feed_token_hash = NULL WHERE id = ?", (watch_id,))

    def feed_watch(self, watch_id: str, token: str) -> Watch:
        """The watch whose feed ``token`` opens; WatchNotFoundError otherwise (the same for a wrong token,
        a revoked one and an unknown watch, so the answer tells nothing)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT feed_token_hash FROM watches w WHERE id = ? AND NOT {STOPPED}", (watch_id,)
            ).fetchone()
        stored = row[0] if row else None
        if stored is None or not secrets.compare_digest(str(stored), hash_secret(token)):
            raise WatchNotFoundError(f"no watch feed {watch_id!r} with this token")
        return self.get(watch_id)

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM watches").fetchone()
        return int(n)

    def version(self) -> tuple[int, int]:
        """Changes with every watch added or removed and every key revoked, in any process."""
        with self._lock:
            (revoked,) = self._db.execute(
                "SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL"
            ).fetchone()
            return get_state(self._db, "version") or 0, int(revoked)

    def questions(self) -> list[StandingQuestion]:
        """Every active watch as a standing question (rag/standing.py), its kept vector with it."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, question, sources, min_confidence, after_chunk, vector FROM watches w "
                f"WHERE NOT {STOPPED} ORDER BY id"
            ).fetchall()
        return [standing_of_row(r) for r in rows]

    def save_vectors(self, vectors: dict[str, npt.NDArray[np.float32]]) -> None:
        """Keep the question vectors the matcher computed, so the next start need not embed them again."""
        if not vectors:
            return
        with self._writing():
            self._db.executemany(
                "UPDATE watches SET vector = ? WHERE id = ?",
                [(np.asarray(v, dtype=np.float32).tobytes(), watch_id) for watch_id, v in vectors.items()],
            )


def watch_of_row(row: Sequence[Any]) -> Watch:
    return Watch(
        id=str(row[0]),
        owner=None if row[1] is None else str(row[1]),
        question=str(row[2]),
        sources=tuple(json.loads(row[3])),
        webhook=row[4],
        min_confidence=float(row[5]),
        after_chunk=int(row[6]),
        created_at=str(row[7]),
        failing=row[8],
        alerts=int(row[9]),
        has_feed=bool(row[10]),
        active=bool(row[11]),
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
