"""Standing questions ("watches") and their alerts, kept in the service's own SQLite file
(``service.sqlite``, beside the index) with the keys and the feeds.

A watch is a question someone wants answered when the news answers it: its owner (the key that made
it; none while the service runs without keys), the outlets it reads (any when empty), the reader's
confidence it needs, and optionally a webhook. Its Atom feed is read with a secret token in the address;
only the token's SHA-256 is kept, so the feed can be revoked or given a new address.

An alert is one cited answer (as ``/ask`` gives it) from one story, numbered per watch. A watch is told
of a story once: ``UNIQUE (watch_id, story)`` turns a copy or a re-ingest of an alerted story into
nothing. An alert for a watch with a webhook gets a row in the outbox in the same transaction, so an
alert stored is an alert delivered, after a crash too (api/state/alerts.py delivers it).

A watch lives as long as the key that made it: once that key is revoked (``KeyRing.revoke``, unless
with ``keep_watches``) it stops matching, delivering and serving its feed, read from the key table in the
same file at every use rather than copied here, so no process can miss a revocation.

The matcher (api/state/matching.py) checks the chunks committed after a cursor kept here; it advances
the cursor and stores its alerts in one transaction, and only when the cursor is still where it started,
so two processes checking at once store each alert once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from api.errors import WatchLimitError, WatchNotFoundError, WatchRefusedError
from api.state.alert_records import Alert, Delivery, Found, Made, Watch
from api.state.keys import STOPPED_OWNER, create_key_tables
from api.state.sqlite import immediate
from index.clean import plain_line, remove_controls
from index.errors import ConfigError
from rag.config import DEFAULT_MAX_QUESTION_CHARS as MAX_QUESTION_CHARS

DEFAULT_MIN_CONFIDENCE = 0.2
"""The reader's probability a watch needs by default (chosen on the replay's tune half:
benchmarks/watches.py)."""
MAX_WATCH_SOURCES = 20
DELIVERY_LEASE_SECONDS = 120.0
"""How long a process that took a delivery has it to itself (longer than a fetch's deadline)."""
FEED_TOKEN_PREFIX = "wft_"  # noqa: S105 - a marker for feed tokens, not a secret
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks secret prefix, not a secret
_SCHEMA = """
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
_STOPPED = STOPPED_OWNER.format(owner="w.owner")
_WATCH_COLUMNS = (
    "id, owner, question, sources, webhook, min_confidence, after_chunk, created_at, failing, alerts, "
    f"feed_token_hash IS NOT NULL, NOT {_STOPPED}"
)


def hash_secret(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class WatchStore:
    """The watch, alert and outbox tables of ``service.sqlite``; safe for several threads and processes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            create_key_tables(self._db)  # whose revocation stops a watch
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"the watch tables cannot be opened ({exc})") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- watches ------------------------------------------------------------------------------------

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
        question = " ".join(remove_controls(question).split())
        sources = [name for name in (plain_line(s) for s in sources) if name]
        if not question or len(question) > MAX_QUESTION_CHARS:
            raise WatchRefusedError(f"a watch's question is 1 to {MAX_QUESTION_CHARS} characters")
        if not 0.0 < min_confidence <= 1.0:
            raise WatchRefusedError("min_confidence is a probability above 0 and at most 1")
        if len(sources) > MAX_WATCH_SOURCES:
            raise WatchRefusedError(f"a watch reads at most {MAX_WATCH_SOURCES} outlets")
        watch_id = "w_" + uuid.uuid4().hex[:16]
        token = FEED_TOKEN_PREFIX + secrets.token_urlsafe(24)
        secret = WEBHOOK_SECRET_PREFIX + _b64(secrets.token_bytes(24)) if webhook else None
        with self._writing():
            # Counted inside the write transaction: creations racing in threads or processes see each
            # other's rows, so none passes the cap.
            (kept,) = self._db.execute("SELECT count(*) FROM watches WHERE owner IS ?", (owner,)).fetchone()
            if limit is not None and kept >= limit:
                raise WatchLimitError(
                    f"{owner or 'this service'} has {limit} watches, the most a key may keep"
                )
            after = self._state("cursor")
            self._db.execute(
                "INSERT INTO watches (id, owner, question, sources, webhook, webhook_secret, min_confidence,"
                " feed_token_hash, after_chunk, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    watch_id,
                    owner,
                    question,
                    json.dumps(sorted(set(sources))),
                    webhook,
                    secret,
                    float(min_confidence),
                    hash_secret(token),
                    -1 if after is None else after,
                    _now(),
                ),
            )
            self._bump("version")
        return Made(self.get(watch_id), token, secret)

    def watches(self, owner: str | None = None, everyone: bool = False) -> list[Watch]:
        """The watches of ``owner`` (every watch when ``everyone``), oldest first."""
        with self._lock:
            if everyone:
                rows = self._db.execute(f"SELECT {_WATCH_COLUMNS} FROM watches w ORDER BY rowid")
            else:
                rows = self._db.execute(
                    f"SELECT {_WATCH_COLUMNS} FROM watches w WHERE owner IS ? ORDER BY rowid",
                    (owner,),
                )
            return [_watch(row) for row in rows.fetchall()]

    def get(self, watch_id: str, owner: str | None = None, everyone: bool = True) -> Watch:
        """One watch; WatchNotFoundError when there is none, or when it is not ``owner``'s."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_WATCH_COLUMNS} FROM watches w WHERE id = ?", (watch_id,)
            ).fetchone()
        if row is None or (not everyone and row[1] != owner):
            raise WatchNotFoundError(f"no watch {watch_id!r}")
        return _watch(row)

    def remove(self, watch_id: str, owner: str | None = None, everyone: bool = True) -> Watch:
        """Remove a watch with its alerts and undelivered webhooks."""
        watch = self.get(watch_id, owner, everyone)
        with self._writing():
            self._db.execute("DELETE FROM watch_outbox WHERE watch_id = ?", (watch_id,))
            self._db.execute("DELETE FROM watch_alerts WHERE watch_id = ?", (watch_id,))
            self._db.execute("DELETE FROM watches WHERE id = ?", (watch_id,))
            self._bump("version")
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
                f"SELECT feed_token_hash FROM watches w WHERE id = ? AND NOT {_STOPPED}", (watch_id,)
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
            return self._state("version") or 0, int(revoked)

    def questions(self) -> list[tuple[str, str, tuple[str, ...], float, int, bytes | None]]:
        """Every active watch as the matcher needs it: id, question, sources, min_confidence, after_chunk,
        vector."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, question, sources, min_confidence, after_chunk, vector FROM watches w "
                f"WHERE NOT {_STOPPED} ORDER BY id"
            ).fetchall()
        return [(str(r[0]), str(r[1]), tuple(json.loads(r[2])), float(r[3]), int(r[4]), r[5]) for r in rows]

    def save_vectors(self, vectors: dict[str, npt.NDArray[np.float32]]) -> None:
        """Keep the question vectors the matcher computed, so the next start need not embed them again."""
        if not vectors:
            return
        with self._writing():
            self._db.executemany(
                "UPDATE watches SET vector = ? WHERE id = ?",
                [(np.asarray(v, dtype=np.float32).tobytes(), watch_id) for watch_id, v in vectors.items()],
            )

    # --- the matcher's cursor and its alerts ---------------------------------------------------------

    def cursor(self) -> int | None:
        """The largest chunk id checked so far; None before the first check."""
        with self._lock:
            return self._state("cursor")

    def restart(self, top: int) -> None:
        """News begins after chunk ``top`` for the cursor and every watch (an index rebuilt from nothing
        numbers its chunks from 1 again: `rag watch check --from-now`)."""
        with self._writing():
            self._set("cursor", top)
            self._db.execute("UPDATE watches SET after_chunk = ?", (top,))
            self._bump("version")

    def advance(self, start: int | None, end: int, found: Sequence[Found]) -> list[Alert] | None:
        """Store ``found`` (one alert per watch and story; others are dropped) and move the cursor from
        ``start`` to ``end``, in one transaction; None when another process moved the cursor first
        (what it found was stored by it)."""
        stored: list[Alert] = []
        now = _now()
        with self._writing():
            if self._state("cursor") != start:
                return None
            self._set("cursor", end)
            for item in found:
                row = self._db.execute(
                    f"SELECT alerts, webhook FROM watches w WHERE id = ? AND NOT {_STOPPED}", (item.watch_id,)
                ).fetchone()
                if row is None:  # removed meanwhile, or its key revoked
                    continue
                seen = self._db.execute(
                    "SELECT 1 FROM watch_alerts WHERE watch_id = ? AND story = ?", (item.watch_id, item.story)
                ).fetchone()
                if seen:
                    continue
                seq = int(row[0]) + 1
                alert_id = "al_" + uuid.uuid4().hex[:20]
                body = {
                    "id": alert_id,
                    "watch_id": item.watch_id,
                    "seq": seq,
                    "created_at": now,
                    "article_id": item.article_id,
                    "confidence": round(item.confidence, 4),
                    **item.answer,
                }
                self._db.execute(
                    "INSERT INTO watch_alerts VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (alert_id, item.watch_id, seq, item.story, item.article_id, now, json.dumps(body)),
                )
                self._db.execute("UPDATE watches SET alerts = ? WHERE id = ?", (seq, item.watch_id))
                if row[1]:
                    self._db.execute(
                        "INSERT INTO watch_outbox (alert_id, watch_id, next_at) VALUES (?, ?, ?)",
                        (alert_id, item.watch_id, time.time()),
                    )
                stored.append(Alert(alert_id, item.watch_id, seq, item.story, item.article_id, now, body))
        return stored

    def told(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (watch, story) pairs already have their alert."""
        with self._lock:
            return {
                (watch_id, story)
                for watch_id, story in set(pairs)
                if self._db.execute(
                    "SELECT 1 FROM watch_alerts WHERE watch_id = ? AND story = ?", (watch_id, story)
                ).fetchone()
            }

    def alerts(
        self,
        watch_id: str,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 20,
        oldest_first: bool = False,
    ) -> list[Alert]:
        """The watch's alerts numbered above ``after_seq`` (and below ``before_seq``), newest first (or
        the oldest ``limit`` of them, oldest first: what a stream resuming after ``after_seq`` sends)."""
        order = "ASC" if oldest_first else "DESC"
        with self._lock:
            rows = self._db.execute(
                "SELECT id, watch_id, seq, story, article_id, created_at, body FROM watch_alerts "
                f"WHERE watch_id = ? AND seq > ? AND seq < ? ORDER BY seq {order} LIMIT ?",
                (watch_id, after_seq, before_seq if before_seq is not None else 2**62, limit),
            ).fetchall()
        return [Alert(r[0], r[1], int(r[2]), r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    # --- the outbox ---------------------------------------------------------------------------------

    def pending(self, now: float) -> list[tuple[str, str, str | None]]:
        """The delivery each watch has due by ``now`` (its oldest), soonest first, as (alert id, webhook
        address, owner); one row a watch, so a receiver with a long queue never hides the others."""
        with self._lock:
            # SQLite's min() picks the row the bare columns come from.
            rows = self._db.execute(
                "SELECT o.alert_id, w.webhook, w.owner, min(o.next_at) AS at FROM watch_outbox o "
                "JOIN watches w ON w.id = o.watch_id "
                f"WHERE o.delivered_at IS NULL AND o.given_up = 0 AND o.next_at <= ? AND NOT {_STOPPED} "
                "AND w.webhook IS NOT NULL GROUP BY o.watch_id ORDER BY at",
                (now,),
            ).fetchall()
        return [(str(r[0]), str(r[1]), None if r[2] is None else str(r[2])) for r in rows]

    def claim(self, alert_id: str, now: float, lease: float = DELIVERY_LEASE_SECONDS) -> Delivery | None:
        """Take one due delivery for ``lease`` seconds (another process delivering at the same time, such
        as `rag watch check` beside `rag serve`, skips it meanwhile); None when it is no longer due."""
        with self._writing():
            row = self._db.execute(
                "SELECT o.alert_id, o.watch_id, o.attempts, w.webhook, w.webhook_secret, a.body "
                "FROM watch_outbox o JOIN watches w ON w.id = o.watch_id "
                "JOIN watch_alerts a ON a.id = o.alert_id "
                "WHERE o.alert_id = ? AND o.delivered_at IS NULL AND o.given_up = 0 AND o.next_at <= ? "
                f"AND w.webhook IS NOT NULL AND NOT {_STOPPED}",
                (alert_id, now),
            ).fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE watch_outbox SET next_at = ? WHERE alert_id = ?", (now + lease, alert_id)
            )
        return Delivery(row[0], row[1], int(row[2]), str(row[3]), str(row[4]), str(row[5]))

    def next_due(self) -> float | None:
        """When the next delivery is due (a time.time() value), or None when none waits."""
        with self._lock:
            (at,) = self._db.execute(
                "SELECT min(o.next_at) FROM watch_outbox o JOIN watches w ON w.id = o.watch_id "
                f"WHERE o.delivered_at IS NULL AND o.given_up = 0 AND NOT {_STOPPED}"
            ).fetchone()
        return None if at is None else float(at)

    def delivered(self, alert_id: str, watch_id: str) -> None:
        with self._writing():
            done = self._db.execute(
                "UPDATE watch_outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL, "
                "given_up = 0 WHERE alert_id = ? AND delivered_at IS NULL",
                (_now(), alert_id),
            ).rowcount
            if done:
                self._db.execute("UPDATE watches SET failing = NULL WHERE id = ?", (watch_id,))

    def failed(self, delivery: Delivery, error: str, retry_at: float | None) -> None:
        """A try that failed: tried again at ``retry_at``, or given up (None), the watch marked failing."""
        with self._writing():
            changed = self._db.execute(
                "UPDATE watch_outbox SET attempts = attempts + 1, last_error = ?, next_at = ?, given_up = ? "
                "WHERE alert_id = ? AND delivered_at IS NULL",
                (error[:500], retry_at or 0.0, int(retry_at is None), delivery.alert_id),
            ).rowcount
            if changed and retry_at is None:
                self._db.execute(
                    "UPDATE watches SET failing = ? WHERE id = ?",
                    (
                        f"webhook gave up after {delivery.attempts + 1} tries: {error[:300]}",
                        delivery.watch_id,
                    ),
                )

    def deliveries(self, watch_id: str) -> dict[str, int]:
        """How the watch's webhook deliveries stand: delivered, pending, given up."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(delivered_at), sum(delivered_at IS NULL AND given_up = 0), sum(given_up) "
                "FROM watch_outbox WHERE watch_id = ?",
                (watch_id,),
            ).fetchone()
        return {"delivered": int(row[0] or 0), "pending": int(row[1] or 0), "given_up": int(row[2] or 0)}

    # --- plumbing -----------------------------------------------------------------------------------

    def _state(self, name: str) -> int | None:
        row = self._db.execute("SELECT value FROM watch_state WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def _set(self, name: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO watch_state VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def _bump(self, name: str) -> None:
        self._set(name, (self._state(name) or 0) + 1)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock, immediate(self._db):
            yield


def _watch(row: Sequence[Any]) -> Watch:
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
