"""`rag serve --workers 2` against one process, side by side in one run, on the 2-core machine alone.

    .venv/bin/python benchmarks/workers.py [--requests 600] [--plot benchmarks/workers.png]

1. Throughput: the RealTime QA briefs index (a copy of its cached eval index), questions over HTTP with
   keep-alive, from 1 and then 8 clients, served by one process (``--workers 1``) and then by two workers.
   Each phase asks ``--requests`` questions (the one-client phase a quarter of them) after a warm-up.
2. Graceful restart: 8 clients ask without pause while SIGHUP restarts both workers; every failed
   request (a transport error or a 5xx) is counted.
3. kill -9: 8 clients ask while one worker is killed; the failures are compared with the clients whose
   connection was on that worker (the requests it was answering), and the replacement is timed.
4. Memory at 200k chunks (the synthetic stream of benchmarks/scale.py, built once into its cache): one
   process and two workers each answer the same 300 briefs questions, then the proportional set size
   (PSS: shared pages split between the processes that map them) and RSS of each process are read from
   /proc. The segment files are mapped, not read, so the workers share them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals.cache import cached_answerer, index_key  # noqa: E402
from evals.config import EvalSettings  # noqa: E402
from evals.data import load_dataset  # noqa: E402
from index import packaged_embedder  # noqa: E402
from tests.servers import rag, server_process  # noqa: E402

BRIEFS = ROOT / "evals" / "datasets" / "realtimeqa-briefs"
MEMORY_CHUNKS = 200_000
Question = dict[str, str | None]


@dataclass
class Load:
    """What clients saw: latencies, failures and when each request ended."""

    latencies: list[float] = field(default_factory=list)
    ended: list[float] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_worker: dict[int, str] = field(default_factory=dict)
    """Client -> the worker its connection last reached."""

    def throughput(self) -> float:
        return len(self.latencies) / self.seconds

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else 0.0


def _client(
    number: int, base: str, key: str, questions: list[Question], load: Load, go: threading.Event, count: int
) -> None:
    """Ask in turn until ``count`` questions are answered (``count`` 0: until ``go`` is cleared)."""
    with httpx.Client(base_url=base, timeout=300, headers={"authorization": f"Bearer {key}"}) as client:
        i = number * 7
        while go.is_set() and (count == 0 or i - number * 7 < count):
            q = questions[i % len(questions)]
            i += 1
            started = time.perf_counter()
            try:
                answer = client.post("/ask", json={"question": q["question"], "as_of": q["as_of"]})
            except httpx.TransportError as exc:
                with load.lock:
                    load.failures.append((time.perf_counter(), type(exc).__name__))
                continue
            now = time.perf_counter()
            with load.lock:
                load.last_worker[number] = answer.headers.get("x-worker", "")
                if answer.status_code >= 500:
                    load.failures.append((now, str(answer.status_code)))
                else:
                    load.latencies.append((now - started) * 1000)
                    load.ended.append(now)


@contextmanager
def _clients(base: str, key: str, questions: list[Question], clients: int, count: int = 0) -> Iterator[Load]:
    load, go = Load(), threading.Event()
    go.set()
    threads = [
        threading.Thread(target=_client, args=(n, base, key, questions, load, go, count))
        for n in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        yield load
    finally:
        if count:
            for thread in threads:
                thread.join()
        go.clear()
        for thread in threads:
            thread.join()
        load.seconds = time.perf_counter() - started


def _children(pid: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], check=False, capture_output=True, text=True)
    return {int(p) for p in found.stdout.split()}


def _until(check: object, seconds: float = 300.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("the server did not get there in time")
        time.sleep(0.05)


def _workers(base: str) -> dict[int, str]:
    """pid -> slot of the workers answering."""
    try:
        text = httpx.get(f"{base}/metrics", timeout=10).text
    except httpx.TransportError:
        return {}
    lines = [line for line in text.splitlines() if line.startswith("newsqa_worker_up{")]
    return {
        int(re.findall(r'pid="(\d+)"', line)[0]): re.findall(r'worker="(\d+)"', line)[0] for line in lines
    }


def _ready_workers(base: str) -> int:
    return len(_workers(base))


def _memory(pid: int) -> dict[str, float]:
    """MB of one process, from /proc/PID/smaps_rollup."""
    rows = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    kb = {line.split(":")[0]: int(line.split()[1]) for line in rows}
    return {"rss": kb["Rss"] / 1024, "pss": kb["Pss"] / 1024, "anon": kb["Anonymous"] / 1024}


def throughput(env: dict[str, str], work: Path, key: str, questions: list[Question], requests: int) -> dict:
    results = {}
    for label, workers in (("1 process", "1"), ("2 workers", "2")):
        with server_process(env, work / f"serve-{workers}.log", "--workers", workers,
                            "--rate-per-address", "0") as (base, _):  # fmt: skip
            if workers != "1":
                _until(lambda base=base: _ready_workers(base) == 2)
            with _clients(base, key, questions, 2, count=10):
                pass  # warm-up
            with _clients(base, key, questions, 1, count=requests // 4) as one:
                pass
            with _clients(base, key, questions, 8, count=requests // 8) as eight:
                pass
        results[label] = (one, eight)
        for clients, load in ((1, one), (8, eight)):
            print(
                f"{label:<10} {clients} client{'s' if clients > 1 else ' '} {len(load.latencies):>6} "
                f"{len(load.failures):>6} {load.p(50):>8.1f} {load.p(95):>8.1f} {load.p(99):>8.1f} "
                f"{load.throughput():>7.1f}",
                flush=True,
            )
    return results


def restart(env: dict[str, str], work: Path, key: str, questions: list[Question]) -> dict[str, Load]:
    outcome: dict[str, Load] = {}
    with server_process(env, work / "serve-restart.log", "--workers", "2",
                        "--rate-per-address", "0") as (base, supervisor):  # fmt: skip
        _until(lambda: _ready_workers(base) == 2)
        with _clients(base, key, questions, 8) as load:
            _until(lambda: len(load.latencies) >= 100)
            old = _children(supervisor.pid)
            load.failures.append((time.perf_counter(), "mark: SIGHUP"))
            supervisor.send_signal(signal.SIGHUP)
            _until(lambda: len(_children(supervisor.pid) - old) == 2 and not _children(supervisor.pid) & old)
            done = len(load.latencies)
            _until(lambda: len(load.latencies) >= done + 100)
        outcome["restart"] = load
        with _clients(base, key, questions, 8) as load:
            _until(lambda: len(load.latencies) >= 100)
            victim, victim_slot = min(_workers(base).items())
            os.kill(victim, signal.SIGKILL)
            killed_at = time.perf_counter()
            with load.lock:  # the clients whose connection was on the killed worker
                on_victim = sum(1 for w in load.last_worker.values() if w == victim_slot)
            _until(lambda: len(_children(supervisor.pid)) == 2 and victim not in _children(supervisor.pid))
            _until(lambda: _ready_workers(base) == 2)
            replaced = time.perf_counter() - killed_at
            done = len(load.latencies)
            _until(lambda: len(load.latencies) >= done + 100)
        load.failures.append((killed_at, f"mark: kill -9 (replaced in {replaced:.1f} s, {on_victim} on it)"))
        outcome["kill"] = load
    return outcome


def memory(env: dict[str, str], work: Path, questions: list[Question], chunks: int) -> dict[str, list[dict]]:
    from benchmarks.scale import _cache_dir, build
    from index.config import IndexSettings

    folder = _cache_dir() / f"chunks-{chunks}"
    if not (folder / "COMPLETE").exists():
        print(f"building the {chunks:,}-chunk stream (once, into {folder})", flush=True)
        build(chunks, folder, packaged_embedder(IndexSettings.from_env()).dimension)
        (folder / "COMPLETE").write_text("done\n")
    data = work / "memory-data"
    data.mkdir()
    (data / "index").symlink_to(folder)
    mem_env = {**env, "RAG_DATA_DIR": str(data)}
    key = rag("keys", "add", "memory", "--scope", "ask", env=mem_env).stdout.strip()
    results: dict[str, list[dict]] = {}
    for workers in ("1", "2"):
        with server_process(mem_env, work / f"memory-{workers}.log", "--workers", workers,
                            "--rate-per-address", "0") as (base, supervisor):  # fmt: skip
            if workers != "1":
                _until(lambda base=base: _ready_workers(base) == 2)
            with _clients(base, key, questions[:300], 2, count=150):
                pass
            pids = [supervisor.pid] if workers == "1" else sorted(_children(supervisor.pid))
            results[workers] = [{"pid": pid, **_memory(pid)} for pid in pids]
            if workers != "1":
                results["supervisor"] = [{"pid": supervisor.pid, **_memory(supervisor.pid)}]
    return results


def plot(path: Path, results: dict, timelines: dict[str, Load]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars, lines) = plt.subplots(1, 2, figsize=(11, 4))
    labels = list(results)
    for offset, (clients, index) in enumerate(((1, 0), (8, 1))):
        values = [results[label][index].throughput() for label in labels]
        bars.bar(np.arange(len(labels)) + offset * 0.38, values, width=0.36, label=f"{clients} client(s)")
    bars.set_xticks(np.arange(len(labels)) + 0.19, labels)
    bars.set_ylabel("questions answered a second")
    bars.set_title("/ask throughput")
    bars.legend()
    for name, load in timelines.items():
        start = min(load.ended)
        seconds = np.array(load.ended) - start
        edges = np.arange(0, seconds.max() + 0.5, 0.5)
        counts, _ = np.histogram(seconds, edges)
        lines.plot(edges[:-1], counts * 2, label=name)
        for at, what in load.failures:
            if what.startswith("mark"):
                lines.axvline(at - start, linestyle=":", color=lines.lines[-1].get_color())
    lines.set_xlabel("seconds (dotted: SIGHUP, kill -9)")
    lines.set_ylabel("answers a second, 8 clients")
    lines.set_title("2 workers: restart and a killed worker")
    lines.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=600, help="questions of the 8-client phase")
    parser.add_argument("--memory-chunks", type=int, default=MEMORY_CHUNKS)
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "restart", "memory"])
    parser.add_argument("--plot", type=Path, help="write the figure here")
    args = parser.parse_args()

    dataset = load_dataset(BRIEFS)
    settings = EvalSettings.from_env()
    questions: list[Question] = [
        {"question": q.question, "as_of": q.asked_on.isoformat() if q.asked_on else None}
        for q in dataset.questions
    ]
    cached_answerer(dataset.corpus, settings, packaged_embedder(settings.index)).index.close()  # built once
    source = settings.cache_dir / index_key(dataset.corpus, settings.index)
    work = Path(tempfile.mkdtemp(prefix="newsrag-workers-"))
    shutil.copytree(source, work / "data" / "index")
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(work / "data"),
        "TIKTOKEN_CACHE_DIR": str(settings.index.tiktoken_cache_dir),
    }
    key = rag("keys", "add", "bench", "--scope", "ask", env=env).stdout.strip()
    results, timelines = {}, {}
    try:
        if "throughput" not in args.skip:
            print(f"{'server':<10} {'clients':<9} {'answers':>6} {'failed':>6} {'p50 ms':>8} {'p95 ms':>8} "
                  f"{'p99 ms':>8} {'req/s':>7}")  # fmt: skip
            results = throughput(env, work, key, questions, args.requests)
            for label, (one, eight) in results.items():
                print(
                    f"{label}: 8 clients {eight.throughput() / one.throughput():.2f}x one client's answers/s"
                )
            one_alone, _ = results["1 process"]
            one_two, eight_two = results["2 workers"]
            print(f"2 workers, one client: p50 {one_two.p(50):.1f} ms against {one_alone.p(50):.1f} ms")
            print(f"2 workers, 8 clients: {eight_two.throughput() / one_alone.throughput():.2f}x one client "
                  "of one process")  # fmt: skip
        if "restart" not in args.skip:
            timelines = restart(env, work, key, questions)
            for name, load in timelines.items():
                failed = [what for _, what in load.failures if not what.startswith("mark")]
                marks = [what for _, what in load.failures if what.startswith("mark")]
                print(f"{name}: {len(load.latencies)} answered, {len(failed)} failed {failed[:8]}; {marks}")
        if "memory" not in args.skip:
            found = memory(env, work, questions, args.memory_chunks)
            for label, rows in found.items():
                for row in rows:
                    print(f"memory {label:<10} pid {row['pid']:>7}: PSS {row['pss']:7.0f} MB, "
                          f"RSS {row['rss']:7.0f} MB, anonymous {row['anon']:7.0f} MB")  # fmt: skip
            one = sum(r["pss"] for r in found["1"])
            two = sum(r["pss"] for r in found["2"])
            supervisor = sum(r["pss"] for r in found.get("supervisor", []))
            print(f"memory at {args.memory_chunks:,} chunks: two workers {two:.0f} MB PSS against one "
                  f"process {one:.0f} MB: {two / one:.2f}x ({(two + supervisor) / one:.2f}x with the "
                  "supervisor)")  # fmt: skip
        if args.plot and results and timelines:
            plot(args.plot, results, timelines)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
