"""A real PostgreSQL server for tests: Debian's ``postgresql`` binaries (the Makefile installs them as it
does Chromium), a cluster made by ``initdb`` in a temporary folder and started on a free port of
127.0.0.1 by an unprivileged user (PostgreSQL refuses to run as root), stopped at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.servers import free_port, until

USER = "postgres"
"""The unprivileged user the server runs as when the tests run as root (Debian's package makes it)."""


def binaries() -> Path:
    """The newest installed PostgreSQL's bin folder."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    assert found, "PostgreSQL is not installed: `make unit` installs Debian's postgresql package"
    return found[-1].parent


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_server() -> Iterator[str]:
    """A running server; yields the URL of its ``postgres`` database for the superuser ``rag``."""
    bin_dir = binaries()
    folder = Path(tempfile.mkdtemp(prefix="newsrag-pg-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder, USER)
        shutil.chown(sockets, USER)
    subprocess.run(
        _as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "rag", "-A", "trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = (folder / "server.log").open("wb")
    server = subprocess.Popen(
        _as_server_user(
            [
                str(bin_dir / "postgres"),
                "-D", str(data),
                "-p", str(port),
                "-k", str(sockets),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off",
                "-c", "max_connections=200",
            ]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"postgresql://rag@127.0.0.1:{port}/postgres"
    try:
        until(lambda: _answers(url) or server.poll() is not None, 60)
        assert server.poll() is None, (folder / "server.log").read_text()
        yield url
    finally:
        server.terminate()
        server.wait(60)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def fresh_database(server_url: str) -> str:
    """A new empty database on the server; its URL."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + "/" + name
