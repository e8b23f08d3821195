"""Following the index's commits: a daemon thread that catches up with writes made elsewhere (another
process on this index, another driver of a cluster) so no question ever waits for it, and the listeners
told of every publish in this process (the watches' matcher is woken by one)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("index.store")


def start_follower(
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

    follower = threading.Thread(target=loop, name=f"{what}-follow", daemon=True)
    follower.start()
    return follower


class Listeners:
    """The callbacks told of each publish, with the generation published; one that fails is logged and
    the others are told still."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[int], object]] = []
        self._lock = threading.Lock()

    def add(self, callback: Callable[[int], object]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def tell(self, generation: int) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(generation)
            except Exception:
                log.exception("a listener of the index's publish failed")
