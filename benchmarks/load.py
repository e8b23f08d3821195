"""Bounded load on a real `rag serve` over loopback: questions from N clients, with and without a writer
adding and deleting articles over HTTP, and while `rag ingest` runs in another process. A phase asks at
least ``--requests`` questions and goes on until its writer (or ingest) has finished.

    .venv/bin/python benchmarks/load.py [DATASET_DIR] [--clients 8 32] [--requests 600] [--writes 200]

The server serves a copy of the dataset's cached eval index (so writes leave the cache alone), with an
admin and an ask key and no per-address limit. Each phase prints requests, errors by status, 5xx, p50,
p95 and p99 latency and throughput; the writer's adds and deletes count as requests of the phase. First,
before the server starts, the one-client questions are answered in this process with the server's
thread count: the difference at p50 is what HTTP adds; the last lines give it and each client count's
throughput against one client's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals.cache import cached_answerer, index_key  # noqa: E402
from evals.config import EvalSettings  # noqa: E402
from evals.data import load_dataset  # noqa: E402
from index import packaged_embedder  # noqa: E402
from index.config import IndexSettings  # noqa: E402
from index.embed import core_count, set_threads  # noqa: E402
from rag import Answerer  # noqa: E402
from tests.servers import rag, serving  # noqa: E402


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int, ms: float, timed: bool = True) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if timed:
                self.latencies.append(ms)

    def row(self) -> str:
        total = sum(self.statuses.values())
        errors = sum(n for s, n in self.statuses.items() if s >= 400)
        server = sum(n for s, n in self.statuses.items() if s >= 500)
        p50, p95, p99 = self.percentiles()
        return (
            f"{self.name:<34} {total:>6} {errors:>6} {server:>4} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f} "
            f"{self.throughput():>7.1f}"
        )

    def percentiles(self) -> tuple[float, float, float]:
        if not self.latencies:
            return 0.0, 0.0, 0.0
        p50, p95, p99 = np.percentile(self.latencies, [50, 95, 99])
        return float(p50), float(p95), float(p99)

    def throughput(self) -> float:
        return sum(self.statuses.values()) / self.seconds


def _ask(
    base: str,
    key: str,
    questions: list[dict[str, str | None]],
    count: int,
    phase: Phase,
    busy: threading.Event,
) -> None:
    """At least ``count`` questions, and on while ``busy`` (a writer or an ingest is still working)."""
    with httpx.Client(base_url=base, timeout=300, headers={"authorization": f"Bearer {key}"}) as client:
        i = 0
        while i < count or busy.is_set():
            q = questions[i % len(questions)]
            i += 1
            started = time.perf_counter()
            response = client.post("/ask", json={"question": q["question"], "as_of": q["as_of"]})
            phase.record(response.status_code, (time.perf_counter() - started) * 1000)


def _in_process(answerer: Answerer, questions: list[dict[str, str | None]], threads: int) -> Phase:
    """The questions answered by an Answerer in this process, one at a time, as the server would."""
    set_threads(threads)
    phase = Phase("in-process, no HTTP")
    started = time.perf_counter()
    for q in questions:
        asked = time.perf_counter()
        as_of = date.fromisoformat(q["as_of"]) if q["as_of"] else None
        answerer.ask(answerer.question(q["question"] or "", as_of=as_of))
        phase.record(200, (time.perf_counter() - asked) * 1000)
    phase.seconds = time.perf_counter() - started
    return phase


def _compare(alone: Phase, phases: dict[int, Phase]) -> None:
    """What HTTP adds at p50 (one client less in-process), and each client count against one client."""
    if 1 not in phases:
        return
    added = phases[1].percentiles()[0] - alone.percentiles()[0]
    print(f"HTTP adds at p50: {added:.1f} ms (one client less in-process)")
    for clients, phase in phases.items():
        if clients > 1:
            ratio = phase.throughput() / phases[1].throughput()
            print(f"{clients} clients: {ratio:.2f}x one client's requests/s")


def _write(base: str, key: str, writes: int, phase: Phase, busy: threading.Event) -> None:
    with httpx.Client(base_url=base, timeout=300, headers={"authorization": f"Bearer {key}"}) as client:
        for i in range(writes // 2):
            story = {
                "id": f"load-{i}",
                "title": f"Harbour works update {i}",
                "published_at": "2022-06-01",
                "body": f"Update {i}: the harbour authority said repairs to the north pier continue this "
                "week. Ferries use the south berth until the works end.",
            }
            added = client.post("/articles", json=story)
            phase.record(added.status_code, 0.0, timed=False)
            removed = client.delete(f"/articles/load-{i}")
            phase.record(removed.status_code, 0.0, timed=False)
    busy.clear()


def _run(
    name: str,
    base: str,
    keys: dict[str, str],
    questions: list[dict[str, str | None]],
    clients: int,
    requests: int,
    writes: int,
    ingest: list[str] | None,
    env: dict[str, str],
) -> Phase:
    phase = Phase(name)
    busy = threading.Event()
    if writes or ingest:
        busy.set()
    per_client = max(requests // clients, 1)
    threads = [
        threading.Thread(
            target=_ask, args=(base, keys["ask"], questions[i::clients], per_client, phase, busy)
        )
        for i in range(clients)
    ]
    if writes:
        threads.append(threading.Thread(target=_write, args=(base, keys["admin"], writes, phase, busy)))
    started = time.perf_counter()
    process = (
        subprocess.Popen(ingest, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if ingest
        else None
    )
    for thread in threads:
        thread.start()
    if process:
        process.wait()
        busy.clear()
        phase.name += f" (exit {process.returncode})"
    for thread in threads:
        thread.join()
    phase.seconds = time.perf_counter() - started
    return phase


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", nargs="?", type=Path, default=ROOT / "evals/datasets/realtimeqa-briefs")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--requests", type=int, default=600, help="questions per phase")
    parser.add_argument(
        "--writes", type=int, default=200, help="adds plus deletes in a writer phase (0: none)"
    )
    parser.add_argument("--no-ingest", action="store_true", help="leave out the phase beside `rag ingest`")
    parser.add_argument("--threads", type=int, default=1, help="`rag serve --threads`")
    parser.add_argument(
        "--model-threads", type=int, default=None, help="`rag serve --model-threads` (default: the cores)"
    )
    args = parser.parse_args()

    dataset = load_dataset(args.dataset)
    settings = EvalSettings.from_env()
    model_threads = args.model_threads or core_count()  # as `rag serve`
    embedder = packaged_embedder(IndexSettings.from_env(), threads=model_threads)
    answerer = cached_answerer(dataset.corpus, settings, embedder)
    questions = [
        {"question": q.question, "as_of": q.asked_on.isoformat() if q.asked_on else None}
        for q in dataset.questions
    ]
    # The same questions in this process first, with the server's thread count, alone on the machine:
    # what HTTP adds is the one-client phase's latency less this one's.
    alone = _in_process(answerer, questions[: args.requests], args.threads)
    answerer.index.close()
    del answerer, embedder
    source = settings.cache_dir / index_key(dataset.corpus, settings.index)
    work = Path(tempfile.mkdtemp(prefix="newsrag-load-"))
    shutil.copytree(source, work / "data" / "index")
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(work / "data"),
        "TIKTOKEN_CACHE_DIR": str(settings.index.tiktoken_cache_dir),
    }
    keys = {
        scope: rag("keys", "add", f"load-{scope}", "--scope", scope, env=env).stdout.strip()
        for scope in ("admin", "ask")
    }
    feed = work / "feed.jsonl"
    with feed.open("w") as handle:
        for i in range(300):
            body = (
                f"Council report {i}: the regional council voted on measure {i} about roads and schools. " * 3
            )
            handle.write(json.dumps({"id": f"feed-{i}", "title": f"Council vote {i}", "body": body}) + "\n")
    ingest = [sys.executable, "-m", "api", "ingest", "--quiet", str(feed)]

    print(f"{dataset.name}: {len(dataset.questions)} questions; server: rag serve on 127.0.0.1")
    print(
        f"{'phase':<34} {'reqs':>6} {'errors':>6} {'5xx':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'req/s':>7}"
    )
    print(alone.row(), flush=True)
    phases: dict[int, Phase] = {}
    options = [
        "--rate-per-address",
        "0",
        "--threads",
        str(args.threads),
        "--model-threads",
        str(model_threads),
    ]
    with serving(env, work / "server.log", *options) as base:
        for clients in args.clients:
            for writes in sorted({0, args.writes}):
                label = f"{clients} clients" + (f" + writer ({writes} writes)" if writes else "")
                phase = _run(label, base, keys, questions, clients, args.requests, writes, None, env)
                print(phase.row(), flush=True)
                if not writes:
                    phases[clients] = phase
        if not args.no_ingest:
            label = f"{args.clients[0]} clients + rag ingest (300)"
            phase = _run(label, base, keys, questions, args.clients[0], args.requests, 0, ingest, env)
            print(phase.row(), flush=True)
    _compare(alone, phases)
    tracebacks = (work / "server.log").read_text().count("Traceback")
    print(f"server log: {tracebacks} tracebacks")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
