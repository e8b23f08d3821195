"""Choose the composer's sentence-score weights on the tune half; report the check half too.

python -m evals.fit.composer evals/datasets/realtimeqa-articles evals/datasets/realtimeqa-briefs
"""

from __future__ import annotations

import sys

from evals import fit
from evals.harness import answer_metrics, run_system
from evals.stages import with_retriever
from rag import ExtractiveComposer

GRID = [(0.7, 0.0, 0.3), (0.5, 0.25, 0.25), (0.4, 0.4, 0.2), (0.6, 0.2, 0.2), (0.3, 0.4, 0.3)]


def main(argv: list[str] | None = None) -> int:
    parser = fit.parser(__doc__)
    parser.add_argument("--per-dataset", type=int, default=300, help="questions per dataset and half")
    args = parser.parse_args(argv)
    sets = list(fit.fit_sets(args.datasets))
    print("weights (cosine, words, rank) | " + " | ".join(f"{f.name} tune / check" for f in args.datasets))
    for weights in GRID:
        cells = []
        for chosen in sets:
            base = chosen.answerer
            composer = ExtractiveComposer(
                base.embedder, sentence_weight=weights[0], lexical_weight=weights[1], rank_weight=weights[2]
            )
            answerer = with_retriever(base, base.retriever)
            answerer.composer = composer
            halves = []
            for tune in (True, False):
                questions = chosen.half(tune, answerable_only=False)[: args.per_dataset]
                outcomes = run_system(answerer, questions, 10, progress=False)
                halves.append(answer_metrics(outcomes)["answer_accuracy"])
            cells.append(" / ".join(f"{h:.3f}" for h in halves))
        print(f"{weights} | " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
