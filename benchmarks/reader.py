"""What the reader costs and what it buys, measured in one run: answers without it against answers with it
reading 48 to 160 word pieces of the best candidate sentences with the question, in this
process, then one client over HTTP against `rag serve` with
RAG_READER=off and with the reader, on the same index and questions.

    .venv/bin/python benchmarks/reader.py [DATASET_DIR] [--questions 300] [--requests 300]
                                          [--pieces 48 64 96 128 160] [--plot benchmarks/reader.png]

Questions: a fixed sample (by hash of the id) of the dataset's tune half (how much is read is
chosen here, so the check half stays unseen). For each setting it prints the p50 and p95 of a whole
``Answerer.ask`` and of its compose stage (where the reader runs), answer accuracy, the share of questions
whose short answer holds a gold answer (of those whose answer stands in the gold text) and the share of
answerable questions refused; the trade-off is drawn to ``--plot``. The HTTP phases ask each question once
in turn, one client, the server alone on the machine, and print p50 / p99 and their ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals.cache import cached_answerer, index_key  # noqa: E402
from evals.config import EvalSettings  # noqa: E402
from evals.data import EvalQuestion, load_dataset  # noqa: E402
from evals.harness import outcome_of, short_answer_scores  # noqa: E402
from evals.split import in_tune_half  # noqa: E402
from index import packaged_embedder  # noqa: E402
from index.config import IndexSettings  # noqa: E402
from index.embed import core_count  # noqa: E402
from rag import Answerer  # noqa: E402
from rag.compose import DEFAULT_READ_PIECES  # noqa: E402
from rag.reader import SpanReader  # noqa: E402
from tests.servers import serving  # noqa: E402


def _setting(answerer: Answerer, reader: SpanReader, pieces: int) -> None:
    """The reader reading ``pieces`` word pieces a question (0: no reader)."""
    answerer.quotes.span_reader = None if pieces == 0 else reader
    answerer.quotes.read_pieces = pieces


def _measure(answerer: Answerer, questions: list[EvalQuestion]) -> dict[str, float]:
    total, compose, correct, hits, refused = [], [], [], [], []
    for q in questions:
        started = time.perf_counter()
        answer = answerer.ask(answerer.question(q.question, as_of=q.asked_on))
        total.append((time.perf_counter() - started) * 1000)
        compose.append(answer.timings_ms.get("compose", 0.0))
        outcome = outcome_of(answerer, q, answer)
        if q.answerable:
            correct.append(outcome.correct)
            refused.append(answer.abstained)
            if outcome.answer_in_gold:
                hits.append(short_answer_scores(outcome)[0])
    return {
        "p50": float(np.percentile(total, 50)),
        "p95": float(np.percentile(total, 95)),
        "compose_p50": float(np.percentile(compose, 50)),
        "accuracy": float(np.mean(correct)),
        "short_hit": float(np.mean(hits)) if hits else 0.0,
        "refused": float(np.mean(refused)),
    }


def _http(env: dict[str, str], log: Path, questions: list[EvalQuestion], requests: int) -> list[float]:
    times = []
    with (
        serving(env, log, "--rate-per-address", "0") as base,
        httpx.Client(base_url=base, timeout=120) as http,
    ):
        for i in range(requests):
            q = questions[i % len(questions)]
            as_of = q.asked_on.isoformat() if q.asked_on else None
            started = time.perf_counter()
            response = http.post("/ask", json={"question": q.question, "as_of": as_of})
            times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return times


def _plot(path: Path, rows: dict[int, dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reads = sorted(rows)
    figure, axis = plt.subplots(figsize=(6, 4))
    cost = [rows[n]["p50"] for n in reads]
    axis.plot(cost, [rows[n]["accuracy"] for n in reads], "o-", label="answer accuracy")
    axis.plot(cost, [rows[n]["short_hit"] for n in reads], "s-", label="short answer holds gold")
    for n in reads:
        axis.annotate("off" if n == 0 else f"{n} pieces", (rows[n]["p50"], rows[n]["accuracy"]), fontsize=8)
    axis.set(xlabel="p50 of a question in-process (ms)", ylabel="share of questions")
    axis.set_title("The reader: pieces read against accuracy (tune half)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", nargs="?", type=Path, default=ROOT / "evals/datasets/realtimeqa-briefs")
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--requests", type=int, default=300, help="HTTP requests a phase")
    parser.add_argument("--pieces", type=int, nargs="+", default=[48, 64, 96, 128, 160])
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    tune = [q for q in dataset.questions if in_tune_half(q.id)]
    questions = sorted(tune, key=lambda q: hashlib.sha256(q.id.encode()).hexdigest())[: args.questions]
    settings = EvalSettings.from_env()
    answerer = cached_answerer(dataset.corpus, settings, packaged_embedder(IndexSettings.from_env()))
    reader = answerer.quotes.span_reader
    if reader is None:
        raise SystemExit("the reader is off (RAG_READER); this benchmark compares it with no reader")
    answerer.ask(answerer.question("warm up"))
    print(f"{dataset.name}: {len(questions)} tune-half questions, in-process, alone")
    print(
        "| pieces read | ask p50 ms | ask p95 ms | compose p50 ms | answer accuracy "
        "| short answer holds gold | answerable refused |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = {}
    for pieces in [0, *args.pieces]:
        _setting(answerer, reader, pieces)
        rows[pieces] = row = _measure(answerer, questions)
        served = " (served)" if pieces == DEFAULT_READ_PIECES else ""
        name = "off" if pieces == 0 else f"{pieces}{served}"
        print(
            f"| {name} | {row['p50']:.1f} | {row['p95']:.1f} | {row['compose_p50']:.1f} "
            f"| {row['accuracy']:.3f} | {row['short_hit']:.3f} | {row['refused']:.3f} |",
            flush=True,
        )
    if args.plot:
        _plot(args.plot, rows)
        print(f"wrote {args.plot}")
    if args.requests:
        answerer.index.close()
        source = settings.cache_dir / index_key(dataset.corpus, settings.index)
        work = Path(tempfile.mkdtemp(prefix="newsrag-reader-"))
        shutil.copytree(source, work / "data" / "index")
        env = {
            **os.environ,
            "RAG_DATA_DIR": str(work / "data"),
            "TIKTOKEN_CACHE_DIR": str(settings.index.tiktoken_cache_dir),
        }
        print(
            f"\nOne client over HTTP (rag serve, model threads {core_count()}), {args.requests} requests each"
        )
        print("| server | p50 ms | p95 ms | p99 ms |")
        print("|---|---|---|---|")
        p50 = {}
        for name, extra in (("RAG_READER=off", {"RAG_READER": "off"}), ("reader (default)", {})):
            times = _http(env | extra, work / f"{name[:6]}.log", questions, args.requests)
            p50[name], p95, p99 = np.percentile(times, [50, 95, 99])
            print(f"| {name} | {p50[name]:.1f} | {p95:.1f} | {p99:.1f} |", flush=True)
        print(f"p50 with the reader / without: {p50['reader (default)'] / p50['RAG_READER=off']:.2f}x")
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
