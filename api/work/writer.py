"""Which process of a data folder does the background writing: ingest jobs, feed polls, watch matching and
webhook delivery. Every `rag serve` process (each worker of `--workers N`) answers questions and takes
writes sent to it; only the one holding an exclusive lock on ``writer.lock`` runs the background work.
The kernel drops the lock when that process ends, however it ends (kill -9 included), and another takes
it over within ``retry_seconds``.

A file lock rather than a table row: a row would need a lease that outlives a dead holder by a timeout,
while the kernel knows at once."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("api.work.writer")
LOCK_NAME = "writer.lock"
DEFAULT_RETRY_SECONDS = 0.5


class WriterLock:
    """Calls ``become`` once, in the process that holds the lock, as soon as it holds it."""

    def __init__(
        self, folder: Path, become: Callable[[], None], retry_seconds: float = DEFAULT_RETRY_SECONDS
    ) -> None:
        self._path = folder / LOCK_NAME
        self._become = become
        self._retry = retry_seconds
        self._fd: int | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def start(self) -> None:
        """Take the lock now if it is free; otherwise wait for it in a thread."""
        if not self._try():
            self._thread = threading.Thread(target=self._wait, name="writer-lock", daemon=True)
            self._thread.start()

    def stop_waiting(self) -> None:
        """Never take the lock from now on (a process that is stopping)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def close(self) -> None:
        """Stop waiting, and let the lock go."""
        self.stop_waiting()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # closing the descriptor releases the lock
                self._fd = None

    def _wait(self) -> None:
        while not self._stop.wait(self._retry):
            try:
                if self._try():
                    return
            except Exception:
                log.exception("taking over the background writes failed; retrying")

    def _try(self) -> bool:
        with self._lock:
            if self._stop.is_set():
                return False
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._fd = fd
        log.info("this process (pid %d) runs the background writes", os.getpid())
        self._become()
        return True
