"""Standing questions replayed: the briefs corpus arrives in publication order, one commit a day, and the
dev questions are watches registered before their stories arrive. What the alerts are worth, what
matching costs, and whether 10,000 watches slow ``/ask``, measured in one run.

    .venv/bin/python benchmarks/watches.py [DATASET_DIR] [--days N] [--cost-watches 1000 10000]
        [--ask-watches 10000] [--requests 200] [--plot benchmarks/watches.png] [--dump reads.jsonl]

The replay: a fresh index; before each day's commit, the watches of the questions whose first gold
article arrives in the next commit are registered (so each sees one commit of other news first), and
those asked more than 7 days ago are removed; after the commit the served path checks it
(``WatchMatcher``: the watches near by question vector and word share, then the reader). Every pair the
reader reads is kept with its cosine and the reader's probability, so the thresholds can be swept
afterwards as the matcher applies them (of one commit's articles, the one the reader is surest of; a
story alerts a watch once). An alert counts as right when one of its quoted sentences holds a gold
answer. Precision is given over every alert and over the alerts of the questions whose gold answer
stands in their gold article's text (the others cannot be quoted right); recall is over the latter;
delay is the commit of the first right alert counted from the commit that brought the story (1: that
same commit). Thresholds are chosen on the tune half; the check half is read with them once. The
served defaults (DEFAULT_NEAR, DEFAULT_OVERLAP, DEFAULT_MIN_CONFIDENCE) are what the stored alerts of
this run used (the replay reads at floors below them, so the sweep sees every pair; served, every watch
above the thresholds is read, as in the replay).

Cost: for each of ``--cost-watches``, that many tune-half questions watched at once (numbered copies once
the distinct ones run out: rewordings that each come near the same articles, the costly case), the
matcher run over the last 300 articles of the replay as if they were new: milliseconds and questions
read per article. ``/ask``: one client over HTTP
against `rag serve` on the replay's data folder with no watch, then with ``--ask-watches`` watches
(their vectors stored first), the server alone on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.store.records import Found  # noqa: E402
from api.store.standing import WatchTables  # noqa: E402
from api.store.watches import DEFAULT_MIN_CONFIDENCE  # noqa: E402
from api.web.schemas import render_answer  # noqa: E402
from api.work.matching import WatchMatcher  # noqa: E402
from evals.data import EvalQuestion, load_dataset  # noqa: E402
from evals.harness import normalize_answer  # noqa: E402
from evals.split import in_tune_half  # noqa: E402
from index import Article, load_paths, make_ingestor, packaged_embedder  # noqa: E402
from index.config import IndexSettings  # noqa: E402
from index.embed import core_count  # noqa: E402
from index.store import IndexStore  # noqa: E402
from rag import Answerer  # noqa: E402
from rag.config import AnswerSettings  # noqa: E402
from rag.standing import DEFAULT_NEAR, DEFAULT_OVERLAP, strongest  # noqa: E402
from tests.servers import serving  # noqa: E402

FLOOR_NEAR = 0.2
FLOOR_CONFIDENCE = 0.02
KEEP_DAYS = 7
NEARS = (0.25, 0.3, 0.35, 0.4, 0.45)
OVERLAPS = (0.0, 0.05, 0.1)
CONFIDENCES = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


@dataclass(frozen=True)
class Read:
    """One watch-article pair the reader read, in the replay."""

    question: str
    commit: int
    story: str
    near: float
    confidence: float
    right: bool
    overlap: float = 0.0
    short: str = ""


@dataclass
class Replay:
    """The corpus as daily commits, the questions and when their stories arrive, and what was read."""

    commits: list[tuple[date, list[Article]]]
    questions: dict[str, EvalQuestion]
    arrival: dict[str, int]
    """Question id -> the commit that brings its first gold article."""
    verbatim: set[str]
    """Questions whose gold answer stands in their gold article's text."""
    reads: list[Read] = field(default_factory=list)
    stored: list[tuple[str, Found]] = field(default_factory=list)
    """Alerts the served path stored at the defaults: (question id, what was found)."""

    def half(self, tune: bool) -> dict[str, EvalQuestion]:
        return {k: v for k, v in self.questions.items() if in_tune_half(k) == tune}


