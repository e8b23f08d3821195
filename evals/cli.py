"""`rag eval`: score the production pipeline on a dataset, write a report, gate on minimums."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Protocol

from evals.config import EvalSettings
from evals.dialogue import GATE_VALUES
from evals.harness import ANSWER_METRICS, RETRIEVAL_METRICS
from index.config import IndexSettings
from rag.config import AnswerSettings

GATE_METRICS = (*RETRIEVAL_METRICS, *ANSWER_METRICS, *GATE_VALUES, *(f"{m}_alone" for m in GATE_VALUES))


class Settings(Protocol):
    """The parts of the service's settings (api/config.py) that `rag eval` reads."""

    @property
    def index(self) -> IndexSettings: ...

    @property
    def answers(self) -> AnswerSettings: ...


def add_eval_command(commands: Any) -> None:
    """Register `rag eval` on the `rag` parser."""
    parser = commands.add_parser(
        "eval",
        help="score retrieval and answers on a dataset",
        description="Score the production pipeline on DATASET_DIR (corpus.jsonl + questions.jsonl) or on "
        "--corpus/--questions files. Each question is asked with as_of = its asked_on date.",
    )
    parser.add_argument("dataset", nargs="?", type=Path, metavar="DATASET_DIR")
    parser.add_argument("--corpus", type=Path, help="corpus JSONL (with --questions)")
    parser.add_argument("--questions", type=Path, help="questions JSONL (with --corpus or --feed)")
    parser.add_argument(
        "--feed",
        type=Path,
        metavar="FILE",
        help="a saved RSS/Atom feed or news sitemap as the corpus (with --questions): each entry's own text, "
        "as the poller would store it; gold_ids may be entry links",
    )
    parser.add_argument(
        "--dialogues",
        type=Path,
        help="dialogues JSONL to score as well (default: DATASET_DIR/dialogues.jsonl when there is one)",
    )
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--sample", type=int, help="a fixed sample of N questions (chosen by hash of the id)")
    parser.add_argument(
        "--split",
        choices=["tune", "check"],
        help="only the tune or the check half of the questions (evals/split.py); the ranker and thresholds "
        "were fitted on tune",
    )
    parser.add_argument(
        "--stage",
        choices=["full", "hybrid", "dense"],
        default="full",
        help="retrieval stage (evals/stages.py): full is what the API serves; hybrid is dense+BM25 fused "
        "by RRF; dense is plain dense search with the as_of cap",
    )
    parser.add_argument("--k", type=int, default=10, help="documents retrieved per question (default 10)")
    parser.add_argument("--baselines", action="store_true", help="also score BM25 and plain dense search")
    parser.add_argument("--report", type=Path, metavar="DIR", help="write metrics.json, summary.md, ...")
    parser.add_argument("--json", action="store_true", help="print the metrics JSON on stdout")
    parser.add_argument(
        "--min",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help=f"fail (exit 1) when METRIC is below VALUE; repeatable. METRIC: {', '.join(GATE_METRICS)}",
    )
    parser.add_argument(
        "--composer",
        choices=["extractive", "generative"],
        default="extractive",
        help="generative: answers written by the language model of RAG_LLM_BASE_URL / RAG_LLM_MODEL (or "
        "--llm-base-url / --llm-model), each sentence checked; groundedness then means checked and supported",
    )
    parser.add_argument("--llm-base-url", help="an OpenAI-compatible API (with --composer generative)")
    parser.add_argument("--llm-model", help="the model's name (with --composer generative)")
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="score through the index on this Ray cluster (its shards started when it has none: two "
        "shards, one replica); the dataset's corpus is ingested there first, articles already held skipped",
    )
    parser.add_argument(
        "--save-run",
        type=Path,
        metavar="FILE",
        help="write this run (per-question rankings, answers, citations, abstentions and scores, with the "
        "dataset's and the index's hashes and the code version) to FILE",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="FILE",
        help="compare with a run saved by --save-run on the same questions: fail (exit 1) on a metric that "
        "drops by more than its allowed delta (--max-drop, default 0) with p < 0.05",
    )
    parser.add_argument(
        "--max-drop",
        action="append",
        default=[],
        metavar="METRIC=DELTA",
        help="with --compare: the drop METRIC may take before it can fail; repeatable",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        metavar="FILE",
        help="with --compare: write the comparison as markdown to FILE (also appended to "
        "$GITHUB_STEP_SUMMARY when that is set)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_eval)


def parse_minimums(values: list[str]) -> list[tuple[str, float]]:
    minimums = []
    for value in values:
        metric, sep, number = value.partition("=")
        if not sep or metric not in GATE_METRICS:
            raise SystemExit(f"rag eval: --min takes METRIC=VALUE with METRIC in {', '.join(GATE_METRICS)}")
        try:
            minimums.append((metric, float(number)))
        except ValueError:
            raise SystemExit(f"rag eval: --min {value}: {number!r} is not a number") from None
    return minimums


def run_eval(settings: Settings, args: argparse.Namespace) -> int:
    from evals.evaluate import evaluate_dataset
    from evals.report import write_report
    from index import packaged_embedder
    from index.embed import core_count

    minimums = parse_minimums(args.min)
    if (args.max_drop or args.summary) and not args.compare:
        raise SystemExit("rag eval: --max-drop and --summary go with --compare")
    dataset = _dataset(settings, args)
    saved = _saved_run(args, dataset)
    progress = False if args.quiet else None
    embedder = packaged_embedder(settings.index, core_count())
    answerer = _answerer(dataset, settings, embedder, args, progress)
    evaluation = evaluate_dataset(
        answerer, dataset, args.k, None, args.baselines, progress
    )  # --limit: _dataset
    metrics = evaluation.metrics
    from evals.cache import rejected_records

    metrics["corpus_rejected"] = rejected_records(dataset.corpus, _eval_settings(settings))
    checks = []
    for metric, minimum in minimums:
        value = metrics.get(metric)
        checks.append((metric, minimum, value, value is not None and value >= minimum))
    metrics["gate"] = [
        {"metric": metric, "min": minimum, "value": value, "passed": ok}
        for metric, minimum, value, ok in checks
    ]
    if args.report:
        for path in write_report(args.report, evaluation, checks):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_table(metrics)
    failed = [c for c in checks if not c[3]]
    for metric, minimum, value, _ in failed:
        print(f"rag eval: gate failed: {metric} = {value} < {minimum}", file=sys.stderr)
    regressed = _save_and_compare(evaluation, dataset, saved, settings, args)
    return 1 if failed or regressed else 0


def _dataset(settings: Settings, args: argparse.Namespace) -> Any:
    """The questions to score: the dataset named, with --dialogues, --split, --sample and --limit
    applied."""
    from evals.data import Dataset, load_dataset, load_files

    if args.dataset and not (args.corpus or args.questions or args.feed):
        dataset = load_dataset(args.dataset)
    elif args.corpus and args.questions and not (args.dataset or args.feed):
        dataset = load_files(args.corpus, args.questions)
    elif args.feed and args.questions and not (args.dataset or args.corpus):
        from evals.feeds import feed_dataset

        dataset = feed_dataset(args.feed, args.questions, _eval_settings(settings).cache_dir / "feeds")
    else:
        raise SystemExit(
            "rag eval: give DATASET_DIR, both --corpus and --questions, or --feed and --questions"
        )
    if args.dialogues:
        from evals.data import load_dialogues

        dataset = dataclasses.replace(dataset, dialogues=tuple(load_dialogues(args.dialogues)))
    if args.split:
        from evals.split import in_tune_half

        wanted = args.split == "tune"
        dataset = Dataset(
            f"{dataset.name} ({args.split} half)",
            dataset.corpus,
            tuple(q for q in dataset.questions if in_tune_half(q.id) == wanted),
            tuple(d for d in dataset.dialogues if in_tune_half(d.id) == wanted),
        )
    if args.sample:
        chosen = sorted(dataset.questions, key=lambda q: hashlib.sha256(q.id.encode()).hexdigest())
        keep = {q.id for q in chosen[: args.sample]}
        questions = tuple(q for q in dataset.questions if q.id in keep)
        dataset = dataclasses.replace(dataset, questions=questions)
    if args.limit:
        dataset = dataclasses.replace(dataset, questions=dataset.questions[: args.limit])
    return dataset


def _save_and_compare(
    evaluation: Any, dataset: Any, saved: dict[str, Any] | None, settings: Settings, args: argparse.Namespace
) -> bool:
    """Write the run (--save-run) and compare it with the saved one (--compare); True on a regression."""
    if not (args.save_run or saved is not None):
        return False
    from evals.cache import index_key
    from evals.compare import make_run, save_run

    about = {
        "k": args.k,
        "stage": args.stage,
        "split": args.split,
        "sample": args.sample,
        "limit": args.limit,
    }
    run = make_run(evaluation, dataset, index_key(dataset.corpus, settings.index), about)
    if args.save_run:
        save_run(args.save_run, run)
        print(f"wrote {args.save_run}", file=sys.stderr)
    return saved is not None and _compared(saved, run, args)


def _saved_run(args: argparse.Namespace, dataset: Any) -> dict[str, Any] | None:
    """The run to compare with (read and checked against the dataset before anything is scored)."""
    if not args.compare:
        return None
    from evals.compare import comparable, dataset_hash, load_run, parse_max_drops

    parse_max_drops(args.max_drop)
    saved = load_run(args.compare)
    comparable(saved, dataset_hash(dataset), args.k)
    return saved


def _compared(saved: dict[str, Any], run: dict[str, Any], args: argparse.Namespace) -> bool:
    """Compare, print and write the summary; True when a metric regressed."""
    from evals.compare import compare, parse_max_drops, summary, write_summary

    comparison = compare(saved, run, parse_max_drops(args.max_drop))
    text = summary(comparison)
    print(text, file=sys.stderr if args.json else sys.stdout)
    for path in write_summary(text, args.summary):
        print(f"wrote {path}", file=sys.stderr)
    for v in comparison.failed:
        print(
            f"rag eval: regression against {args.compare}: {v.metric} {v.before} -> {v.after} "
            f"(mean change {v.difference:+.4f}, p={v.p_value:.3f}, allowed drop {v.allowed})",
            file=sys.stderr,
        )
    return bool(comparison.failed)


def _print_table(metrics: dict[str, Any]) -> None:
    print(f"{metrics['dataset']}: {metrics['questions']} questions ({metrics['answerable']} answerable)")
    for key in GATE_METRICS:
        value = metrics.get(key)
        line = f"  {key:<22} {'n/a' if value is None else f'{value:.4f}'}"
        for name, base in metrics.get("baselines", {}).items():
            if key in base:
                test = base["vs_system"].get(key, {})
                line += f"   {name} {base[key]:.4f} (p={test.get('p_value', float('nan')):.3f})"
        print(line)
    for stage, v in metrics["latency_ms"].items():
        unit = "" if stage.endswith("tokens") else " ms"
        print(f"  latency {stage:<14} p50 {v['p50']:.1f}{unit}  p95 {v['p95']:.1f}{unit}")
    for kind, part in metrics.get("dialogues", {}).items():
        if isinstance(part, dict) and "history" in part:
            h, a = part["history"], part["alone"]
            print(
                f"  dialogues, {kind:<11} {part['turns']} turns: story@3 {h['story@3']:.4f} with history, "
                f"{a['story@3']:.4f} alone; hit@1 {h['hit@1']:.4f} / {a['hit@1']:.4f}"
            )
    if "answers_generated" in metrics:
        print(f"  answers generated      {metrics['answers_generated']:.4f} of those not abstained")
        print(f"  fallbacks              {metrics['fallbacks'] or 'none'}")


def _eval_settings(settings: Settings) -> EvalSettings:
    return dataclasses.replace(EvalSettings.from_env(), index=settings.index)


def _answerer(
    dataset: Any, settings: Settings, embedder: Any, args: argparse.Namespace, progress: bool | None
) -> Any:
    """The Answerer to score: over the cached index of the dataset's corpus, or through the cluster."""
    from evals.cache import cached_answerer
    from evals.data import DatasetError
    from evals.stages import staged
    from index.tokens import encoding
    from rag.answer import make_composer, make_condenser

    if args.cluster:
        from index import load_paths, make_ingestor, open_index
        from index.config import ClusterSettings
        from rag import Answerer

        base_dir = str(settings.index.data_dir.parent / "cluster")
        index = dataclasses.replace(settings.index, cluster=ClusterSettings(args.cluster, base_dir))
        store = open_index(index, embedder)
        make_ingestor(index, store, embedder).ingest(load_paths([dataset.corpus]), progress=progress)
        answerer = staged(Answerer(store, embedder, settings.answers), args.stage)
    else:
        cached = cached_answerer(dataset.corpus, _eval_settings(settings), embedder, progress)
        answerer = staged(cached, args.stage)
    if args.composer == "generative":
        llm = dataclasses.replace(
            settings.answers,
            llm_base_url=args.llm_base_url or settings.answers.llm_base_url,
            llm_model=args.llm_model or settings.answers.llm_model,
        )
        if not llm.llm_base_url:
            raise DatasetError("--composer generative needs a model: --llm-base-url and --llm-model")
        tokens = encoding(settings.index.tiktoken_cache_dir)
        answerer.composer = make_composer(llm, embedder, tokens)
        answerer.condenser = make_condenser(llm)
    return answerer
