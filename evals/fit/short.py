"""Choose the reader's two thresholds on the tune half (rag/compose.py): ``answers_at``, the probability
at which a read sentence counts as stating the answer (it is then quoted first), and ``short_at``, the one
at which its span is given as the short answer.

For each pair of a grid, every answerable tune-half question is answered as served and scored: answer
accuracy; ``short hit``, the share of questions whose answer stands in the gold text that get a short
answer holding a gold one; and ``short precision``, the share of the short answers given that hold one.
Prints the table; the served pair is the one with the best short hit among those whose short precision is
at least ``--min-precision`` (a short answer is shown in bold: a wrong one misleads more than none) and
whose accuracy is within 0.01 of the best; ties go to the higher thresholds.

    python -m evals.fit.short evals/datasets/realtimeqa-articles evals/datasets/realtimeqa-briefs \
        [--limit 300]
"""

from __future__ import annotations

import itertools
import sys

import numpy as np

from evals import fit
from evals.harness import outcome_of, short_answer_scores

ANSWERS_AT = (0.02, 0.1, 0.25, 0.5)
SHORT_AT = (0.1, 0.25, 0.5, 0.75, 0.9)


def main(argv: list[str] | None = None) -> int:
    parser = fit.parser(__doc__)
    parser.add_argument("--limit", type=int, default=300, help="tune-half questions per dataset")
    parser.add_argument("--min-precision", type=float, default=2 / 3)
    args = parser.parse_args(argv)
    sets = [(s.answerer, s.half(True)[: args.limit]) for s in fit.fit_sets(args.datasets)]
    print(f"{sum(len(q) for _, q in sets)} answerable tune-half questions")
    print("| answers_at | short_at | answer accuracy | short hit | short precision |")
    print("|---|---|---|---|---|")
    results = {}
    for answers_at, short_at in itertools.product(ANSWERS_AT, SHORT_AT):
        if short_at < answers_at:
            continue  # a short answer is the lead quote's span: never below the quoting bar
        correct, hits, given = [], [], []
        for answerer, questions in sets:
            answerer.quotes.answers_at, answerer.quotes.short_at = answers_at, short_at
            for q in questions:
                outcome = outcome_of(
                    answerer, q, answerer.ask(answerer.question(q.question, as_of=q.asked_on))
                )
                correct.append(outcome.correct)
                hit = short_answer_scores(outcome)[0]
                if outcome.answer_in_gold:
                    hits.append(hit)
                if outcome.short_answer:
                    given.append(hit)
        row = (float(np.mean(correct)), float(np.mean(hits)), float(np.mean(given)) if given else 0.0)
        results[(answers_at, short_at)] = row
        print(f"| {answers_at} | {short_at} | {row[0]:.3f} | {row[1]:.3f} | {row[2]:.3f} |", flush=True)
    best_accuracy = max(r[0] for r in results.values())
    usable = {k: r for k, r in results.items() if r[2] >= args.min_precision and r[0] >= best_accuracy - 0.01}
    if not usable:
        print("no pair keeps the precision; the reader gives no short answers it can stand behind")
        return 1
    answers_at, short_at = max(usable, key=lambda k: (usable[k][1], k))
    print(f"chosen: answers_at {answers_at}, short_at {short_at} (set them in rag/compose.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
