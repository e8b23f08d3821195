"""Choose the abstention threshold from data.

For each dev question we take the score of the best passage the system retrieves (the question is
answerable from the index) and the score of the best passage from an article that is *not* gold (what
the system would see if the index did not hold the story: a hard case, since the nearest other article
is often on the same topic). A wrong refusal costs more than a weak answer that still cites its sources,
so the rule is: the highest threshold that keeps at least 95% of the answerable questions of one half
(by hash of the id); it is then checked on the other half. The best-balanced threshold is printed too.

    python -m evals.fit.calibrate evals/datasets/realtimeqa-articles evals/datasets/realtimeqa-briefs
"""

from __future__ import annotations

import sys

import numpy as np

from evals import fit
from evals.split import in_tune_half
from index.config import Settings

SEARCH_DEPTH = 50
KEEP_ANSWERABLE = 0.95


def _balanced_accuracy(pos: np.ndarray, neg: np.ndarray, threshold: float) -> float:
    return float(((pos >= threshold).mean() + (neg < threshold).mean()) / 2)


def main(argv: list[str] | None = None) -> int:
    parser = fit.parser(__doc__)
    parser.add_argument("--limit", type=int, default=500, help="questions per dataset")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    scores: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
    for chosen in fit.fit_sets(args.datasets, settings):
        answerer = chosen.answerer
        for q in chosen.dataset.questions[: args.limit]:
            if not q.answerable:
                continue
            hits = answerer.search(answerer.question(q.question, as_of=q.asked_on, top_k=SEARCH_DEPTH))
            if not hits:
                continue
            # The same quantity the Answerer abstains on: the best question-passage cosine among the
            # passages it would answer from (not the ranker score: it is not comparable across questions).
            negatives = [h.similarity for h in hits if h.article.id not in q.gold_ids]
            pos, neg = scores[in_tune_half(q.id)]
            pos.append(max(h.similarity for h in hits[: settings.top_k]))
            if negatives:
                neg.append(max(negatives))
    tune_pos, tune_neg = (np.array(s) for s in scores[True])
    check_pos, check_neg = (np.array(s) for s in scores[False])
    grid = np.round(np.arange(0.05, 0.8, 0.01), 2)
    balanced = max(grid, key=lambda t: _balanced_accuracy(tune_pos, tune_neg, float(t)))
    best = max(t for t in grid if (tune_pos >= t).mean() >= KEEP_ANSWERABLE)
    print(
        f"tune half: {tune_pos.size} answerable, {tune_neg.size} not; "
        f"check half: {check_pos.size}, {check_neg.size}"
    )
    print(
        f"answerable best-passage score: median {np.median(check_pos):.3f}, "
        f"p10 {np.percentile(check_pos, 10):.3f}"
    )
    print(
        f"not-in-index best-passage score: median {np.median(check_neg):.3f}, "
        f"p90 {np.percentile(check_neg, 90):.3f}"
    )
    for t in sorted({float(best), float(balanced), 0.2, 0.3, 0.37, 0.4}):
        print(
            f"threshold {t:.2f}: balanced accuracy tune {_balanced_accuracy(tune_pos, tune_neg, t):.3f}, "
            f"check {_balanced_accuracy(check_pos, check_neg, t):.3f}; answerable kept on check "
            f"{(check_pos >= t).mean():.3f}, not-in-index refused on check {(check_neg < t).mean():.3f}"
        )
    print(f"best balanced accuracy on tune: {balanced:.2f}")
    print(f"chosen (keeps >= {KEEP_ANSWERABLE:.0%} of answerable on tune): {best:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
