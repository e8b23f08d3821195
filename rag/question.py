"""A question analysed once, at the door: its words as the index counts them, the period it names, the
names it mentions and the kind of thing it asks for. Retrieval, composition, abstention and generation
read this record; none of them tokenizes or parses the question again."""

from __future__ import annotations

import re
from datetime import date

from index.terms import tokenize
from rag.records import Filters, Question
from rag.when import read_period

_WANTS_COUNT = re.compile(
    r"\b(how (many|much|long|old|far|big|large|high|tall|fast)|"
    r"what (percentage|percent|number|amount|age|share|rate))\b",
    re.IGNORECASE,
)
_WANTS_DATE = re.compile(
    r"\b(what (year|date|day|month)|which (year|date|day|month)|when (did|was|were|will|is)|until when)\b",
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


def analyse(
    text: str, as_of: date | None, top_k: int, filters: Filters, today: date | None = None
) -> Question:
    """The Question record of a validated question text (see the module docstring)."""
    day = as_of or today or date.today()
    tokens = tuple(tokenize([text])[0])
    names = tuple(n for n in _NAME.findall(text)[1:] if n.lower() not in _COMMON)
    wants = frozenset(
        kind for kind, pattern in (("count", _WANTS_COUNT), ("date", _WANTS_DATE)) if pattern.search(text)
    )
    return Question(
        text=text,
        as_of=as_of,
        top_k=top_k,
        filters=filters,
        today=day,
        tokens=tokens,
        period=read_period(text, day),
        names=names,
        wants=wants,
    )
