"""`rag serve --workers N`: N worker processes answering on one listening socket, and this process, which
starts the workers and keeps N of them running. `rag serve` binds the socket, then becomes this process
(``exec``, same pid) so that it holds nothing of the service's code: no model, no index, no numpy.

- Each worker is `rag serve` again, given the socket's descriptor (``--listen-fd``). It loads the index
  before it accepts a connection, then says so on its pipe (``--ready-fd``); the kernel hands each new
  connection to one worker that is accepting. Every worker answers questions and takes writes; the one
  holding writer.lock also runs the background writes (api/work/writer.py).
- A worker that dies is replaced in its slot; the others answer meanwhile. A replacement that dies before
  it is ready (one that cannot load the index exits with status 2) is started again after a pause that
  doubles from 1 s up to 30 s, for as long as another worker answers. While none answers (a cold start,
  or every worker lost) the server stops instead: at once on status 2, since the next try would fail the
  same way, or after 5 such deaths in a row of one slot.
- SIGHUP (`rag serve --reload-workers`) restarts the workers one slot at a time: the new worker starts
  and loads; once it is ready the old one is sent SIGTERM, stops accepting and finishes its requests
  (api/cli/serve.py), so no request fails. A new worker that cannot load leaves the old one answering in
  its slot; the roll waits for that slot's next try. Another SIGHUP makes a waiting slot try at once.
- SIGTERM or SIGINT stops every worker the same way; a second SIGINT kills them.
- One supervisor per data folder: `rag serve` takes an exclusive flock on its serve.lock before it binds
  anything and hands the descriptor to this process (``--lock-fd``), which holds it until it exits, and
  gives it to no worker. The kernel drops the lock when this process dies, however it dies, so the next
  supervisor on the folder owns what a killed one left there (serve.pid, the metrics folder) and clears it.
- Metrics: the workers write Prometheus' multi-process files in the data folder's serve-metrics/ (emptied
  at start, removed at exit), and /metrics on any worker sums them; a dead worker's live gauges are dropped.

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
"""Starts in a row of one slot that die before they are ready, after which the server stops, unless
another worker answers."""
PID_FILE = "serve.pid"
"""The supervisor's pid, in the data folder (`rag serve --reload-workers` reads it)."""
LOCK_FILE = "serve.lock"
"""Flocked by the supervisor for its whole life; holds its pid, for the message refusing a second one."""
METRICS_DIR = "serve-metrics"
"""The workers' Prometheus multi-process files, in the data folder."""


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
    data_dir: Path
    """The data folder, whose serve.lock this process holds: serve.pid and the metrics folder go there."""
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    current: dict[int, Worker] = field(default_factory=dict)
    starting: dict[int, Worker] = field(default_factory=dict)
    retiring: list[Worker] = field(default_factory=list)
    rolling: deque[int] = field(default_factory=deque)
    reloading: bool = False
    pauses: dict[int, float] = field(default_factory=dict)
    """Slot -> when its next start may be tried (after a worker died before it was ready)."""
    failures: dict[int, int] = field(default_factory=dict)
    stopping: bool = False
    status: int = 0

    def run(self) -> int:
        pid_file, metrics = self.data_dir / PID_FILE, self.data_dir / METRICS_DIR
        # Left by a supervisor killed outright, if any: this process holds the folder's lock now.
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(parents=True)
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
        try:
            pid_file.write_text(f"{os.getpid()}\n")  # only now: SIGHUP's default action ends a process
            log.info("serving on %s with %d workers (pid %d)", _address(self.sock), self.workers, os.getpid())
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
            pid_file.unlink(missing_ok=True)
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
                self.reloading = True
                for slot in self.pauses:  # whoever sent it may have mended what kept the slot from starting
                    self.pauses[slot] = time.monotonic()
                # One still loading may hold old code; a waiting one will start anew anyway.
                slots = sorted({*self.current, *self.starting} - self.pauses.keys())
                self.rolling.extend(s for s in slots if s not in self.rolling)
                self._roll()
            elif number in (signal.SIGTERM, signal.SIGINT):
                if self.stopping and number == signal.SIGINT:
                    self._signal_all(signal.SIGKILL)
                    continue
                log.info("stopping: the workers finish their requests")
                self._stop(self.status)

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
        slot = worker.slot
        if self.starting.get(slot) is worker:
            del self.starting[slot]
        if self.current.get(slot) is worker:
            del self.current[slot]
        if self.stopping:
            return
        log.warning("worker %d (pid %d) exited with status %s", slot, worker.process.pid, code)
        if worker.ready:  # replaced at once, unless its replacement is starting or waiting already
            self.failures.pop(slot, None)
            if slot not in self.starting and slot not in self.pauses:
                self._start(slot)
            return
        failures = self.failures.get(slot, 0) + 1
        self.failures[slot] = failures
        if not self.current:  # no worker answers: nothing is kept by waiting
            if code == LOAD_FAILED:
                log.error("the index could not be loaded (the worker's log says why); stopping")
                self._stop(LOAD_FAILED)
                return
            if failures >= _GIVE_UP_AFTER:
                log.error("worker %d failed to start %d times in a row; stopping", slot, failures)
                self._stop(1)
                return
        pause = min(_FIRST_PAUSE * 2 ** (failures - 1), _LONGEST_PAUSE)
        self.pauses[slot] = time.monotonic() + pause
        old = self.current.get(slot)
        if old is not None:
            answering = f"its old worker (pid {old.process.pid}) still answers"
        elif len(self.current) == 1:
            answering = f"worker {next(iter(self.current))} answers meanwhile"
        elif self.current:
            answering = f"workers {', '.join(map(str, sorted(self.current)))} answer meanwhile"
        else:
            answering = "no worker answers"
        log.warning(
            "worker %d could not start (%d in a row; the worker's log says why); %s; next try in %.0f s",
            slot, failures, answering, pause,
        )  # fmt: skip

    def _ready(self, worker: Worker) -> None:
        if worker.ready:
            return
        worker.ready = True
        failed = self.failures.pop(worker.slot, 0)
        log.info(
            "worker %d (pid %d) is answering%s", worker.slot, worker.process.pid,
            f" after {failed} failed starts" if failed else "",
        )  # fmt: skip
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
        """Start the next slot's replacement, once none is starting or waiting to start again."""
        if self.starting or self.pauses or self.stopping:
            return
        if self.rolling:
            self._start(self.rolling.popleft())
        elif self.reloading:
            self.reloading = False
            log.info("every worker restarted")

    def _stop(self, status: int) -> None:
        self.status = status
        self.stopping = True
        self.rolling.clear()
        self.pauses.clear()
        self._signal_all(signal.SIGTERM)

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
    """``python -m api.supervisor --fd N --lock-fd L --workers W --data-dir D -- WORKER COMMAND...``, as
    `rag serve` starts it."""
    parser = argparse.ArgumentParser(prog="rag serve")
    parser.add_argument("--fd", type=int, required=True, help="the bound listening socket")
    parser.add_argument("--lock-fd", type=int, required=True, help="the data folder's serve.lock, flocked")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    sock = socket.socket(fileno=args.fd)
    try:
        return Supervisor(command, args.workers, sock, args.data_dir).run()
    finally:
        sock.close()
        os.close(args.lock_fd)  # the folder is free once serve.pid and the metrics are gone


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
