"""Choose the composer's sentence-score weights on the tune half; report the check half too.

python -m evals.tune_composer evals/datasets/realtimeqa-articles evals/datasets/realtimeqa-briefs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evals.cache import cached_answerer
from evals.data import load_dataset
from evals.harness import answer_metrics, run_system
from evals.split import in_tune_half
from evals.stages import with_retriever
from index import PackagedEmbedder
from index.config import Settings
from rag import ExtractiveComposer

GRID = [(0.7, 0.0, 0.3), (0.5, 0.25, 0.25), (0.4, 0.4, 0.2), (0.6, 0.2, 0.2), (0.3, 0.4, 0.3)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--per-dataset", type=int, default=300, help="questions per dataset and half")
    args = parser.parse_args(argv)
    settings, embedder = Settings.from_env(), PackagedEmbedder()
    print("weights (cosine, words, rank) | " + " | ".join(f"{f.name} tune / check" for f in args.datasets))
    for weights in GRID:
        cells = []
        for folder in args.datasets:
            dataset = load_dataset(folder)
            base = cached_answerer(dataset.corpus, settings, embedder)
            composer = ExtractiveComposer(
                embedder, sentence_weight=weights[0], lexical_weight=weights[1], rank_weight=weights[2]
            )
            answerer = with_retriever(base, base.retriever)
            answerer.composer = composer
            halves = []
            for tune in (True, False):
                questions = [q for q in dataset.questions if in_tune_half(q.id) == tune][: args.per_dataset]
                outcomes = run_system(answerer, questions, 10, progress=False)
                halves.append(answer_metrics(outcomes)["answer_accuracy"])
            cells.append(" / ".join(f"{h:.3f}" for h in halves))
        print(f"{weights} | " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
