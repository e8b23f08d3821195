"""Report files: metrics.json, summary.md, failures.csv, hit_at_k.png, junit.xml."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from evals.evaluate import Evaluation, hit_curve
from evals.harness import ANSWER_METRICS, RETRIEVAL_METRICS


def write_report(
    folder: Path, evaluation: Evaluation, checks: list[tuple[str, float, float | None, bool]]
) -> list[Path]:
    """Write every report file into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        _write_json(folder / "metrics.json", evaluation.metrics),
        _write_summary(folder / "summary.md", evaluation.metrics),
        _write_failures(folder / "failures.csv", evaluation),
        _write_plot(folder / "hit_at_k.png", evaluation),
        _write_junit(folder / "junit.xml", evaluation.metrics, checks),
    ]


def _write_json(path: Path, metrics: dict[str, Any]) -> Path:
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return path


def _fmt(value: object) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _write_summary(path: Path, metrics: dict[str, Any]) -> Path:
    baselines: dict[str, Any] = metrics.get("baselines", {})
    names = ["system", *baselines]
    lines = [
        f"# {metrics['dataset']}: {metrics['questions']} questions "
        f"({metrics['answerable']} answerable), k={metrics['k']}",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key in RETRIEVAL_METRICS:
        row = [_fmt(metrics.get(key))]
        for base in baselines.values():
            value = base.get(key)
            test = base["vs_system"].get(key)
            mark = f" (p={test['p_value']:.3f})" if test else ""
            row.append(_fmt(value) + mark)
        lines.append(f"| {key} | " + " | ".join(row) + " |")
    lines += ["", "p: Fisher's paired randomization test of the system against that baseline.", ""]
    lines += ["| answer metric | system |", "|---|---|"]
    lines += [f"| {key} | {_fmt(metrics.get(key))} |" for key in ANSWER_METRICS]
    dialogues = metrics.get("dialogues")
    if dialogues:
        lines += [
            "",
            f"| dialogues ({dialogues['dialogues']}) | turns | leaned | story@3 with / alone | "
            "hit@1 with / alone | p (story@3) |",
            "|---|---|---|---|---|---|",
        ]
        for kind in ("follow-up", "new-subject"):
            part = dialogues.get(kind)
            if part:
                h, a = part["history"], part["alone"]
                p = part["history_vs_alone"].get("story@3", {}).get("p_value")
                lines.append(
                    f"| {kind} | {part['turns']} | {_fmt(part['leaned'])} | {_fmt(h['story@3'])} / "
                    f"{_fmt(a['story@3'])} | {_fmt(h['hit@1'])} / {_fmt(a['hit@1'])} | {_fmt(p)} |"
                )
    lines += ["", "| stage | p50 ms | p95 ms |", "|---|---|---|"]
    lines += [f"| {s} | {v['p50']} | {v['p95']} |" for s, v in metrics["latency_ms"].items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_failures(path: Path, evaluation: Evaluation) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "id",
                "question",
                "asked_on",
                "gold_ids",
                "gold_answers",
                "retrieved",
                "abstained",
                "answer",
                "why",
            ]
        )
        for o in evaluation.outcomes:
            q = o.question
            retrieved_gold = bool(set(o.ranking[:1]) & set(q.gold_ids))
            why = []
            if q.answerable and not retrieved_gold:
                why.append("gold not ranked first")
            if q.answerable and not o.correct:
                why.append("answer lacks gold answer")
            if not q.answerable and not o.abstained:
                why.append("should have abstained")
            if not why:
                continue
            writer.writerow(
                [
                    q.id,
                    q.question,
                    q.asked_on.isoformat() if q.asked_on else "",
                    " ".join(q.gold_ids),
                    " | ".join(q.answers),
                    " ".join(o.ranking[:5]),
                    o.abstained,
                    o.answer,
                    "; ".join(why),
                ]
            )
    return path


def _write_plot(path: Path, evaluation: Evaluation) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    questions = [o.question for o in evaluation.outcomes]
    curves = {"system": hit_curve(questions, {o.question.id: o.ranking for o in evaluation.outcomes})}
    for name, ranking in evaluation.rankings.items():
        curves[name] = hit_curve(questions, ranking)
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        if curve:
            axes.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
    axes.set_xlabel("k")
    axes.set_ylabel("Hit@k (answerable questions)")
    axes.set_title(f"{evaluation.metrics['dataset']}: Hit@k")
    axes.set_xticks(range(1, 11))
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _write_junit(
    path: Path, metrics: dict[str, Any], checks: list[tuple[str, float, float | None, bool]]
) -> Path:
    suite = ET.Element(
        "testsuite",
        name=f"eval-gate.{metrics['dataset']}",
        tests=str(len(checks)),
        failures=str(sum(not ok for *_, ok in checks)),
    )
    for metric, minimum, value, ok in checks:
        case = ET.SubElement(
            suite, "testcase", classname=f"eval.{metrics['dataset']}", name=f"{metric}>={minimum}"
        )
        if not ok:
            failure = ET.SubElement(case, "failure", message=f"{metric} = {_fmt(value)} < {minimum}")
            failure.text = f"{metric} measured {_fmt(value)}, the gate asks at least {minimum}"
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