def _holds(found: Found, answers: tuple[str, ...]) -> bool:
    quotes = [normalize_answer(c["quote"]) for c in found.answer.get("citations", []) if c.get("quote")]
    golds = [normalize_answer(a) for a in answers if normalize_answer(a)]
    return any(f" {g} " in f" {q} " for q in quotes for g in golds)


def _scores(
    replay: Replay, questions: dict[str, EvalQuestion], near: float, overlap: float, confidence: float
) -> dict[str, float]:
    """Alerts as the matcher stores them at these thresholds (of a commit's articles, the one the reader is
    surest of; a watch and a story alert once), and what they are worth over ``questions``."""
    passing: dict[tuple[int, str], Read] = {}
    for r in replay.reads:
        if r.question in questions and r.near >= near and r.overlap >= overlap and r.confidence >= confidence:
            key = (r.commit, r.question)
            if key not in passing or r.confidence > passing[key].confidence:
                passing[key] = r
    alerted: set[tuple[str, str]] = set()
    alerts = right = alerts_v = right_v = 0
    first_right: dict[str, int] = {}
    for (_, question), r in sorted(passing.items()):
        if (question, r.story) in alerted:
            continue
        alerted.add((question, r.story))
        alerts += 1
        right += r.right
        if question in replay.verbatim:
            alerts_v += 1
            right_v += r.right
        if r.right:
            first_right.setdefault(question, r.commit)
    delays = [first_right[q] - replay.arrival[q] + 1 for q in first_right]
    answerable = [q for q in replay.verbatim if q in questions]
    return {
        "alerts": alerts,
        "precision": right / alerts if alerts else 0.0,
        "precision_text": right_v / alerts_v if alerts_v else 0.0,
        "recall": len([q for q in answerable if q in first_right]) / max(1, len(answerable)),
        "recall_all": len(first_right) / max(1, len(questions)),
        "delay": float(statistics.median(delays)) if delays else float("nan"),
    }


def _prepare(dataset_dir: Path, days: int) -> Replay:
    dataset = load_dataset(dataset_dir)
    articles = [a for a in load_paths([dataset.corpus]) if isinstance(a, Article)]
    by_id = {a.id: a for a in articles}
    dated = sorted(articles, key=lambda a: (a.published_at or date.min, a.id))
    commits = [
        (day or date.min, list(group)) for day, group in itertools.groupby(dated, lambda a: a.published_at)
    ]
    commits = commits[:days] if days else commits
    day_index = {day: i for i, (day, _) in enumerate(commits)}
    arrival: dict[str, int] = {}
    for q in dataset.questions:
        arrived = [by_id[g].published_at for g in q.gold_ids if g in by_id and by_id[g].published_at]
        if arrived and min(arrived) in day_index:  # type: ignore[type-var]
            arrival[q.id] = day_index[min(arrived)]  # type: ignore[type-var]
    questions = {q.id: q for q in dataset.questions if q.id in arrival}

    def stands(q: EvalQuestion) -> bool:
        bodies = [f" {normalize_answer(by_id[g].body)} " for g in q.gold_ids if g in by_id]
        return any(normalize_answer(a) and f" {normalize_answer(a)} " in b for a in q.answers for b in bodies)

    return Replay(commits, questions, arrival, {q.id for q in questions.values() if stands(q)})


