"""Fit the abstention model (rag/abstain.py) from data, on the tune half; report it on the check half.

For each answerable dev question, two cases: the passages the service retrieves (the story is in the
index: it should answer), and the passages it retrieves when the gold articles (and every copy of their
stories) are left out of the index (the story is missing: it should refuse; a hard case, since the
nearest other article is usually on the same topic). A logistic regression over the evidence features
is fitted on the tune half (by hash of the question id); its threshold is the highest that keeps 95% of
the answerable tune questions, counting those the number rule refuses (a wrong refusal costs more than a
weak answer that still cites its sources). Both halves are reported beside the first version's rule
(best cosine below 0.34) and the model served before this fit (the file being replaced), the trade-off
curves of all three on the check half are plotted (``--plot``), and the model is written to
rag/abstain.json.

    python -m evals.fit.calibrate evals/datasets/realtimeqa-articles evals/datasets/realtimeqa-briefs \
      [build/searched/tune]                      # python -m evals.searched --split tune --out ...
      [--rows build/calibrate-rows.npz]          # keep the features; --from-rows refits in seconds
      [--plot evals/abstention-tradeoff.png]

A set may hold questions it marks unanswerable (the searched news pages, evals/searched.py, whose
pages never state the answer): each gives one row to refuse, from the passages retrieved as they are.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

from evals import fit
from evals.split import in_tune_half
from index.errors import ConfigError
from rag import Filters
from rag.abstain import DEFAULT_PATH, FEATURES, Abstainer, focus_bar, ruled
from rag.answer import DEFAULT_ABSTAIN_BELOW, DEFAULT_COMPOSE_PASSAGES
from rag.linear import LogisticModel

SEARCH_DEPTH = 20
KEEP_ANSWERABLE = 0.95


def main(argv: list[str] | None = None) -> int:
    parser = fit.parser(__doc__)
    parser.add_argument("--limit", type=int, default=800, help="questions per dataset")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--rows", type=Path, help="also save the feature rows here (.npz)")
    parser.add_argument("--from-rows", type=Path, help="refit from rows saved by --rows, retrieving nothing")
    parser.add_argument("--plot", type=Path, help="draw the check half's trade-off curves here (.png)")
    args = parser.parse_args(argv)
    before: Abstainer | None = None
    try:
        before = Abstainer.load(args.out)
    except ConfigError:  # the features changed: answerers must open while the model is refitted
        n = len(FEATURES)
        neutral = LogisticModel(FEATURES, np.zeros(n), np.ones(n), np.zeros(n), 0.0, {"threshold": 0.0})
        args.out.write_text(neutral.to_json(command="placeholder while refitting") + "\n")
    if args.from_rows:
        saved = np.load(args.from_rows)
        rows = {h: list(saved[f"x_{h}"]) for h in (True, False)}
        labels = {h: list(saved[f"y_{h}"]) for h in (True, False)}
    else:
        rows, labels = _gather(args)
    if args.rows:  # the features, for refitting without retrieving again
        arrays: dict[str, Any] = {f"x_{h}": np.vstack(rows[h]) for h in rows}
        arrays.update({f"y_{h}": np.array(labels[h]) for h in rows})
        np.savez(args.rows, allow_pickle=False, **arrays)
    x_tune, y_tune = np.vstack(rows[True]), np.array(labels[True])
    draft = Abstainer(LogisticModel.fitted(FEATURES, x_tune, y_tune, threshold=0.0))
    # The threshold keeps 95% of the answerable tune questions counting the rules' refusals too.
    answerable_tune = np.array(
        [-1.0 if ruled(r) else draft.answerable(r) for r, y in zip(x_tune, y_tune, strict=True) if y == 1]
    )
    threshold = float(np.quantile(answerable_tune, 1 - KEEP_ANSWERABLE))
    focus = x_tune[:, FEATURES.index("focus_missing")] > 0
    probability = np.array([draft.answerable(r) for r in x_tune[focus]])
    bar = focus_bar(probability, y_tune[focus] == 1)
    abstainer = Abstainer(
        dataclasses.replace(draft.model, extra={"threshold": threshold, "focus_below": bar})
    )
    print("| half | rule | answerable kept | story missing refused |")
    print("|---|---|---|---|")
    for half, name in ((True, "tune"), (False, "check")):
        x, y = np.vstack(rows[half]), np.array(labels[half])
        signals = _signals(abstainer, before, x)
        for rule, (score, forced, threshold) in signals.items():
            kept = ~forced & (score >= threshold)
            print(
                f"| {name} ({(y == 1).sum()} + {(y == 0).sum()}) | {rule} | {kept[y == 1].mean():.3f} | "
                f"{(~kept[y == 0]).mean():.3f} |"
            )
    if args.plot:
        x, y = np.vstack(rows[False]), np.array(labels[False])
        _plot(args.plot, _signals(abstainer, before, x), y)
        print(f"wrote {args.plot}")
    for feature, weight in zip(FEATURES, abstainer.weights, strict=True):
        print(f"{feature:<16} {weight:+.3f}")
    command = "python -m evals.fit.calibrate " + " ".join(map(str, args.datasets))
    args.out.write_text(abstainer.model.to_json(command=command, keep_answerable=KEEP_ANSWERABLE) + "\n")
    print(f"threshold {threshold:.4f}, focus_below {bar:.4f}; wrote {args.out}")
    return 0


Signal = tuple[np.ndarray, np.ndarray, float]
"""Each row's score, the rows a rule refuses whatever the score, and the served threshold."""


