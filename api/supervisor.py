"""`rag serve --workers N`: N worker processes answering on one listening socket, and this process, which
starts the workers and keeps N of them running. `rag serve` binds the socket, then becomes this process
(``exec``, same pid) so that it holds nothing of the service's code: no model, no index, no numpy.

- Each worker is `rag serve` again, given the socket's descriptor (``--listen-fd``). It loads the index
  before it accepts a connection, then says so on its pipe (``--ready-fd``); the kernel hands each new
  connection to one worker that is accepting. Every worker answers questions and takes writes; the one
  holding writer.lock also runs the background writes (api/state/writer.py).
- A worker that dies is replaced in its slot; the others answer meanwhile. One that dies before it was
  ever ready is started again after a pause that doubles (up to 30 s); one that fails to load the index
  (exit status 2) stops the server, since its replacement would fail the same way.
- SIGHUP (`rag serve --reload-workers`) restarts the workers one slot at a time: the new worker starts
  and loads; once it is ready the old one is sent SIGTERM, stops accepting and finishes its requests
  (api/cli/serve.py), so no request fails.
- SIGTERM or SIGINT stops every worker the same way; a second SIGINT kills them.
- Metrics: the workers write Prometheus' multi-process files in one folder made here (removed at exit),
  and /metrics on any worker sums them; a dead worker's live gauges are dropped.

Written by hand: uvicorn's own ``--workers`` supervisor restarts a worker by stopping it before starting
its replacement, and starts accepting before the application is loaded; here neither may happen.
"""

from __future__ import annotations

import argparse
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("api.serve")
LOAD_FAILED = 2
"""The exit status of a worker whose index could not be loaded."""
_FIRST_PAUSE = 1.0
_LONGEST_PAUSE = 30.0
_GIVE_UP_AFTER = 5
"""Starts in a row of one slot that die before they are ready, after which the server stops."""
PID_FILE = "serve.pid"


@dataclass(eq=False)
class Worker:
    slot: int
    process: subprocess.Popen[bytes]
    ready_pipe: int
    """The read end of the pipe the worker writes to once ready; end of file when it exits."""
    ready: bool = False
    retiring: bool = False


