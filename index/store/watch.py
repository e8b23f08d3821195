"""Catching up with writes made elsewhere (another process on this index, another driver of a cluster):
a daemon thread that asks the index to refresh itself, so no question ever waits for it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("index.store")


def start_watcher(
    refresh: Callable[[], object], interval: float, stop: threading.Event, what: str
) -> threading.Thread:
    """A daemon thread calling ``refresh`` every ``interval`` seconds until ``stop`` is set; a failure
    is logged and retried at the next tick."""

    def loop() -> None:
        while not stop.wait(interval):
            try:
                refresh()
            except Exception:
                log.exception("picking up the %s's latest writes failed; retrying", what)

    watcher = threading.Thread(target=loop, name=f"{what}-watch", daemon=True)
    watcher.start()
    return watcher
