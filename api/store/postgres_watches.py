"""The watches, their alerts with the matcher's cursor, and the outbox in PostgreSQL: the backends of
``WatchStore``, ``AlertStore`` and ``DeliveryStore`` (api/store/protocols.py) beside SQLite's
(api/store/watches.py, alerts.py, outbox.py), with the same rules: a watch stops with its owner's key
(read from the key table at every use), one alert per watch and story, the cursor moved by one checker
at a time (its row locked), a delivery leased by one sender."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from psycopg import Connection
from psycopg_pool import ConnectionPool

from api.errors import WatchLimitError, WatchNotFoundError
from api.store.alerts import alert_body, alert_of_row
from api.store.records import Alert, Delivery, Found, Made, Watch
from api.store.watches import (
    DEFAULT_MIN_CONFIDENCE,
    DELIVERY_LEASE_SECONDS,
    FEED_TOKEN_PREFIX,
    checked_watch,
    hash_secret,
    new_watch_secrets,
    now,
    standing_of_row,
    watch_of_row,
)
from rag.standing import StandingQuestion

STOPPED = (
    "EXISTS (SELECT 1 FROM api_keys k WHERE k.name = w.owner AND k.revoked_at IS NOT NULL "
    "AND NOT k.keeps_watches)"
)
"""True when the watch's owner is a key revoked without ``keep_watches``."""
COLUMNS = (
    "id, owner, question, sources, webhook, min_confidence, after_chunk, created_at, failing, alerts, "
    f"feed_token_hash IS NOT NULL, NOT {STOPPED}"
)
_NO_CURSOR = -1
"""The cursor's row before the first check (chunk ids start at 1): a row to lock, meaning none yet."""
_ADDING = 4_200_044
"""The advisory lock id held while a watch is added (the owner's count and the insert as one)."""


def _state(db: Connection[tuple[object, ...]], name: str, lock: bool = False) -> int | None:
    row = db.execute(
        "SELECT value FROM watch_state WHERE name = %s" + (" FOR UPDATE" if lock else ""), (name,)
    ).fetchone()
    return None if row is None else int(str(row[0]))


def _set(db: Connection[tuple[object, ...]], name: str, value: int) -> None:
    db.execute(
        "INSERT INTO watch_state VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def _bump(db: Connection[tuple[object, ...]]) -> None:
    db.execute("UPDATE watch_state SET value = value + 1 WHERE name = 'version'")


class PostgresWatches:
    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def add(
        self,
        question: str,
        owner: str | None,
        sources: Sequence[str] = (),
        webhook: str | None = None,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        limit: int | None = None,
    ) -> Made:
        question, kept = checked_watch(question, sources, min_confidence)
        watch_id, token, secret = new_watch_secrets(webhook)
        with self._pool.connection() as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_ADDING,))
            row = db.execute(
                "SELECT count(*) FROM watches WHERE owner IS NOT DISTINCT FROM %s", (owner,)
            ).fetchone()
            if limit is not None and row is not None and int(row[0]) >= limit:
                raise WatchLimitError(
                    f"{owner or 'this service'} has {limit} watches, the most a key may keep"
                )
            after = _state(db, "cursor")
            db.execute(
                "INSERT INTO watches (id, owner, question, sources, webhook, webhook_secret, min_confidence,"
                " feed_token_hash, after_chunk, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    watch_id,
                    owner,
                    question,
                    json.dumps(kept),
                    webhook,
                    secret,
                    float(min_confidence),
                    hash_secret(token),
                    -1 if after is None else after,
                    now(),
                ),
            )
            _bump(db)
        return Made(self.get(watch_id), token, secret)

    def watches(self, owner: str | None = None, everyone: bool = False) -> list[Watch]:
        with self._pool.connection() as db:
            if everyone:
                rows = db.execute(f"SELECT {COLUMNS} FROM watches w ORDER BY seq").fetchall()
            else:
                rows = db.execute(
                    f"SELECT {COLUMNS} FROM watches w WHERE owner IS NOT DISTINCT FROM %s ORDER BY seq",
                    (owner,),
                ).fetchall()
        return [watch_of_row(row) for row in rows]

    def get(self, watch_id: str, owner: str | None = None, everyone: bool = True) -> Watch:
        with self._pool.connection() as db:
            row = db.execute(f"SELECT {COLUMNS} FROM watches w WHERE id = %s", (watch_id,)).fetchone()
        if row is None or (not everyone and row[1] != owner):
            raise WatchNotFoundError(f"no watch {watch_id!r}")
        return watch_of_row(row)

    def remove(self, watch_id: str, owner: str | None = None, everyone: bool = True) -> Watch:
        watch = self.get(watch_id, owner, everyone)
        with self._pool.connection() as db, db.transaction():
            db.execute("DELETE FROM watch_outbox WHERE watch_id = %s", (watch_id,))
            db.execute("DELETE FROM watch_alerts WHERE watch_id = %s", (watch_id,))
            db.execute("DELETE FROM watches WHERE id = %s", (watch_id,))
            _bump(db)
        return watch

    def new_feed_token(self, watch_id: str, owner: str | None = None, everyone: bool = True) -> str:
        self.get(watch_id, owner, everyone)
        token = FEED_TOKEN_PREFIX + secrets.token_urlsafe(24)
        with self._pool.connection() as db:
            db.execute(
                "UPDATE watches SET feed_token_hash = %s WHERE id = %s", (hash_secret(token), watch_id)
            )
        return token

    def revoke_feed(self, watch_id: str, owner: str | None = None, everyone: bool = True) -> None:
        self.get(watch_id, owner, everyone)
        with self._pool.connection() as db:
            db.execute("UPDATE watches SET feed_token_hash = NULL WHERE id = %s", (watch_id,))

    def feed_watch(self, watch_id: str, token: str) -> Watch:
        with self._pool.connection() as db:
            row = db.execute(
                f"SELECT feed_token_hash FROM watches w WHERE id = %s AND NOT {STOPPED}", (watch_id,)
            ).fetchone()
        stored = row[0] if row else None
        if stored is None or not secrets.compare_digest(str(stored), hash_secret(token)):
            raise WatchNotFoundError(f"no watch feed {watch_id!r} with this token")
        return self.get(watch_id)

    def count(self) -> int:
        with self._pool.connection() as db:
            row = db.execute("SELECT count(*) FROM watches").fetchone()
        return 0 if row is None else int(row[0])

    def version(self) -> tuple[int, int]:
        with self._pool.connection() as db:
            row = db.execute("SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL").fetchone()
            return _state(db, "version") or 0, 0 if row is None else int(row[0])

    def questions(self) -> list[StandingQuestion]:
        with self._pool.connection() as db:
            rows = db.execute(
                "SELECT id, question, sources, min_confidence, after_chunk, vector FROM watches w "
                f"WHERE NOT {STOPPED} ORDER BY id"
            ).fetchall()
        return [standing_of_row(r) for r in rows]

    def save_vectors(self, vectors: dict[str, npt.NDArray[np.float32]]) -> None:
        if not vectors:
            return
        with self._pool.connection() as db, db.transaction(), db.cursor() as cursor:
            cursor.executemany(
                "UPDATE watches SET vector = %s WHERE id = %s",
                [(np.asarray(v, dtype=np.float32).tobytes(), watch_id) for watch_id, v in vectors.items()],
            )

    def close(self) -> None:
        """The pool is the service's, closed with it."""


