"""What is fitted on data, on the tune half of the dev questions only, and the ablation that reports it:

ranker.py     the learned ranker's weights (rag/ranker.json)
calibrate.py  the abstention threshold (rag/answer.py)
composer.py   the extractive composer's weights (rag/compose.py)
ablation.py   what each retrieval stage adds, on the check half
reranker.py   whether a cross-encoder reranker pays, cross-fitted on the tune half (it did not)
answers.py    whether a sentence answers a question: a first feature scorer, read within the tune half
reader.py     the reader (rag/models/reader), trained on ../shared QA data and the tune half
short.py      the reader's two thresholds (rag/compose.py)

Each runs as ``python -m evals.fit.NAME DATASET_DIR...``; the set-up they share is here.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from evals.cache import cached_answerer
from evals.config import EvalSettings
from evals.data import Dataset, EvalQuestion, load_dataset
from evals.split import in_tune_half
from index import packaged_embedder
from index.embed import core_count
from rag import Answerer


@dataclass(frozen=True)
class FitSet:
    """One dataset with an Answerer over its cached index."""

    folder: Path
    dataset: Dataset
    answerer: Answerer

    def half(self, tune: bool, answerable_only: bool = True) -> list[EvalQuestion]:
        """The tune half (``tune``) or the check half of the questions."""
        return [
            q
            for q in self.dataset.questions
            if in_tune_half(q.id) == tune and (q.answerable or not answerable_only)
        ]


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser taking one or more dataset folders."""
    made = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    made.add_argument("datasets", nargs="+", type=Path, metavar="DATASET_DIR")
    return made


def fit_sets(folders: Sequence[Path], settings: EvalSettings | None = None) -> Iterator[FitSet]:
    """Each dataset with its Answerer (one embedding model for all; indexes built once and cached)."""
    settings = settings or EvalSettings.from_env()
    embedder = packaged_embedder(settings.index, core_count())
    for folder in folders:
        dataset = load_dataset(folder)
        yield FitSet(folder, dataset, cached_answerer(dataset.corpus, settings, embedder))
