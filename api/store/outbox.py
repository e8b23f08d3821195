"""The outbox of webhook deliveries (``watch_outbox``): one row an alert of a watch with a webhook,
written with the alert (api/store/alerts.py), claimed with a lease by the process delivering it
(api/work/webhooks.py), so nothing is sent twice at once and a crash loses nothing."""

from __future__ import annotations

from pathlib import Path

from api.store.records import Delivery
from api.store.watches import DELIVERY_LEASE_SECONDS, STOPPED, now, watch_table


class Outbox:
    """The webhook deliveries due, taken, done and given up; safe for several threads and processes."""

    def __init__(self, path: Path) -> None:
        self._table = watch_table(path)
        self._db, self._lock, self._writing = self._table.db, self._table.lock, self._table.writing

    def close(self) -> None:
        self._table.close()

    def pending(self, now: float) -> list[tuple[str, str, str | None]]:
        """The delivery each watch has due by ``now`` (its oldest), soonest first, as (alert id, webhook
        address, owner); one row a watch, so a receiver with a long queue never hides the others."""
        with self._lock:
            # SQLite's min() picks the row the bare columns come from.
            rows = self._db.execute(
                "SELECT o.alert_id, w.webhook, w.owner, min(o.next_at) AS at FROM watch_outbox o "
                "JOIN watches w ON w.id = o.watch_id "
                f"WHERE o.delivered_at IS NULL AND o.given_up = 0 AND o.next_at <= ? AND NOT {STOPPED} "
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
                f"AND w.webhook IS NOT NULL AND NOT {STOPPED}",
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
                f"WHERE o.delivered_at IS NULL AND o.given_up = 0 AND NOT {STOPPED}"
            ).fetchone()
        return None if at is None else float(at)

    def delivered(self, alert_id: str, watch_id: str) -> None:
        with self._writing():
            done = self._db.execute(
                "UPDATE watch_outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL, "
                "given_up = 0 WHERE alert_id = ? AND delivered_at IS NULL",
                (now(), alert_id),
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
