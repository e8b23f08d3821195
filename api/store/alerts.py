"""The alerts of standing questions and the matcher's cursor (``watch_alerts``, ``watch_state``): the
matcher (api/work/matching.py) checks the chunks committed after the cursor, and advances the cursor and
stores its alerts in one transaction, only when the cursor is still where it started, so two processes
checking at once store each alert once. An alert for a watch with a webhook gets its row in the outbox
(api/store/outbox.py) in that same transaction."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from api.store.records import Alert, Found
from api.store.watches import STOPPED, bump, get_state, now, set_state, watch_table


class Alerts:
    """The alerts and the cursor; safe for several threads and processes."""

    def __init__(self, path: Path) -> None:
        self._table = watch_table(path)
        self._db, self._lock, self._writing = self._table.db, self._table.lock, self._table.writing

    def close(self) -> None:
        self._table.close()

    def cursor(self) -> int | None:
        """The largest chunk id checked so far; None before the first check."""
        with self._lock:
            return get_state(self._db, "cursor")

    def restart(self, top: int) -> None:
        """News begins after chunk ``top`` for the cursor and every watch (an index rebuilt from nothing
        numbers its chunks from 1 again: `rag watch check --from-now`)."""
        with self._writing():
            set_state(self._db, "cursor", top)
            self._db.execute("UPDATE watches SET after_chunk = ?", (top,))
            bump(self._db, "version")

    def advance(self, start: int | None, end: int, found: Sequence[Found]) -> list[Alert] | None:
        """Store ``found`` (one alert per watch and story; others are dropped) and move the cursor from
        ``start`` to ``end``, in one transaction; None when another process moved the cursor first
        (what it found was stored by it)."""
        stored: list[Alert] = []
        stamp = now()
        with self._writing():
            if get_state(self._db, "cursor") != start:
                return None
            set_state(self._db, "cursor", end)
            for item in found:
                row = self._db.execute(
                    f"SELECT alerts, webhook FROM watches w WHERE id = ? AND NOT {STOPPED}", (item.watch_id,)
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
                body = alert_body(alert_id, item, seq, stamp)
                self._db.execute(
                    "INSERT INTO watch_alerts VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (alert_id, item.watch_id, seq, item.story, item.article_id, stamp, json.dumps(body)),
                )
                self._db.execute("UPDATE watches SET alerts = ? WHERE id = ?", (seq, item.watch_id))
                if row[1]:
                    self._db.execute(
                        "INSERT INTO watch_outbox (alert_id, watch_id, next_at) VALUES (?, ?, ?)",
                        (alert_id, item.watch_id, time.time()),
                    )
                stored.append(Alert(alert_id, item.watch_id, seq, item.story, item.article_id, stamp, body))
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
        return [alert_of_row(r) for r in rows]


def alert_body(alert_id: str, found: Found, seq: int, stamp: str) -> dict[str, Any]:
    """What every channel sends of an alert: its numbers, and the answer as ``/ask`` gives it."""
    return {
        "id": alert_id,
        "watch_id": found.watch_id,
        "seq": seq,
        "created_at": stamp,
        "article_id": found.article_id,
        "confidence": round(found.confidence, 4),
        **found.answer,
    }


def alert_of_row(r: Sequence[Any]) -> Alert:
    """An alert from: id, watch_id, seq, story, article_id, created_at, body (JSON)."""
    return Alert(str(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5]), json.loads(str(r[6])))
