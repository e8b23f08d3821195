"""A question analysed once, at the door: its words as the index counts them, the period it names, the
names it mentions and the kind of thing it asks for. Retrieval, composition, abstention and generation
read this record; none of them tokenizes or parses the question again."""

from __future__ import annotations

import re
from datetime import date

from index.terms import tokenize
from rag.follow import Resolution
from rag.records import Filters, Question
from rag.when import Period, read_period

_WANTS_COUNT = re.compile(
    r"\b(how (many|much|long|old|far|big|large|high|tall|fast)|"
    r"what (percentage|percent|number|amount|age|share|rate))\b",
    re.IGNORECASE,
)
_WANTS_DATE = re.compile(
    r"\b(what (year|date|day|month)|which (year|date|day|month)|when (did|was|were|will|is)|until when)\b",
    re.IGNORECASE,
)
OWN_WEIGHT = 2
"""A follow-up's own words count this many times in its lexical query; the carried words once."""
_WANTS_TIMELINE = re.compile(
    r"\b(how (did|has|have) .{1,120}? (unfold|unfolded|develop|developed|evolve|evolved|play out|played out)"
    r"|what (has|have) happened (since|with|to|in)|what happened (since|after)|timeline|chronology"
    r"|sequence of events|(the )?story so far|how it all (started|began|unfolded))\b",
    re.IGNORECASE,
)
_WANTS_REASON = re.compile(
    r"^\W*(why|how come)\b|\bwhy (did|do|does|is|are|was|were|has|have|had|will|would)\b"
    r"|\b(what|which) (caused|causes|prompted|led to|drove|triggered|sparked)\b|\bfor what reason\b",
    re.IGNORECASE,
)
_NAME = re.compile(r"\b[A-Z][\w'’-]+")
_AUX = r"(?:is|was|are|were|will be|would be|has been|have been|had been|could be|might be)"
_PREP = r"(?:of|in|for|at|on|to|from|with|behind|between|by|that|who|which|among|over|under|per)"
_WORD = r"[\w'’-]+"
_FOCUS = (
    # "What is the population of Baku?", "Who is the new director of the institute?"
    re.compile(
        rf"^\s*(?:what|who)\s+{_AUX}\s+(?:the|a|an)\s+(?:{_WORD}\s+){{0,2}}?({_WORD})\s+{_PREP}\b", re.I
    ),
    # "What did Armenia's prime minister say about ...?"
    re.compile(
        rf"^\s*what\s+(?:did|does|do|has|have|will|would)\s+(?:the\s+)?(?:{_WORD}\s+){{0,3}}?({_WORD})\s+"
        r"(?:say|said|tell|announce|claim|warn|write|mean)\b",
        re.I,
    ),
    # "How many peacekeepers were stationed ...?"
    re.compile(
        rf"^\s*how many\s+(?:{_WORD}\s+){{0,2}}?({_WORD})\s+(?:were|was|are|is|did|do|does|have|has|had|will|"
        r"would|could|can|died|remain)\b",
        re.I,
    ),
)
_NOT_FOCUS = frozenset(
    [
        "name",
        "names",
        "thing",
        "things",
        "reason",
        "reasons",
        "kind",
        "type",
        "way",
        "ways",
        "number",
        "amount",
        "cause",
        "result",
        "purpose",
        "goal",
        "aim",
        "main",
        "point",
        "one",
        "part",
        "people",
        "person",
        "percentage",
        "share",
        "rate",
        "new",
        "latest",
        "first",
        "last",
        "most",
        "same",
        "other",
        "top",
        "big",
        "major",
        "key",
        "former",
        "current",
        "next",
        "previous",
        "following",
        "expected",
        "estimated",
        "likely",
        "set",
        "going",
        "said",
        "reported",
        "year",
        "years",
        "times",
    ]
)
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
    text: str,
    as_of: date | None,
    top_k: int,
    filters: Filters,
    today: date | None = None,
    follow: Resolution | None = None,
) -> Question:
    """The Question record of a validated question text (see the module docstring).

    With ``follow`` (a follow-up that leans on its conversation, rag/follow.py): the words carried from
    the conversation are searched after the question's own, which count twice; the conversation's
    period applies when the question names none, and its last ``as_of`` when the request gives none. A
    model's rewrite is searched as a question of its own."""
    if follow is not None and not follow.leans:
        follow = None
    as_of = as_of or (follow.as_of if follow else None)
    day = as_of or today or date.today()
    searched = follow.standalone if follow else text
    own = tokenize([searched if follow and follow.rewritten_by == "model" else text])[0]
    carried = tokenize([" ".join(follow.carried)])[0] if follow else []
    tokens = tuple(own * OWN_WEIGHT + carried) if carried else tuple(own)
    names = [n for n in _NAME.findall(searched)[1:] if n.lower() not in _COMMON]
    wants = frozenset(
        kind
        for kind, pattern in (
            ("count", _WANTS_COUNT),
            ("date", _WANTS_DATE),
            ("timeline", _WANTS_TIMELINE),
            ("reason", _WANTS_REASON),
        )
        if pattern.search(text)
    )
    focus = _focus(text)
    period = read_period(searched if follow and follow.rewritten_by == "model" else text, day)
    if follow and follow.period_text and not period.explicit:
        earlier = read_period(follow.period_text, day)
        period = Period(earlier.start, earlier.end, period.recent or earlier.recent)
    return Question(
        text=text,
        as_of=as_of,
        top_k=top_k,
        filters=filters,
        today=day,
        tokens=tokens,
        period=period,
        names=tuple(names),
        wants=wants,
        focus=focus,
        asked=tuple(own),
        searched=searched,
        follow=follow,
    )


def _focus(text: str) -> tuple[str, ...]:
    """The thing a question asks for when it names it ("the population of ...", "how many peacekeepers",
    "what did the minister say"), as index tokens; empty when it names a kind any answer fills ("which
    is the happiest country"), a generic word, or a name. Regular expressions over the question's
    opening, not a parser: these three openings are most of the questions that name their thing."""
    for pattern in _FOCUS:
        found = pattern.search(text)
        if found:
            word = found.group(1)
            if word[:1].isupper() or word.lower().removesuffix("'s").removesuffix("’s") in _NOT_FOCUS:
                return ()
            return tuple(tokenize([word])[0])
    return ()
