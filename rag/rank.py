"""Features of a candidate article for a question, and the small learned ranker that scores them.

``FEATURES`` is the one table of them: a name and the function that computes it from the candidate's
raw signals and what it is compared with. To change ranking, change this table and retrain. The ranker
is a logistic regression over them (rag/linear.py), trained by ``python -m evals.fit.ranker`` on one
half of the dev questions and checked on the other; its weights live in ``rag/ranker.json``. Any object
with ``score(rows) -> scores`` can stand in for it (a cross-encoder, say).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from rag.linear import LogisticModel, Matrix

DEFAULT_RANKER_PATH = Path(__file__).with_name("ranker.json")
RRF_K = 60
_NO_DATE_DAYS = 3650


@dataclass(frozen=True)
class CandidateSignals:
    """Raw signals of one candidate article, before they become features."""

    dense: float
    bm25: float
    dense_rank: int
    bm25_rank: int
    title_overlap: float
    age_days: int | None
    """Days from the period the question names (from the day it is asked when it names none)."""
    in_period: bool


@dataclass(frozen=True)
class Context:
    """What one question's candidates are compared with."""

    best_dense: float
    best_bm25: float
    period_given: bool
    recent: bool


def _age(s: CandidateSignals) -> int:
    return max(s.age_days if s.age_days is not None else _NO_DATE_DAYS, 0)


FEATURES: dict[str, Callable[[CandidateSignals, Context], float]] = {
    "dense": lambda s, c: s.dense,
    "dense_gap": lambda s, c: s.dense - c.best_dense,
    "bm25": lambda s, c: s.bm25 / c.best_bm25,
    "rrf": lambda s, c: 1 / (RRF_K + s.dense_rank) + 1 / (RRF_K + s.bm25_rank),
    "title_overlap": lambda s, c: s.title_overlap,
    "fresh_7": lambda s, c: math.exp(-_age(s) / 7),
    "fresh_30": lambda s, c: math.exp(-_age(s) / 30),
    "log_age": lambda s, c: math.log1p(_age(s)) / math.log1p(_NO_DATE_DAYS),
    "undated": lambda s, c: float(s.age_days is None),
    "in_period": lambda s, c: float(s.in_period),
    "period_given": lambda s, c: float(c.period_given),
    "recent_x_fresh": lambda s, c: float(c.recent) * math.exp(-_age(s) / 7),
}
"""Every ranking feature: name -> its value for one candidate."""
NAMES = tuple(FEATURES)
TEXT_FEATURES = ("dense", "dense_gap", "bm25", "rrf", "title_overlap")


def features(signals: list[CandidateSignals], period_given: bool, recent: bool) -> Matrix:
    """One row per candidate, one column per feature of ``FEATURES`` (in ``NAMES`` order)."""
    if not signals:
        return np.zeros((0, len(FEATURES)))
    context = Context(
        max(s.dense for s in signals), max(s.bm25 for s in signals) or 1.0, period_given, recent
    )
    return np.array([[f(s, context) for f in FEATURES.values()] for s in signals], dtype=np.float64)


class Ranker(Protocol):
    """Scores candidates from their feature rows (columns in ``NAMES`` order); higher is better."""

    def score(self, rows: Matrix) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class LinearRanker:
    """The learned ranker: a logistic model over some of the features (trained offline)."""

    model: LogisticModel

    @property
    def names(self) -> tuple[str, ...]:
        return self.model.names

    @property
    def weights(self) -> npt.NDArray[np.float64]:
        return self.model.weights

    def score(self, rows: Matrix) -> npt.NDArray[np.float64]:
        return self.model.logits(rows, NAMES)

    @classmethod
    def load(cls, path: Path = DEFAULT_RANKER_PATH) -> LinearRanker:
        return cls(LogisticModel.load(path, FEATURES, "python -m evals.fit.ranker"))


class FusionRanker:
    """Reciprocal rank fusion of the dense and BM25 ranks: the untrained fallback and ablation stage."""

    def score(self, rows: Matrix) -> npt.NDArray[np.float64]:
        return np.asarray(rows[:, NAMES.index("rrf")], dtype=np.float64)