class PostgresAlerts:
    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def cursor(self) -> int | None:
        with self._pool.connection() as db:
            value = _state(db, "cursor")
        return None if value is None or value == _NO_CURSOR else value

    def restart(self, top: int) -> None:
        with self._pool.connection() as db, db.transaction():
            _set(db, "cursor", top)
            db.execute("UPDATE watches SET after_chunk = %s", (top,))
            _bump(db)

    def advance(self, start: int | None, end: int, found: Sequence[Found]) -> list[Alert] | None:
        stored: list[Alert] = []
        stamp = now()
        with self._pool.connection() as db, db.transaction():
            db.execute(
                "INSERT INTO watch_state VALUES ('cursor', %s) ON CONFLICT (name) DO NOTHING", (_NO_CURSOR,)
            )
            cursor = _state(db, "cursor", lock=True)  # the row locked: one checker at a time
            if (None if cursor == _NO_CURSOR else cursor) != start:
                return None
            _set(db, "cursor", end)
            for item in found:
                row = db.execute(
                    f"SELECT alerts, webhook FROM watches w WHERE id = %s AND NOT {STOPPED} FOR UPDATE",
                    (item.watch_id,),
                ).fetchone()
                if row is None:  # removed meanwhile, or its key revoked
                    continue
                seen = db.execute(
                    "SELECT 1 FROM watch_alerts WHERE watch_id = %s AND story = %s",
                    (item.watch_id, item.story),
                ).fetchone()
                if seen:
                    continue
                seq = int(str(row[0])) + 1
                alert_id = "al_" + uuid.uuid4().hex[:20]
                body = alert_body(alert_id, item, seq, stamp)
                db.execute(
                    "INSERT INTO watch_alerts VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (alert_id, item.watch_id, seq, item.story, item.article_id, stamp, json.dumps(body)),
                )
                db.execute("UPDATE watches SET alerts = %s WHERE id = %s", (seq, item.watch_id))
                if row[1]:
                    db.execute(
                        "INSERT INTO watch_outbox (alert_id, watch_id, next_at) VALUES (%s, %s, %s)",
                        (alert_id, item.watch_id, time.time()),
                    )
                stored.append(Alert(alert_id, item.watch_id, seq, item.story, item.article_id, stamp, body))
        return stored

    def told(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        wanted = sorted(set(pairs))
        if not wanted:
            return set()
        with self._pool.connection() as db:
            rows = db.execute(
                "SELECT watch_id, story FROM watch_alerts WHERE (watch_id, story) IN "
                "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                ([w for w, _ in wanted], [s for _, s in wanted]),
            ).fetchall()
        return {(str(w), str(s)) for w, s in rows}

    def alerts(
        self,
        watch_id: str,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 20,
        oldest_first: bool = False,
    ) -> list[Alert]:
        order = "ASC" if oldest_first else "DESC"
        with self._pool.connection() as db:
            rows = db.execute(
                "SELECT id, watch_id, seq, story, article_id, created_at, body FROM watch_alerts "
                f"WHERE watch_id = %s AND seq > %s AND seq < %s ORDER BY seq {order} LIMIT %s",
                (watch_id, after_seq, before_seq if before_seq is not None else 2**62, limit),
            ).fetchall()
        return [alert_of_row(r) for r in rows]

    def close(self) -> None:
        """The pool is the service's, closed with it."""


class PostgresOutbox:
    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def pending(self, now: float) -> list[tuple[str, str, str | None]]:
        with self._pool.connection() as db:
            rows = db.execute(
                "SELECT alert_id, webhook, owner FROM (SELECT DISTINCT ON (o.watch_id) o.alert_id, "
                "w.webhook, w.owner, o.next_at FROM watch_outbox o JOIN watches w ON w.id = o.watch_id "
                f"WHERE o.delivered_at IS NULL AND NOT o.given_up AND o.next_at <= %s AND NOT {STOPPED} "
                "AND w.webhook IS NOT NULL ORDER BY o.watch_id, o.next_at) due ORDER BY next_at",
                (now,),
            ).fetchall()
        return [(str(r[0]), str(r[1]), None if r[2] is None else str(r[2])) for r in rows]

    def claim(self, alert_id: str, now: float, lease: float = DELIVERY_LEASE_SECONDS) -> Delivery | None:
        with self._pool.connection() as db, db.transaction():
            row = db.execute(
                "SELECT o.alert_id, o.watch_id, o.attempts, w.webhook, w.webhook_secret, a.body "
                "FROM watch_outbox o JOIN watches w ON w.id = o.watch_id "
                "JOIN watch_alerts a ON a.id = o.alert_id "
                "WHERE o.alert_id = %s AND o.delivered_at IS NULL AND NOT o.given_up AND o.next_at <= %s "
                f"AND w.webhook IS NOT NULL AND NOT {STOPPED} FOR UPDATE OF o SKIP LOCKED",
                (alert_id, now),
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE watch_outbox SET next_at = %s WHERE alert_id = %s", (now + lease, alert_id))
        return Delivery(str(row[0]), str(row[1]), int(str(row[2])), str(row[3]), str(row[4]), str(row[5]))

    def next_due(self) -> float | None:
        with self._pool.connection() as db:
            row = db.execute(
                "SELECT min(o.next_at) FROM watch_outbox o JOIN watches w ON w.id = o.watch_id "
                f"WHERE o.delivered_at IS NULL AND NOT o.given_up AND NOT {STOPPED}"
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def delivered(self, alert_id: str, watch_id: str) -> None:
        with self._pool.connection() as db, db.transaction():
            done = db.execute(
                "UPDATE watch_outbox SET delivered_at = %s, attempts = attempts + 1, last_error = NULL, "
                "given_up = FALSE WHERE alert_id = %s AND delivered_at IS NULL",
                (now(), alert_id),
            ).rowcount
            if done:
                db.execute("UPDATE watches SET failing = NULL WHERE id = %s", (watch_id,))

    def failed(self, delivery: Delivery, error: str, retry_at: float | None) -> None:
        with self._pool.connection() as db, db.transaction():
            changed = db.execute(
                "UPDATE watch_outbox SET attempts = attempts + 1, last_error = %s, next_at = %s, "
                "given_up = %s WHERE alert_id = %s AND delivered_at IS NULL",
                (error[:500], retry_at or 0.0, retry_at is None, delivery.alert_id),
            ).rowcount
            if changed and retry_at is None:
                failing = f"webhook gave up after {delivery.attempts + 1} tries: {error[:300]}"
                db.execute("UPDATE watches SET failing = %s WHERE id = %s", (failing, delivery.watch_id))

    def deliveries(self, watch_id: str) -> dict[str, int]:
        with self._pool.connection() as db:
            row = db.execute(
                "SELECT count(delivered_at), count(*) FILTER (WHERE delivered_at IS NULL AND NOT given_up), "
                "count(*) FILTER (WHERE given_up) FROM watch_outbox WHERE watch_id = %s",
                (watch_id,),
            ).fetchone()
        if row is None:
            return {"delivered": 0, "pending": 0, "given_up": 0}
        return {"delivered": int(row[0]), "pending": int(row[1]), "given_up": int(row[2])}

    def close(self) -> None:
        """The pool is the service's, closed with it."""
