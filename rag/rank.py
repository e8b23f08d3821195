"""Features of a candidate article for a question, and the small learned ranker that scores them.

The ranker is a logistic regression over standardised features, trained by ``python -m evals.fit.ranker``
on one half of the dev questions and checked on the other; its weights live in ``rag/ranker.json``.
Any object with ``score(features) -> scores`` can stand in for it (a cross-encoder, say).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from index.errors import ConfigError

DEFAULT_RANKER_PATH = Path(__file__).with_name("ranker.json")
RRF_K = 60

FEATURES = (
    "dense",
    "dense_gap",
    "bm25",
    "rrf",
    "title_overlap",
    "fresh_7",
    "fresh_30",
    "log_age",
    "undated",
    "in_period",
    "period_given",
    "recent_x_fresh",
)
TEXT_FEATURES = ("dense", "dense_gap", "bm25", "rrf", "title_overlap")

Matrix = npt.NDArray[np.float64]


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


def features(signals: list[CandidateSignals], period_given: bool, recent: bool) -> Matrix:
    """One row of FEATURES per candidate."""
    if not signals:
        return np.zeros((0, len(FEATURES)))
    best_dense = max(s.dense for s in signals)
    best_bm25 = max(s.bm25 for s in signals) or 1.0
    rows = []
    for s in signals:
        age = s.age_days if s.age_days is not None else 3650
        fresh_7 = math.exp(-max(age, 0) / 7)
        rows.append(
            [
                s.dense,
                s.dense - best_dense,
                s.bm25 / best_bm25,
                1 / (RRF_K + s.dense_rank) + 1 / (RRF_K + s.bm25_rank),
                s.title_overlap,
                fresh_7,
                math.exp(-max(age, 0) / 30),
                math.log1p(max(age, 0)) / math.log1p(3650),
                float(s.age_days is None),
                float(s.in_period),
                float(period_given),
                float(recent) * fresh_7,
            ]
        )
    return np.array(rows, dtype=np.float64)


class Ranker(Protocol):
    """Scores candidates from their feature rows; higher is better."""

    def score(self, rows: Matrix) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class LinearRanker:
    """Weights over standardised features (logistic regression, trained offline)."""

    names: tuple[str, ...]
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]
    bias: float

    def score(self, rows: Matrix) -> npt.NDArray[np.float64]:
        columns = [FEATURES.index(n) for n in self.names]
        standardised = (rows[:, columns] - self.mean) / self.scale
        return np.asarray(standardised @ self.weights + self.bias, dtype=np.float64)

    def to_json(self, **about: object) -> str:
        return json.dumps(
            {
                **about,
                "features": list(self.names),
                "mean": self.mean.round(6).tolist(),
                "scale": self.scale.round(6).tolist(),
                "weights": self.weights.round(6).tolist(),
                "bias": round(self.bias, 6),
            },
            indent=2,
        )

    @classmethod
    def load(cls, path: Path = DEFAULT_RANKER_PATH) -> LinearRanker:
        try:
            data = json.loads(path.read_text())
            names = tuple(data["features"])
            unknown = set(names) - set(FEATURES)
            if unknown:
                raise ValueError(f"unknown features {sorted(unknown)}")
            return cls(
                names,
                np.array(data["mean"], dtype=np.float64),
                np.array(data["scale"], dtype=np.float64),
                np.array(data["weights"], dtype=np.float64),
                float(data["bias"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"the ranker weights {path} cannot be read ({exc}); restore them from git or retrain "
                f"with `python -m evals.fit.ranker`"
            ) from exc


class FusionRanker:
    """Reciprocal rank fusion of the dense and BM25 ranks: the untrained fallback and ablation stage."""

    def score(self, rows: Matrix) -> npt.NDArray[np.float64]:
        return np.asarray(rows[:, FEATURES.index("rrf")], dtype=np.float64)
