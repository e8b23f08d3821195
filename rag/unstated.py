"""The asked-for fact not stated (issue 41): quotes about the question that never give what it asks.

An extractive reader finds some words in a sentence about the story even when the sentence does not hold
what was asked. Asked why the peacekeepers left, it offers the words beside "the early withdrawal" that
say what the withdrawal means: a consequence dressed as the reason. For a question that asks why
(``reason`` in ``Question.wants``), a short answer stands only when it, or the few words before it, says a
reason ("because", "due to", "after", "amid", "in order to", "citing" ...); and when no quote says one,
the answer says so in words (``Answer.unstated``) rather than let the quotes pass for a reason.
This only corrects what the reader offered: with no short answer there is nothing to correct and no
note.

The cues are many and loose on purpose: the note must not claim the articles are silent when a quote
gives a reason in other words, so a quote with any cue counts as one that may.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import replace

from index.terms import tokenize
from rag.compose import Composition
from rag.records import Question

NOT_STATED_WHY = "The sources quoted do not say why."
_REASON = re.compile(
    r"\b(because|due to|owing to|thanks to|since|as a result|results? of|after|following|amid|over|"
    r"in response|in protest|protest\w*|citing|cited|blam\w*|reasons?|caus\w*|so that|in order|"
    r"led to|lead to|leads to|prompt\w*|trigger\w*|spark\w*|fears?|feared|concerns?|aimed|aims? to|"
    r"intended|meant to|seeking|sought|wanted|wants to|accus\w*|why|motiv\w*|driven by|for failing)\b",
    re.IGNORECASE,
)
_PURPOSE = re.compile(r"^\W*(to|for)\b", re.IGNORECASE)
_OPENING = 3
"""Words of a sentence-opening answer read as its head: the thing that did it, or the question's own."""
_BEFORE = 40
"""Characters before a short answer read for its cue ("... withdrew because of" + the words)."""


def gives_reason(quote: str, start: int, end: int, asked: Collection[str] = ()) -> bool:
    """Whether ``quote[start:end]``, the words a reader picked, give a reason: a cue inside them or
    just before them, a purpose ("to protect ..."), or the sentence's opening words, its subject: what
    did it ("A storm tore the roof off ..."), unless the question's own words (``asked``, index tokens)
    open them or follow them: then they are what the question is about ("The presence of peacekeepers
    ... has become a point of contention", "The school's 240" pupils), not what made it happen."""
    span = quote[start:end]
    if _REASON.search(quote[max(0, start - _BEFORE) : end]) or _PURPOSE.match(span):
        return True
    if quote[:start].strip(" \"'“‘("):
        return False
    opening = tokenize([span])[0][:_OPENING] + tokenize([quote[end : end + _BEFORE]])[0][:1]
    return not any(word in asked for word in opening)


def stated(question: Question, composition: Composition) -> tuple[Composition, str | None]:
    """``composition`` as the answer gives it, and the note when the asked-for fact is not stated: for a
    question asking why, a short answer that gives no reason is dropped, and then, unless another quote
    may give one in its words, the note says the sources do not say why. When the reader offered no
    short answer, the quotes speak for themselves: no note (a reason in words no cue catches is
    better left to the reader of the quotes than denied)."""
    short = composition.short_answer
    if "reason" not in question.wants or short is None or composition.generated:
        return composition, None
    quote = composition.citations[short.n - 1].quote
    if gives_reason(quote, short.start, short.end, frozenset(question.tokens)):
        return composition, None
    composition = replace(composition, short_answer=None)
    if any(_REASON.search(c.quote) for c in composition.citations):
        return composition, None
    return composition, NOT_STATED_WHY
