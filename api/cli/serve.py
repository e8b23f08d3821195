"""`rag serve`: one process (``--workers 1``), or a supervisor and N workers over one data folder
(api/supervisor.py); ``--reload-workers`` asks a running one to restart its workers."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from api.cli.options import model_options, with_cluster, with_model
from api.config import DEFAULT_RATE_PER_ADDRESS, Settings
from index.errors import ConfigError

if TYPE_CHECKING:
    import uvicorn
    from litestar import Litestar

DRAIN_SECONDS = 30.0
"""How long a stopping worker waits for its requests beyond the keep-alive timeout before it cuts them."""


def add_serve_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes answering on the one address (default: the machine's cores; 1: this process "
        "alone, as before). SIGHUP restarts them one at a time without failing a request.",
    )
    serve.add_argument(
        "--reload-workers",
        action="store_true",
        help="restart the workers of the `rag serve` running over this data folder, and return",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host while no API key exists (anyone who can reach it can write)",
    )
    serve.add_argument(
        "--rate-per-address",
        type=int,
        metavar="N",
        help=f"requests a minute per client address (default {DEFAULT_RATE_PER_ADDRESS}; 0: no limit)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="CPU threads one request's vector search and numpy may use (default 1: concurrent requests "
        "run side by side, one per core, instead of fighting over the same cores)",
    )
    serve.add_argument(
        "--model-threads",
        type=int,
        default=None,
        metavar="N",
        help="threads of each process's model calls (default: the machine's cores divided among the "
        "workers; one call runs at a time, with the questions waiting batched into it)",
    )
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        default=None,
        metavar="CIDR",
        help="a reverse proxy whose X-Forwarded-For is believed (repeatable; default: none)",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a Host name answered while no API key exists, beside 127.0.0.1, [::1] and localhost "
        "(repeatable; env RAG_ALLOWED_HOSTS)",
    )
    serve.add_argument(
        "--cluster", metavar="ADDRESS", help="answer from the index on this Ray cluster (one worker)"
    )
    for internal in ("--listen-fd", "--ready-fd", "--parent-fd", "--worker-slot"):
        serve.add_argument(internal, type=int, default=None, help=argparse.SUPPRESS)
    model_options(serve)
    serve.set_defaults(run=serve_command)


def serve_command(settings: Settings, args: argparse.Namespace) -> int:
    from api.supervisor import reload_workers
    from index.embed import core_count

    if args.reload_workers:
        return reload_workers(settings.service.data_dir)
    workers = args.workers if args.workers is not None else (1 if args.cluster else core_count())
    if workers < 1:
        print("rag serve: --workers is at least 1", file=sys.stderr)
        return 2
    if workers > 1 and args.cluster:
        print("rag serve: --cluster serves from one process; leave out --workers", file=sys.stderr)
        return 2
    settings = _settings(settings, args)
    if args.listen_fd is None and not _may_listen(settings, args):
        return 2
    model_threads = args.model_threads or max(core_count() // workers, 1)
    if args.listen_fd is not None:
        return _serve(settings, args, model_threads, worker=True)
    if workers == 1:
        return _serve(settings, args, model_threads, worker=False)
    return _supervise(settings, args, workers, model_threads)


def _settings(settings: Settings, args: argparse.Namespace) -> Settings:
    settings = with_cluster(with_model(settings, args), args)
    service = settings.service
    if args.rate_per_address is not None:
        service = dataclasses.replace(service, rate_per_address=args.rate_per_address)
    if args.trusted_proxy is not None:
        service = dataclasses.replace(service, trusted_proxies=tuple(args.trusted_proxy))
    if args.allowed_host is not None:
        service = dataclasses.replace(service, allowed_hosts=tuple(args.allowed_host))
    return dataclasses.replace(settings, service=service)


def _may_listen(settings: Settings, args: argparse.Namespace) -> bool:
    from api.service import open_keys

    if _is_loopback(args.host) or args.insecure:
        return True
    keys = open_keys(settings)
    active = keys.active()
    keys.close()
    if not active:
        print(
            f"rag serve: refusing to serve on {args.host} without API keys: anyone who can reach it "
            "could add and delete articles. Create keys with `rag keys add NAME --scope admin|ask`, "
            "serve on 127.0.0.1, or pass --insecure.",
            file=sys.stderr,
        )
    return bool(active)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _supervise(settings: Settings, args: argparse.Namespace, workers: int, model_threads: int) -> int:
    """Take the data folder, bind the socket, then become the supervisor (api/supervisor.py), which loads
    none of this."""
    import uvicorn

    from api.service import prepare_data_folder

    data_dir = settings.service.data_dir
    lock = _hold_folder(data_dir)  # before anything is bound or moved: a second one is refused
    prepare_data_folder(settings)  # once, before any worker opens the folder
    sock = uvicorn.Config("api.web.app:create_app", host=args.host, port=args.port).bind_socket()
    sock.set_inheritable(True)
    worker = [sys.executable, "-m", "api", *args.argv, "--model-threads", str(model_threads)]
    supervisor = [sys.executable, "-m", "api.supervisor", "--fd", str(sock.fileno()), "--lock-fd", str(lock),
                  "--workers", str(workers), "--data-dir", str(data_dir), "--", *worker]  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, supervisor)  # noqa: S606 - this process becomes the supervisor (same pid)


def _hold_folder(data_dir: Path) -> int:
    """The descriptor of the data folder's serve.lock, flocked (exclusive) and inheritable, so that the
    supervisor holds it through ``exec`` until it dies. ConfigError when another supervisor holds it."""
    import fcntl

    from api.supervisor import LOCK_FILE, PID_FILE

    data_dir.mkdir(parents=True, exist_ok=True)
    lock = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(lock, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(lock)
        raise ConfigError(
            f"another `rag serve --workers N` (pid {holder}) serves over {data_dir}; stop it first, or "
            "serve another data folder (RAG_DATA_DIR)"
        ) from None
    os.ftruncate(lock, 0)
    os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)  # the supervisor's pid: exec keeps it
    (data_dir / PID_FILE).unlink(missing_ok=True)  # a killed one's, until the supervisor writes its own
    os.set_inheritable(lock, True)
    return lock


def _serve(settings: Settings, args: argparse.Namespace, model_threads: int, worker: bool) -> int:
    import uvicorn

    from api.service import build_answerer
    from api.web.app import create_app
    from index.embed import set_threads
    from rag import Answerer

    set_threads(args.threads)
    loopback = _is_loopback(args.host)
    server: uvicorn.Server | None = None

    def stop(reason: str) -> None:
        del reason  # reported below, once the server has shut down
        if server is not None:
            server.should_exit = True

    def opener(s: Settings) -> Answerer:  # concurrent questions share model calls
        return build_answerer(s, batching=True, threads=model_threads)

    app = create_app(
        settings,
        opener=opener,
        on_load_error=stop,
        open_without_keys=loopback or args.insecure,
        background=not worker,  # a worker accepts no connection before its index is loaded
        worker=args.worker_slot,
    )
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1 and rewrite the
    # client address the per-address limit counts; only --trusted-proxy decides that (api/store/limits.py).
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=False,
        log_config=None,
        proxy_headers=False,
    )
    if worker:
        server = _worker_server(config, app, args.ready_fd)
        _exit_with_parent(args.parent_fd, server)
        server.run(sockets=[socket.socket(fileno=args.listen_fd)])
    else:
        server = uvicorn.Server(config)
        server.run()
    if app.state.startup.error:
        print(f"rag serve: the index could not be loaded: {app.state.startup.error}", file=sys.stderr)
        return 2
    return 0


def _worker_server(config: uvicorn.Config, app: Litestar, ready_fd: int | None) -> uvicorn.Server:
    """A uvicorn server that says when it accepts, and stops gracefully: it stops accepting (the other
    workers accept), answers each request already on one of its connections with ``Connection: close``,
    and leaves once they are all closed: by the client after such an answer, or by the keep-alive
    timeout for one left idle."""
    import uvicorn

    service = app.state.startup

    class WorkerServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and not self.should_exit and ready_fd is not None and service.error is None:
                os.write(ready_fd, b"r")

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for listening in self.servers:
                listening.close()
            service.draining.set()
            deadline = time.monotonic() + self.config.timeout_keep_alive + DRAIN_SECONDS
            while self.server_state.connections and not self.force_exit and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # uvicorn's own shutdown polls its connections the same way
            await super().shutdown(sockets)

    return WorkerServer(config)


def _exit_with_parent(parent_fd: int | None, server: uvicorn.Server) -> None:
    """Stop when the supervisor's end of the pipe closes: it has died, and no one would replace us."""
    if parent_fd is None:
        return

    def wait(
        fd: int = parent_fd, stop: Callable[[], None] = lambda: setattr(server, "should_exit", True)
    ) -> None:
        while os.read(fd, 1):
            pass
        stop()

    threading.Thread(target=wait, name="supervisor-watch", daemon=True).start()
