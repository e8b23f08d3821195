"""Knowing when the story is missing: abstain when the evidence does not answer, not only when it is far.

Features of a question and the passages an answer would come from (the best five, and the sentences
the extractive composer would quote from them):
  cosine          best question-passage cosine (what abstention looked at before)
  margin          that cosine minus the best cosine of another article
  sentence        the composer's score of the best sentence it would quote
  coverage        share of the question's word weight (BM25 idf) found in the passages
  top_coverage    the same, in the first passage alone
  rare            share of the question's three rarest words found in the passages
  entities        share of the question's names (capitalised words) found in the passages
  wanted_missing  the question asks for a count or an amount ("how many", "what percentage", ...) and
                  the lead article's passages hold none (a year or a day of the month is not a count),
                  or for a date ("what year", "when did", ...) and they hold no year, month, weekday or
                  relative day
A logistic regression over them (rag/abstain.json), fitted by ``python -m evals.fit.calibrate`` on the
tune half of the dev questions: answerable ones as served, against the same questions with their gold
articles removed from the index (the story is missing, the nearest other article on the same topic is
there); its threshold keeps 95% of the answerable tune questions. The ranker's score is left out on
purpose: it carries the question's distance in time to the article, which on RealTime QA (asked the week
of the news) separates the cases well and elsewhere does not (fitted with it, the model refused 12 of
the 20 answerable seed questions, asked months after their articles).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from index.errors import ConfigError
from index.terms import tokenize
from rag.records import Hit

DEFAULT_PATH = Path(__file__).with_name("abstain.json")
FEATURES = (
    "cosine", "margin", "sentence", "coverage", "top_coverage", "rare", "entities", "wanted_missing",
)  # fmt: skip
_WANTS_COUNT = re.compile(
    r"\b(how (many|much|long|old|far|big|large|high|tall|fast)|"
    r"what (percentage|percent|number|amount|age|share|rate))\b",
    re.IGNORECASE,
)
_WANTS_DATE = re.compile(
    r"\b(what (year|date|day|month)|which (year|date|day|month)|when (did|was|were|will|is)|until when)\b",
    re.IGNORECASE,
)
_YEAR = r"\b(1[89]|20)\d\d\b"
_COUNT = re.compile(
    r"\b(?!(1[89]|20)\d\d\b)\d[\d,.]*|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
    r"twenty|thirty|forty|fifty|hundreds?|thousands?|millions?|billions?|dozens?|half|a third|quarter|"
    r"percent)\b",
    re.IGNORECASE,
)
_MONTH = r"(january|february|march|april|may|june|july|august|september|october|november|december)"
_DAY_OF_MONTH = re.compile(
    rf"\b{_MONTH}\s+\d{{1,2}}(st|nd|rd|th)?\b|\b\d{{1,2}}(st|nd|rd|th)?\s+(of\s+)?{_MONTH}\b", re.IGNORECASE
)
_DATE = re.compile(
    _YEAR + rf"|\b({_MONTH[1:-1]}|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"yesterday|today|tomorrow|next (year|week|month)|last (year|week|month))\b",
    re.IGNORECASE,
)
_NAME = re.compile(r"\b[A-Z][\w'’-]+")
_COMMON = frozenset(
    [
        "what",
        "who",
        "which",
        "when",
        "where",
        "why",
        "how",
        "the",
        "a",
        "an",
        "in",
        "on",
        "at",
        "of",
        "is",
        "was",
        "are",
        "were",
        "did",
        "does",
        "do",
    ]
)

Idf = Callable[[Sequence[str]], npt.NDArray[np.float64]]


def evidence(question: str, hits: Sequence[Hit], best_sentence: float, idf: Idf) -> npt.NDArray[np.float64]:
    """The feature row (FEATURES) of a question, its passages and the best sentence score the composer
    would quote with."""
    if not hits:
        return np.zeros(len(FEATURES))
    best = max(h.similarity for h in hits)
    lead = max(hits, key=lambda h: h.similarity).article.id
    others = [h.similarity for h in hits if h.article.id != lead]
    margin = best - max(others) if others else 0.2
    terms = list(dict.fromkeys(tokenize([question])[0]))
    weights = idf(terms) if terms else np.zeros(0)

    def covered(text: str) -> npt.NDArray[np.bool_]:
        present = set(tokenize([text])[0])
        return np.array([t in present for t in terms], dtype=bool)

    def share(found: npt.NDArray[np.bool_]) -> float:
        return float(weights[found].sum() / weights.sum()) if terms and weights.sum() > 0 else 1.0

    text = " ".join(h.chunk.text + " " + h.article.title for h in hits)
    found = covered(text)
    top = hits[0]
    rare_order = np.argsort(-weights)[:3] if terms else np.zeros(0, dtype=int)
    rare = float(found[rare_order].mean()) if terms else 1.0
    lowered = text.lower()
    names = [n for n in _NAME.findall(question)[1:] if n.lower() not in _COMMON]
    entities = float(np.mean([n.lower() in lowered for n in names])) if names else 1.0
    # The lead article's passages: an answer quotes them first, and another story's numbers answer nothing.
    lead_text = " ".join(h.chunk.text + " " + h.article.title for h in hits if h.article.id == top.article.id)
    wanted_missing = float(
        (bool(_WANTS_COUNT.search(question)) and not _COUNT.search(_DAY_OF_MONTH.sub(" ", lead_text)))
        or (bool(_WANTS_DATE.search(question)) and not _DATE.search(lead_text))
    )
    return np.array(
        [
            best,
            margin,
            best_sentence,
            share(found),
            share(covered(top.chunk.text + " " + top.article.title)),
            rare,
            entities,
            wanted_missing,
        ],
        dtype=np.float64,
    )


@dataclass(frozen=True)
class Abstainer:
    """Logistic regression over standardised evidence features; abstains below ``threshold``."""

    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]
    bias: float
    threshold: float

    def answerable(self, row: npt.NDArray[np.float64]) -> float:
        """Probability that the passages answer the question."""
        z = float(((row - self.mean) / self.scale) @ self.weights + self.bias)
        return float(1.0 / (1.0 + np.exp(-z)))

    def abstains(self, row: npt.NDArray[np.float64]) -> bool:
        """Below the threshold, or the question asks for a count or a date of a kind the passages do not
        hold at all (a rule: on RealTime QA that almost never happens, so the regression cannot learn it)."""
        return bool(row[FEATURES.index("wanted_missing")]) or self.answerable(row) < self.threshold

    def to_json(self, **about: object) -> str:
        return json.dumps(
            {
                **about,
                "features": list(FEATURES),
                "mean": self.mean.round(6).tolist(),
                "scale": self.scale.round(6).tolist(),
                "weights": self.weights.round(6).tolist(),
                "bias": round(self.bias, 6),
                "threshold": round(self.threshold, 6),
            },
            indent=2,
        )

    @classmethod
    def load(cls, path: Path = DEFAULT_PATH) -> Abstainer:
        try:
            data = json.loads(path.read_text())
            if tuple(data["features"]) != FEATURES:
                raise ValueError(f"features {data['features']} are not {list(FEATURES)}")
            return cls(
                np.array(data["mean"], dtype=np.float64),
                np.array(data["scale"], dtype=np.float64),
                np.array(data["weights"], dtype=np.float64),
                float(data["bias"]),
                float(data["threshold"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"the abstention model {path} cannot be read ({exc}); restore it from git or refit it with "
                "`python -m evals.fit.calibrate`"
            ) from exc
