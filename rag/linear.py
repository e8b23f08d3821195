"""The one learned model type of the service: a logistic regression over standardised, named features,
fitted offline (evals/fit/) and stored as plain weights in JSON, so serving needs no scikit-learn. The
ranker (rag/rank.py) and abstention (rag/abstain.py) are each one of these over their own feature table.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from index.errors import ConfigError

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LogisticModel:
    """Weights over standardised features, by name; ``extra`` keeps the file's other numbers (a
    threshold)."""

    names: tuple[str, ...]
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]
    bias: float
    extra: dict[str, float] = field(default_factory=dict)

    def logits(self, rows: Matrix, columns: Sequence[str]) -> npt.NDArray[np.float64]:
        """The model's log-odds of each row, whose columns are named by ``columns``."""
        picked = rows[:, [columns.index(n) for n in self.names]]
        return np.asarray(((picked - self.mean) / self.scale) @ self.weights + self.bias, dtype=np.float64)

    def probability(self, row: npt.NDArray[np.float64], columns: Sequence[str]) -> float:
        z = float(self.logits(row.reshape(1, -1), columns)[0])
        return float(1.0 / (1.0 + np.exp(-z)))

    def to_json(self, **about: object) -> str:
        return json.dumps(
            {
                **about,
                "features": list(self.names),
                "mean": self.mean.round(6).tolist(),
                "scale": self.scale.round(6).tolist(),
                "weights": self.weights.round(6).tolist(),
                "bias": round(self.bias, 6),
                **{k: round(v, 6) for k, v in self.extra.items()},
            },
            indent=2,
        )

    @classmethod
    def fitted(
        cls, names: Sequence[str], rows: Matrix, labels: npt.NDArray[Any], **extra: float
    ) -> LogisticModel:
        """Fit on ``rows`` (columns in ``names`` order) with scikit-learn (an evaluation dependency)."""
        from sklearn.linear_model import LogisticRegression

        mean, scale = rows.mean(axis=0), rows.std(axis=0)
        scale[scale == 0] = 1.0
        model = LogisticRegression(C=1.0, max_iter=2000).fit((rows - mean) / scale, labels)
        weights = model.coef_[0].astype(np.float64)
        return cls(tuple(names), mean, scale, weights, float(model.intercept_[0]), dict(extra))

    @classmethod
    def load(
        cls,
        path: Path,
        known: Collection[str],
        refit: str,
        extra: Sequence[str] = (),
        optional: Sequence[str] = (),
    ) -> LogisticModel:
        """The model in ``path``; stops with what to do (``refit``: the command) when it cannot be read
        or names a feature not in ``known``. ``extra``: numbers it must hold; ``optional``: numbers it
        may hold (absent from files written before them)."""
        try:
            data = json.loads(path.read_text())
            names = tuple(data["features"])
            unknown = set(names) - set(known)
            if unknown:
                raise ValueError(f"unknown features {sorted(unknown)}")
            model = cls(
                names,
                np.array(data["mean"], dtype=np.float64),
                np.array(data["scale"], dtype=np.float64),
                np.array(data["weights"], dtype=np.float64),
                float(data["bias"]),
                {key: float(data[key]) for key in [*extra, *(k for k in optional if k in data)]},
            )
            if not model.mean.size == model.scale.size == model.weights.size == len(names):
                raise ValueError("the feature, mean, scale and weight lists differ in length")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"the model {path} cannot be read ({exc}); restore it from git or refit it with `{refit}`"
            ) from exc
        return model
