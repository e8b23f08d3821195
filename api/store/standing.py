"""The three tables of standing questions, opened together on one file: the watches, their alerts with
the matcher's cursor, and the outbox of webhook deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from api.store.alerts import Alerts
from api.store.outbox import Outbox
from api.store.protocols import AlertStore, DeliveryStore, WatchStore
from api.store.watches import Watches


@dataclass(frozen=True)
class WatchTables:
    """Typed to the seams (api/store/protocols.py), so the matcher, the deliveries and the routes see no
    backend."""

    watches: WatchStore
    alerts: AlertStore
    outbox: DeliveryStore

    @classmethod
    def open(cls, path: Path) -> WatchTables:
        return cls(Watches(path), Alerts(path), Outbox(path))

    def close(self) -> None:
        for table in (self.watches, self.alerts, self.outbox):
            table.close()
