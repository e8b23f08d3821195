"""What a conversation's history adds to a question's time, without a model.

    .venv/bin/python benchmarks/follow.py [--repeat 3] [--json]

Every later turn of the RealTime QA dev dialogues (evals/datasets/realtimeqa-articles/dialogues.jsonl),
over the eval's cached index of that corpus, asked in-process as `rag serve` answers it (validation and
analysis, then ``Answerer.ask``): alone and with its history (the earlier turns and the system's own
answers to them), the two interleaved question by question, each ``--repeat`` times (the fastest kept),
so that drift on the machine hits both alike. Prints p50/p95 ms of each, the p50 of the paired
difference, that difference for the follow-ups that leaned on their history and for those that stood
alone, and the time to validate and resolve a history by itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals.cache import cached_answerer  # noqa: E402
from evals.config import EvalSettings  # noqa: E402
from evals.data import load_dataset  # noqa: E402
from index import packaged_embedder  # noqa: E402
from index.embed import core_count  # noqa: E402
from rag import Answerer  # noqa: E402
from rag.follow import Turn  # noqa: E402

ARTICLES = ROOT / "evals/datasets/realtimeqa-articles"


def _timed(
    answerer: Answerer, text: str, day: object, history: list[Turn], repeat: int
) -> tuple[float, float, bool]:
    """Fastest of ``repeat``: (ms to validate and resolve, ms in all, whether it leaned)."""
    best_resolve = best_total = float("inf")
    leaned = False
    for _ in range(repeat):
        started = time.perf_counter()
        question = answerer.question(text, as_of=day, history=history)  # type: ignore[arg-type]
        resolved = time.perf_counter()
        answerer.ask(question)
        done = time.perf_counter()
        best_resolve = min(best_resolve, (resolved - started) * 1000)
        best_total = min(best_total, (done - started) * 1000)
        leaned = question.follow is not None
    return best_resolve, best_total, leaned


def _p(values: list[float], q: int) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    dataset = load_dataset(ARTICLES)
    settings = EvalSettings.from_env()
    embedder = packaged_embedder(settings.index, core_count())
    answerer = cached_answerer(dataset.corpus, settings, embedder, False)
    limit = answerer.settings.max_question_chars
    rows: list[dict[str, float | bool]] = []
    for dialogue in dataset.dialogues:
        history: list[Turn] = []
        for n, turn in enumerate(dialogue.turns):
            day = dialogue.asked_on
            if n:
                alone_resolve, alone, _ = _timed(answerer, turn.question, day, [], args.repeat)
                with_resolve, with_history, leaned = _timed(
                    answerer, turn.question, day, history, args.repeat
                )
                rows.append(
                    {
                        "alone": alone,
                        "with": with_history,
                        "resolve": with_resolve - alone_resolve,
                        "leaned": leaned,
                        "follow_up": turn.kind == "follow-up",
                    }
                )
            answer = answerer.ask(answerer.question(turn.question, as_of=day, history=history))
            cited = tuple(dict.fromkeys(c.article_id for c in answer.citations))
            history += [Turn("user", turn.question), Turn("assistant", answer.text[:limit], cited)]
    added = [float(r["with"]) - float(r["alone"]) for r in rows]
    leaned = [float(r["with"]) - float(r["alone"]) for r in rows if r["leaned"]]
    stood = [float(r["with"]) - float(r["alone"]) for r in rows if not r["leaned"]]
    result = {
        "turns": len(rows),
        "leaned": len(leaned),
        "alone_p50_ms": _p([float(r["alone"]) for r in rows], 50),
        "alone_p95_ms": _p([float(r["alone"]) for r in rows], 95),
        "with_history_p50_ms": _p([float(r["with"]) for r in rows], 50),
        "with_history_p95_ms": _p([float(r["with"]) for r in rows], 95),
        "added_p50_ms": _p(added, 50),
        "added_mean_ms": round(float(np.mean(added)), 3),
        "added_leaned_p50_ms": _p(leaned, 50),
        "added_stood_alone_p50_ms": _p(stood, 50),
        "resolve_p50_ms": _p([float(r["resolve"]) for r in rows], 50),
        "resolve_p95_ms": _p([float(r["resolve"]) for r in rows], 95),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    r = result
    print(f"{r['turns']} later turns ({r['leaned']} leaned on their history), fastest of {args.repeat}")
    print(f"  alone         p50 {r['alone_p50_ms']:.2f} ms   p95 {r['alone_p95_ms']:.2f} ms")
    print(f"  with history  p50 {r['with_history_p50_ms']:.2f} ms   p95 {r['with_history_p95_ms']:.2f} ms")
    print(f"  added         p50 {r['added_p50_ms']:.2f} ms   mean {r['added_mean_ms']:.2f} ms")
    print(f"    leaned      p50 {r['added_leaned_p50_ms']:.2f} ms")
    print(f"    stood alone p50 {r['added_stood_alone_p50_ms']:.2f} ms")
    print(f"  resolving a history  p50 {r['resolve_p50_ms']:.3f} ms   p95 {r['resolve_p95_ms']:.3f} ms")


if __name__ == "__main__":
    main()