def _replay(replay: Replay, store: IndexStore, answerer: Answerer, watches: WatchTables) -> None:
    """Commit the corpus day by day with the questions' watches registered and removed on time, reading
    every pair at the floors and storing the served alerts."""
    ingestor = make_ingestor(IndexSettings.under(store.data_dir), store, answerer.embedder)
    matcher = WatchMatcher(watches, answerer, render_answer, near=FLOOR_NEAR, overlap=0.0)
    register: dict[int, list[EvalQuestion]] = defaultdict(list)
    for q in replay.questions.values():
        register[max(replay.arrival[q.id] - 1, 0)].append(q)
    live: dict[str, date] = {}  # watch id -> the day its question was asked
    question_of: dict[str, str] = {}
    watches.alerts.advance(None, 0, [])
    started = time.perf_counter()
    matching = 0.0
    for i, (day, batch) in enumerate(replay.commits):
        for q in register.get(i, []):
            made = watches.watches.add(q.question, None, min_confidence=FLOOR_CONFIDENCE)
            live[made.watch.id] = q.asked_on or day
            question_of[made.watch.id] = q.id
        for watch_id, asked in list(live.items()):
            if day > asked + timedelta(days=KEEP_DAYS):
                watches.watches.remove(watch_id)
                del live[watch_id]
        ingestor.ingest(batch, progress=False)
        clock = time.perf_counter()
        reader = store.reader()
        start = watches.alerts.cursor() or 0
        ids = reader.chunk_ids()
        found = matcher.match(reader, ids[ids > start], as_of=day)
        matching += time.perf_counter() - clock
        for f in found:
            q = replay.questions[question_of[f.watch_id]]
            short = (f.answer.get("short_answer") or {}).get("text") or ""
            right = _holds(f, q.answers)
            replay.reads.append(Read(q.id, i, f.story, f.near, f.confidence, right, f.overlap, short))
        told = watches.alerts.told([(f.watch_id, f.story) for f in found])
        passing = strongest(
            [
                f
                for f in found
                if f.near >= DEFAULT_NEAR
                and f.overlap >= DEFAULT_OVERLAP
                and f.confidence >= DEFAULT_MIN_CONFIDENCE
                and (f.watch_id, f.story) not in told
            ],
            lambda f: f.watch_id,
        )
        by_key = {(f.watch_id, f.story): f for f in passing}
        for alert in watches.alerts.advance(start, int(ids.max()) if ids.size else 0, passing) or []:
            replay.stored.append((question_of[alert.watch_id], by_key[alert.watch_id, alert.story]))
        if i % 50 == 0 or i == len(replay.commits) - 1:
            print(
                f"  commit {i + 1}/{len(replay.commits)} ({day}): {len(replay.reads)} pairs read, "
                f"{len(replay.stored)} alerts stored, {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    count = sum(len(b) for _, b in replay.commits)
    print(
        f"\nreplayed in {time.perf_counter() - started:.0f} s; matching {matching:.1f} s in all, "
        f"{matching / count * 1000:.1f} ms an article (at most 8 pairs read), "
        f"{matcher.scorer.reads} pairs read"
    )


def _report(replay: Replay) -> None:
    tune, check = replay.half(True), replay.half(False)
    print(
        "\nTune half, the thresholds swept: precision / recall over the questions whose answer stands "
        "in the gold text"
    )
    print("| cosine, word share \\ confidence | " + " | ".join(f"{c:.1f}" for c in CONFIDENCES) + " |")
    print("|---" * (len(CONFIDENCES) + 1) + "|")
    grid: dict[tuple[float, float, float], dict[str, float]] = {}
    for near, overlap in itertools.product(NEARS, OVERLAPS):
        cells = []
        for confidence in CONFIDENCES:
            grid[near, overlap, confidence] = s = _scores(replay, tune, near, overlap, confidence)
            cells.append(f"{s['precision_text']:.2f} / {s['recall']:.2f}")
        print(f"| {near:.2f}, {overlap:.2f} | " + " | ".join(cells) + " |")
    good = [k for k, s in grid.items() if s["precision_text"] >= 0.9]
    chosen = max(good or grid, key=lambda k: grid[k]["recall"] if good else grid[k]["precision_text"])
    print(
        f"\nbest recall at precision >= 0.90 (tune): cosine {chosen[0]}, words {chosen[1]}, "
        f"confidence {chosen[2]}"
    )
    served = (DEFAULT_NEAR, DEFAULT_OVERLAP, DEFAULT_MIN_CONFIDENCE)
    print(
        "| questions | cosine, words, confidence | alerts | precision (all) | precision (answer in text) "
        "| recall (answer in text) | recall (all) | median delay (commits) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, half in (("tune", tune), ("check", check)):
        for label, (near, overlap, confidence) in (("best at p >= 0.9", chosen), ("served", served)):
            s = _scores(replay, half, near, overlap, confidence)
            print(
                f"| {name} ({len(half)}) | {label}: {near}, {overlap}, {confidence} | {s['alerts']} "
                f"| {s['precision']:.3f} | {s['precision_text']:.3f} | {s['recall']:.3f} "
                f"| {s['recall_all']:.3f} | {s['delay']:.0f} |"
            )
    right = sum(_holds(f, replay.questions[q].answers) for q, f in replay.stored)
    print(
        f"stored by the served path at the defaults (both halves): {len(replay.stored)} alerts, "
        f"{right} right "
        f"({right / max(1, len(replay.stored)):.3f})"
    )


def _cost(replay: Replay, store: IndexStore, answerer: Answerer, watches: WatchTables, count: int) -> None:
    """The matcher over the replay's last 300 articles, as new, one at a time, at ``count`` watches."""
    for watch in watches.watches.watches(everyone=True):
        watches.watches.remove(watch.id)
    watches.alerts.advance(watches.alerts.cursor(), 0, [])  # the watches below see the whole replay as news
    for text in _texts(replay, count):
        watches.watches.add(text, None)
    reader = store.reader()
    recent = [a for _, batch in replay.commits[-60:] for a in batch][-300:]
    entries = [e for e in (reader.entry(a.id) for a in recent) if e is not None]
    matcher = WatchMatcher(watches, answerer, render_answer)
    matcher.match(reader, np.array(entries[0].chunk_ids[:1]), as_of=None)  # vectors embedded, stored
    matcher.scorer.reads = 0
    spent = []
    for e in entries:
        clock = time.perf_counter()
        matcher.match(reader, np.array(e.chunk_ids[:1], dtype=np.int64), as_of=e.published)
        spent.append((time.perf_counter() - clock) * 1000)
    print(
        f"\nMatching at {count} watches, {len(spent)} articles as new, one at a time: mean "
        f"{np.mean(spent):.1f} ms, p50 {np.percentile(spent, 50):.1f}, p95 {np.percentile(spent, 95):.1f} ms "
        f"an article; {matcher.reads / len(spent):.2f} distinct questions read an article"
    )
    watches.alerts.advance(
        watches.alerts.cursor(), int(reader.chunk_ids().max()), []
    )  # servers find nothing new


def _texts(replay: Replay, count: int) -> list[str]:
    """``count`` distinct questions: the tune half's, numbered once they run out."""
    texts = [q.question for q in replay.half(True).values()]
    return [texts[i % len(texts)] + ("" if i < len(texts) else f" ({i // len(texts)})") for i in range(count)]


def _ask_latency(replay: Replay, data_dir: Path, watches: WatchTables, count: int, requests: int) -> None:
    """/ask over HTTP against `rag serve` with no watch, then with ``count``."""
    settings = IndexSettings.under(data_dir / "index")
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(data_dir),
        "TIKTOKEN_CACHE_DIR": str(settings.tiktoken_cache_dir),
    }
    sample = list(replay.half(True).values())[:50]
    p50 = {}
    print(f"\n/ask, one client over HTTP, {requests} requests a phase, the server alone")
    print("| watches | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|")
    for watched in (0, count):
        for watch in watches.watches.watches(everyone=True):
            watches.watches.remove(watch.id)
        for text in _texts(replay, watched):
            watches.watches.add(text, None)
        if watched:  # the server finds the vectors stored, as after its first start
            embedder = packaged_embedder(settings, core_count())
            store = IndexStore(data_dir / "index", embedder.name, embedder.dimension)
            matcher = WatchMatcher(watches, Answerer(store, embedder, AnswerSettings()), render_answer)
            matcher.match(store.reader(), np.zeros(0, dtype=np.int64), as_of=None)
            store.close()
        times = []
        with (
            serving(env, data_dir / f"serve-{watched}.log", "--rate-per-address", "0") as base,
            httpx.Client(base_url=base, timeout=120) as http,
        ):
            for i in range(requests):
                q = sample[i % len(sample)]
                clock = time.perf_counter()
                response = http.post("/ask", json={"question": q.question, "as_of": str(q.asked_on)})
                times.append((time.perf_counter() - clock) * 1000)
                response.raise_for_status()
        p50[watched], p95, p99 = np.percentile(times, [50, 95, 99])
        print(f"| {watched} | {p50[watched]:.1f} | {p95:.1f} | {p99:.1f} |", flush=True)
    print(f"p50 with {count} watches / none: {p50[count] / p50[0]:.2f}x")


def _plot(path: Path, replay: Replay) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tune = replay.half(True)
    figure, axis = plt.subplots(figsize=(6, 4))
    for near in (0.3, 0.35, DEFAULT_NEAR):
        rows = [_scores(replay, tune, near, DEFAULT_OVERLAP, c) for c in CONFIDENCES]
        recall, precision = [r["recall"] for r in rows], [r["precision_text"] for r in rows]
        axis.plot(recall, precision, "o-", label=f"cosine >= {near}")
    axis.axhline(0.9, color="grey", linestyle=":", linewidth=1)
    axis.axvline(0.8, color="grey", linestyle=":", linewidth=1)
    axis.set(xlabel="recall (questions whose answer stands in the text)", ylabel="precision of their alerts")
    axis.set(xlim=(0, 1), ylim=(0, 1))
    axis.set_title(f"Watches replayed (tune half): confidence 0.1-0.9, word share {DEFAULT_OVERLAP}")
    axis.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", nargs="?", type=Path, default=ROOT / "evals/datasets/realtimeqa-briefs")
    parser.add_argument("--days", type=int, default=0, help="replay only the first N commits (0: all)")
    parser.add_argument("--cost-watches", type=int, nargs="*", default=[1000, 10_000])
    parser.add_argument("--ask-watches", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200, help="HTTP requests a phase (0: none)")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--dump", type=Path, help="write every pair read as JSON lines here")
    args = parser.parse_args()
    replay = _prepare(args.dataset, args.days)
    work = Path(tempfile.mkdtemp(prefix="newsrag-watches-"))
    data = work / "data"
    settings = IndexSettings.under(data / "index")
    embedder = packaged_embedder(settings, core_count())
    store = IndexStore(data / "index", embedder.name, embedder.dimension)
    answerer = Answerer(store, embedder, AnswerSettings())
    watches = WatchTables.open(data / "service.sqlite")
    count = sum(len(b) for _, b in replay.commits)
    print(
        f"{args.dataset.name}: {count} articles in {len(replay.commits)} daily commits, "
        f"{len(replay.questions)} questions ({len(replay.verbatim)} whose answer stands in the gold text); "
        f"threads {core_count()}",
        flush=True,
    )
    try:
        _replay(replay, store, answerer, watches)
        if args.dump:
            with args.dump.open("w") as out:
                for r in replay.reads:
                    out.write(json.dumps(dataclasses.asdict(r) | {"tune": in_tune_half(r.question)}) + "\n")
        _report(replay)
        if args.plot:
            _plot(args.plot, replay)
            print(f"wrote {args.plot}")
        for count in args.cost_watches:
            _cost(replay, store, answerer, watches, count)
        store.close()
        if args.requests:
            _ask_latency(replay, data, watches, args.ask_watches, args.requests)
    finally:
        watches.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