def _signals(abstainer: Abstainer, before: Abstainer | None, x: np.ndarray) -> dict[str, Signal]:
    """The ways to refuse, by name: the first version's cosine rule, the model served before (with the
    rules and bar it had), and the new one."""
    out: dict[str, Signal] = {
        f"cosine >= {DEFAULT_ABSTAIN_BELOW}": (
            x[:, FEATURES.index("cosine")],
            np.zeros(len(x), bool),
            DEFAULT_ABSTAIN_BELOW,
        )
    }
    if before is not None:
        out["evidence model before"] = _signal(before, x)
    out["evidence model"] = _signal(abstainer, x)
    return out


def _signal(abstainer: Abstainer, x: np.ndarray) -> Signal:
    """The model's scores, what its rules (and the asked-for thing's bar) refuse whatever the threshold,
    and its threshold."""
    score = np.array([abstainer.answerable(r) for r in x])
    focus = x[:, FEATURES.index("focus_missing")] > 0
    forced = np.array([ruled(r) for r in x]) | (focus & (score < abstainer.focus_below))
    return score, forced, abstainer.threshold


def _plot(path: Path, signals: dict[str, Signal], y: np.ndarray) -> None:
    """Share of missing stories refused against share of answerable questions kept, as the threshold
    moves; each served threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for name, (score, forced, threshold) in signals.items():
        cuts = np.unique(np.concatenate([score, [threshold, -np.inf, np.inf]]))
        kept = np.array([(~forced & (score >= t))[y == 1].mean() for t in cuts])
        refused = np.array([(forced | (score < t))[y == 0].mean() for t in cuts])
        (line,) = axes.plot(kept, refused, label=name)
        at = ~forced & (score >= threshold)
        axes.plot(at[y == 1].mean(), (~at[y == 0]).mean(), "o", color=line.get_color())
    axes.axvline(KEEP_ANSWERABLE, color="grey", linestyle=":", linewidth=1)
    axes.axhline(0.8, color="grey", linestyle=":", linewidth=1)
    axes.set_xlim(0.5, 1.0)
    axes.set_xlabel("answerable questions kept (check half)")
    axes.set_ylabel("missing stories refused (check half)")
    axes.set_title("Refusing when the story is missing: the trade-off")
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _gather(args: argparse.Namespace) -> tuple[dict[bool, list[np.ndarray]], dict[bool, list[int]]]:
    """Feature rows and labels (1: the story is in the index), by half (True: tune)."""
    rows: dict[bool, list[np.ndarray]] = {True: [], False: []}
    labels: dict[bool, list[int]] = {True: [], False: []}
    for chosen in fit.fit_sets(args.datasets):
        answerer = chosen.answerer
        questions = list(chosen.dataset.questions[: args.limit])
        vectors = answerer.embedder.embed([q.question for q in questions])
        reader = answerer.index.reader()
        for q, vector in zip(questions, vectors, strict=True):
            question = answerer.question(q.question, as_of=q.asked_on, top_k=SEARCH_DEPTH)
            hits = answerer.retriever.retrieve(question, vector, reader)
            tune = in_tune_half(q.id)
            if not q.answerable:  # a set's own unanswerable question (searched pages that never say)
                if hits:
                    passages = hits[:DEFAULT_COMPOSE_PASSAGES]
                    quoted = answerer.quotes.compose(question, vector, passages, reader)
                    rows[tune].append(answerer.evidence(question, passages, quoted, reader))
                    labels[tune].append(0)
                continue
            # The story missing: retrieve again with the gold articles, and their stories' other copies,
            # left out of the index, so the passages that remain are ranked among themselves.
            stories = {e.story for e in map(reader.entry, q.gold_ids) if e is not None}
            gone = {copy.article_id for story in stories for copy in reader.story(story)} | set(q.gold_ids)
            without = answerer.question(
                q.question, as_of=q.asked_on, top_k=SEARCH_DEPTH, filters=Filters(exclude=tuple(sorted(gone)))
            )
            missing = answerer.retriever.retrieve(without, vector, reader)
            for passages, label in (
                (hits[:DEFAULT_COMPOSE_PASSAGES], 1),
                (missing[:DEFAULT_COMPOSE_PASSAGES], 0),
            ):
                if not passages:
                    continue
                quoted = answerer.quotes.compose(question, vector, passages, reader)
                rows[tune].append(answerer.evidence(question, passages, quoted, reader))
                labels[tune].append(label)
    return rows, labels


if __name__ == "__main__":
    sys.exit(main())
