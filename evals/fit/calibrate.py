"""Fit the abstention model (rag/abstain.py) from data, on the tune half; report it on the check half.

For each answerable dev question, two cases: the passages the service retrieves (the story is in the
index: it should answer), and the passages it retrieves when the gold articles (and every copy of their
stories) are left out of the index (the story is missing: it should refuse; a hard case, since the
nearest other article is usually on the same topic). A logistic regression over the evidence features
is fitted on the tune half (by hash of the question id); its threshold is the highest that keeps 95% of
the answerable tune questions, counting those the number rule refuses (a wrong refusal costs more than a
weak answer that still cites its sources). Both halves are reported beside the first version's rule
(best cosine below 0.34), and the model is written to rag/abstain.json.

    python -m evals.fit.calibrate evals/datasets/realtimeqa-articles evals/datasets/realtimeqa-briefs \
      [--rows build/calibrate-rows.npz]          # keep the features; --from-rows refits in seconds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from evals import fit
from evals.split import in_tune_half
from index.errors import ConfigError
from rag import Filters
from rag.abstain import DEFAULT_PATH, FEATURES, Abstainer
from rag.answer import DEFAULT_ABSTAIN_BELOW, DEFAULT_COMPOSE_PASSAGES

SEARCH_DEPTH = 20
KEEP_ANSWERABLE = 0.95


def main(argv: list[str] | None = None) -> int:
    parser = fit.parser(__doc__)
    parser.add_argument("--limit", type=int, default=800, help="questions per dataset")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--rows", type=Path, help="also save the feature rows here (.npz)")
    parser.add_argument("--from-rows", type=Path, help="refit from rows saved by --rows, retrieving nothing")
    args = parser.parse_args(argv)
    try:
        Abstainer.load(args.out)
    except ConfigError:  # the features changed: answerers must open while the model is refitted
        n = len(FEATURES)
        neutral = Abstainer(np.zeros(n), np.ones(n), np.zeros(n), 0.0, 0.0)
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
    mean, scale = x_tune.mean(axis=0), x_tune.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, max_iter=1000).fit((x_tune - mean) / scale, y_tune)
    draft = Abstainer(mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0]), 0.0)
    # The threshold keeps 95% of the answerable tune questions counting the number rule's refusals too.
    by_rule = FEATURES.index("wanted_missing")
    answerable_tune = np.array(
        [-1.0 if r[by_rule] else draft.answerable(r) for r, y in zip(x_tune, y_tune, strict=True) if y == 1]
    )
    threshold = float(np.quantile(answerable_tune, 1 - KEEP_ANSWERABLE))
    abstainer = Abstainer(draft.mean, draft.scale, draft.weights, draft.bias, threshold)
    print("| half | rule | answerable kept | story missing refused |")
    print("|---|---|---|---|")
    for half, name in ((True, "tune"), (False, "check")):
        x, y = np.vstack(rows[half]), np.array(labels[half])
        cosine_kept = x[:, FEATURES.index("cosine")] >= DEFAULT_ABSTAIN_BELOW
        model_kept = np.array([not abstainer.abstains(r) for r in x])
        for rule, kept in (
            (f"cosine >= {DEFAULT_ABSTAIN_BELOW}", cosine_kept),
            ("evidence model", model_kept),
        ):
            print(
                f"| {name} ({(y == 1).sum()} + {(y == 0).sum()}) | {rule} | {kept[y == 1].mean():.3f} | "
                f"{(~kept[y == 0]).mean():.3f} |"
            )
    for feature, weight in zip(FEATURES, abstainer.weights, strict=True):
        print(f"{feature:<16} {weight:+.3f}")
    command = "python -m evals.fit.calibrate " + " ".join(map(str, args.datasets))
    args.out.write_text(abstainer.to_json(command=command, keep_answerable=KEEP_ANSWERABLE) + "\n")
    print(f"threshold {threshold:.4f}; wrote {args.out}")
    return 0


def _gather(args: argparse.Namespace) -> tuple[dict[bool, list[np.ndarray]], dict[bool, list[int]]]:
    """Feature rows and labels (1: the story is in the index), by half (True: tune)."""
    rows: dict[bool, list[np.ndarray]] = {True: [], False: []}
    labels: dict[bool, list[int]] = {True: [], False: []}
    for chosen in fit.fit_sets(args.datasets):
        answerer = chosen.answerer
        questions = [q for q in chosen.dataset.questions if q.answerable][: args.limit]
        vectors = answerer.embedder.embed([q.question for q in questions])
        catalog = answerer.store.snapshot().catalog
        for q, vector in zip(questions, vectors, strict=True):
            hits = answerer.retriever.retrieve(q.question, vector, SEARCH_DEPTH, Filters(), q.asked_on)
            # The story missing: retrieve again with the gold articles, and their stories' other copies,
            # left out of the index, so the passages that remain are ranked among themselves.
            stories = {catalog.stories[catalog.slot_of[g]] for g in q.gold_ids if g in catalog.slot_of}
            gone = {catalog.article_ids[s] for story in stories for s in catalog.copies(story)} | set(
                q.gold_ids
            )
            missing = answerer.retriever.retrieve(
                q.question, vector, SEARCH_DEPTH, Filters(exclude=tuple(sorted(gone))), q.asked_on
            )
            tune = in_tune_half(q.id)
            for passages, label in (
                (hits[:DEFAULT_COMPOSE_PASSAGES], 1),
                (missing[:DEFAULT_COMPOSE_PASSAGES], 0),
            ):
                if not passages:
                    continue
                quoted = answerer.quotes.compose(q.question, vector, passages)
                rows[tune].append(answerer.evidence(q.question, passages, quoted))
                labels[tune].append(label)
    return rows, labels


if __name__ == "__main__":
    sys.exit(main())