@dataclass
class Supervisor:
    command: Sequence[str]
    """The worker's command line, to which the descriptors are added."""
    workers: int
    sock: socket.socket
    pid_file: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    current: dict[int, Worker] = field(default_factory=dict)
    starting: dict[int, Worker] = field(default_factory=dict)
    retiring: list[Worker] = field(default_factory=list)
    rolling: deque[int] = field(default_factory=deque)
    pauses: dict[int, float] = field(default_factory=dict)
    """Slot -> when its next start may be tried (after a worker died before it was ready)."""
    failures: dict[int, int] = field(default_factory=dict)
    stopping: bool = False
    status: int = 0

    def run(self) -> int:
        metrics = Path(tempfile.mkdtemp(prefix="rag-metrics-"))
        self.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        os.set_blocking(wake_read, False)
        # The parent's end: workers see end of file on it when this process dies, however it dies.
        self._parent_read, self._parent_write = os.pipe()
        self._selector = selectors.DefaultSelector()
        self._selector.register(wake_read, selectors.EVENT_READ, None)
        previous = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        handled = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
        saved = {sig: signal.signal(sig, lambda *_: None) for sig in handled}
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{os.getpid()}\n")
        log.info("serving on %s with %d workers (pid %d)", _address(self.sock), self.workers, os.getpid())
        try:
            for slot in range(1, self.workers + 1):
                self._start(slot)
            self._loop(wake_read, metrics)
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous)
            for fd in (wake_read, wake_write, self._parent_read, self._parent_write):
                os.close(fd)
            self._selector.close()
            if self.pid_file.exists() and self.pid_file.read_text().strip() == str(os.getpid()):
                self.pid_file.unlink()
            shutil.rmtree(metrics, ignore_errors=True)
        return self.status

    def _loop(self, wake_read: int, metrics: Path) -> None:
        while self.current or self.starting or self.retiring or not self.stopping:
            due = list(self.pauses.values())
            timeout = max(min(due) - time.monotonic(), 0.0) if due else None
            for selected, _ in self._selector.select(timeout):
                worker: Worker | None = selected.data
                if worker is None:
                    self._signals(os.read(wake_read, 64))
                else:
                    self._heard(worker, metrics)
            now = time.monotonic()
            for slot, at in list(self.pauses.items()):
                if at <= now and not self.stopping:
                    del self.pauses[slot]
                    self._start(slot)

    def _signals(self, received: bytes) -> None:
        for number in received:
            if number == signal.SIGHUP and not self.stopping:
                log.info("restarting the workers one at a time")
                slots = sorted({*self.current, *self.starting})  # one still loading may hold old code
                self.rolling.extend(s for s in slots if s not in self.rolling)
                self._roll()
            elif number in (signal.SIGTERM, signal.SIGINT):
                if self.stopping and number == signal.SIGINT:
                    self._signal_all(signal.SIGKILL)
                    continue
                self.stopping = True
                self.rolling.clear()
                self.pauses.clear()
                log.info("stopping: the workers finish their requests")
                self._signal_all(signal.SIGTERM)

    def _heard(self, worker: Worker, metrics: Path) -> None:
        try:
            said = os.read(worker.ready_pipe, 16)
        except OSError:
            said = b""
        if said:
            self._ready(worker)
            return
        self._selector.unregister(worker.ready_pipe)
        os.close(worker.ready_pipe)
        code = worker.process.wait()
        _mark_dead(worker.process.pid, metrics)
        if worker.retiring:
            self.retiring.remove(worker)
            log.info("worker %d (pid %d) finished", worker.slot, worker.process.pid)
            return
        if self.starting.get(worker.slot) is worker:
            del self.starting[worker.slot]
        if self.current.get(worker.slot) is worker:
            del self.current[worker.slot]
        if self.stopping:
            return
        log.warning("worker %d (pid %d) exited with status %s", worker.slot, worker.process.pid, code)
        if not worker.ready and code == LOAD_FAILED:
            log.error("the index could not be loaded (the worker's log says why); stopping")
            self.status = LOAD_FAILED
            self.stopping = True
            self._signal_all(signal.SIGTERM)
            return
        if worker.slot in self.current:  # a replacement died during a restart; the old one serves on
            self._roll()
            return
        if worker.slot in self.starting:  # its replacement is on its way already
            return
        if worker.ready:
            self.failures.pop(worker.slot, None)
            self._start(worker.slot)
            return
        failures = self.failures.get(worker.slot, 0) + 1
        self.failures[worker.slot] = failures
        if failures >= _GIVE_UP_AFTER:
            log.error("worker %d failed to start %d times in a row; stopping", worker.slot, failures)
            self.status = 1
            self.stopping = True
            self._signal_all(signal.SIGTERM)
            return
        pause = min(_FIRST_PAUSE * 2 ** (failures - 1), _LONGEST_PAUSE)
        log.warning("starting worker %d again in %.0f s", worker.slot, pause)
        self.pauses[worker.slot] = time.monotonic() + pause

    def _ready(self, worker: Worker) -> None:
        if worker.ready:
            return
        worker.ready = True
        self.failures.pop(worker.slot, None)
        log.info("worker %d (pid %d) is answering", worker.slot, worker.process.pid)
        if self.starting.get(worker.slot) is worker:
            del self.starting[worker.slot]
            old = self.current.get(worker.slot)
            if old is not None:
                old.retiring = True
                self.retiring.append(old)
                old.process.send_signal(signal.SIGTERM)
            self.current[worker.slot] = worker
            self._roll()
            if self.stopping:
                worker.process.send_signal(signal.SIGTERM)

    def _roll(self) -> None:
        """Start the next slot's replacement, once none is starting."""
        if self.starting or not self.rolling or self.stopping:
            return
        slot = self.rolling.popleft()
        self._start(slot)

    def _start(self, slot: int) -> None:
        ready_read, ready_write = os.pipe()
        command = [
            *self.command,
            "--listen-fd", str(self.sock.fileno()),
            "--ready-fd", str(ready_write),
            "--parent-fd", str(self._parent_read),
            "--worker-slot", str(slot),
        ]  # fmt: skip
        process = subprocess.Popen(
            command, env=self.env, pass_fds=(self.sock.fileno(), ready_write, self._parent_read)
        )
        os.close(ready_write)
        worker = Worker(slot, process, ready_read)
        self.starting[slot] = worker
        self._selector.register(ready_read, selectors.EVENT_READ, worker)

    def _signal_all(self, sig: int) -> None:
        for worker in [*self.current.values(), *self.starting.values(), *self.retiring]:
            if worker.process.returncode is None:
                worker.process.send_signal(sig)


def _mark_dead(pid: int, metrics: Path) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(metrics))  # type: ignore[no-untyped-call]


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m api.supervisor --fd N --workers W --pid-file P -- WORKER COMMAND...``, as `rag serve`
    starts it."""
    parser = argparse.ArgumentParser(prog="rag serve")
    parser.add_argument("--fd", type=int, required=True, help="the bound listening socket")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    sock = socket.socket(fileno=args.fd)
    try:
        return Supervisor(command, args.workers, sock, args.pid_file).run()
    finally:
        sock.close()


def reload_workers(data_dir: Path) -> int:
    """Ask the `rag serve --workers N` of this data folder to restart its workers (SIGHUP)."""
    pid_file = data_dir / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        print(f"rag serve: no `rag serve` with workers runs over {data_dir}", file=sys.stderr)
        return 2
    print(f"asked rag serve (pid {pid}) to restart its workers one at a time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
