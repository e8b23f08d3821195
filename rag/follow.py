"""Follow-up questions, resolved without a model: does a question lean on the conversation before it,
and what does it carry forward when it does.

A question *leans* when it has a cue (a pronoun or demonstrative: "it", "her", "those"; an opening
"and", "but", "what about", "how about"; a time word relative to the talk: "after that", "since then",
"next"; or too few words of its own to search, and no name) and does not name a subject of its own
(words and names the conversation has not used, enough to search on: see ``stands_alone``). A question
that stands alone is answered exactly as if there were no history.

What a leaning question carries: the topic of the conversation so far (the content words and names of
the user turns back to the last one that stood alone, names first), the period that topic named ("this
week", "in March 2023", read again on the day asked) when the question names none, the ``as_of`` of the
last user turn when the request gives none, and the articles the last answer cited (added to the
candidates; "what happened after that?" searches only what was published after the newest of them).
The carried words are searched after the question's own, which count twice (rag/question.py): weighted
below them. What was searched is said back to the reader as ``standalone_question``.

Written by hand: no library resolves follow-ups without a language model. The limits below were chosen
on the tune half of evals/datasets/realtimeqa-articles/dialogues.jsonl (the last answer's names were
tried as carried words too and cost answer accuracy: they pull the search back to the sentence already
quoted).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from index.terms import tokenize

MAX_HISTORY = 20
"""Earlier messages a question may bring (user and assistant together)."""
MAX_CARRIED = 14
"""Words carried forward at most (names first)."""
SHORT = 3
"""A question with fewer content words than this, none of them a name, cannot be searched alone."""
OWN_WORDS = 6
"""A question with this many content words the conversation has not used names its own subject."""
OWN_WORDS_WITH_NAME = 3
"""... or this many when one of them is a name the conversation has not used."""

ROLES = ("user", "assistant")

_WORD = re.compile(r"[A-Za-z0-9][\w'’.-]*[\w]|[A-Za-z0-9]")
_CUE = re.compile(
    r"^\s*(and|but|also|so|or|plus|then|what about|how about|what else|anything else|any|more on)\b"
    r"|\b(it|its|it's|they|them|their|theirs|themselves|he|him|his|himself|she|her|hers|herself|"
    r"these|those|there|such|the same|the latter|the former|that one|this one)\b"
    r"|\b(this|that)\b(?!\s+(week|weekend|month|year|morning|afternoon|evening|night|day|summer|winter|"
    r"spring|fall|autumn|season|time)\b)(?=\s*[?.!,]|\s+(\w+)\s*[?.!]?\s*$|\s+(is|was|were|are|will|would|"
    r"did|does|do|has|had|have|mean|happen)\b)"
    r"|\b(after|before|since|about|of|do|did|does|like|from|with|by|for|to|on|at|in) (that|this)\b"
    r"|\b(after that|before that|since then|by then|until then|at the time|afterwards|meanwhile|next|"
    r"later|earlier|again|still|anymore|any more|now)\b",
    re.IGNORECASE,
)
_RELATIVE = re.compile(r"\b(after that|since then|next|later|afterwards|what happened then)\b", re.I)
_MARKS = re.compile(r"\s*\[\d+\]")


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_CAPITAL = re.compile(r"\b[A-Z][\w'’.-]*[\w]")
FUNCTION_WORDS = _word_set(
    """
    a an the and or but so nor yet also plus then than too very just only even still again now
    what who whom whose which when where why how whether if else anything something everything nothing
    is are was were be been being am do does did done doing have has had having will would shall should
    can could may might must ought get got gets getting
    i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
    this that these those there here such same one ones other another any some all each every both
    either neither no not none many much more most few less least lot lots own
    of in on at to from by with without for about into onto over under after before since until
    during between among through across against around behind beyond near off out up down upon within
    like as per via than because while though although unless whereas
    say said says tell told know known think thought mean meant happen happened happens happening
    going go goes went come came make made take took give gave let lets please thanks thank okay ok
    yes yeah hey hi hello really actually exactly kind sort
    """
)
_NOT_NAMES = _word_set(
    """
    january february march april may june july august september october november december
    monday tuesday wednesday thursday friday saturday sunday cnn i
    """
)


@dataclass(frozen=True)
class Turn:
    """One earlier message of a conversation."""

    role: str
    """``user`` or ``assistant``."""
    content: str
    article_ids: tuple[str, ...] = ()
    """An assistant turn's cited articles."""
    as_of: date | None = None
    """A user turn's ``as_of``, when it gave one."""


@dataclass(frozen=True)
class Topic:
    """What the conversation is about after some turn."""

    words: tuple[str, ...]
    """Content words and names of its user turns, names first, in the order said."""
    period_text: str
    """The user turn that named the subject (whose period is carried)."""
    as_of: date | None = None
    article_ids: tuple[str, ...] = ()
    """What the last answer cited."""


@dataclass(frozen=True)
class Resolution:
    """What a question is searched as, given its conversation."""

    question: str
    standalone: str
    """What is searched: the question itself when it stands alone."""
    leans: bool
    carried: tuple[str, ...] = ()
    """Words carried forward from the conversation (searched below the question's own)."""
    period_text: str | None = None
    """Earlier text whose period applies (when the question names none)."""
    as_of: date | None = None
    """The last user turn's ``as_of`` (used when the question gives none)."""
    article_ids: tuple[str, ...] = ()
    """Articles the last answer cited: candidates for this one."""
    after_cited: bool = False
    """Asks what happened after the last answer ("after that", "since then", "next")."""
    rewritten_by: str | None = None
    """``rules`` or ``model`` when the question leaned; None when it stood alone."""


def alone(question: str) -> Resolution:
    return Resolution(question, question, False)


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry its subject, in order (not function words, not [n] marks)."""
    words = [re.sub(r"['’]s$", "", w.strip(".-")) for w in _WORD.findall(_MARKS.sub(" ", text))]
    return [w for w in words if w.lower() not in FUNCTION_WORDS and len(w) > 1]


def names(text: str, skip_first: bool = True) -> list[str]:
    """Capitalised words of ``text`` (the first word of each sentence left out with ``skip_first``)."""
    found = []
    for sentence in re.split(r"(?<=[.!?])\s+", _MARKS.sub(" ", text)):
        for i, match in enumerate(_CAPITAL.finditer(sentence)):
            word = re.sub(r"['’]s$", "", match.group().strip("."))
            if skip_first and match.start() == 0 and i == 0:
                continue
            if word.lower() in FUNCTION_WORDS or word.lower() in _NOT_NAMES:
                continue
            found.append(word)
    return found


def _stems(words: Sequence[str]) -> set[str]:
    return {t for tokens in tokenize(list(words)) for t in tokens}


def stands_alone(question: str, topic: Topic | None) -> bool:
    """Whether ``question`` is to be answered as if asked alone (see the module docstring)."""
    if topic is None:
        return True
    words = content_words(question)
    short = len(words) < SHORT and not names(question)
    if not short and not _CUE.search(question):
        return True
    known = _stems(topic.words)
    fresh = [w for w in words if not (_stems([w]) <= known)]
    fresh_names = [n for n in names(question) if not (_stems([n]) <= known)]
    return len(fresh) >= OWN_WORDS or (bool(fresh_names) and len(fresh) >= OWN_WORDS_WITH_NAME)


def _merge(first: Sequence[str], then: Sequence[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    out = []
    for word in (*first, *then):
        key = " ".join(tokenize([word])[0]) or word.lower()
        if key not in seen:
            seen.add(key)
            out.append(word)
    return tuple(out)


def _ordered(text: str) -> list[str]:
    """Content words, names first."""
    said = content_words(text)
    named = set(names(text))
    return [w for w in said if w in named] + [w for w in said if w not in named]


def topic_of(history: Sequence[Turn]) -> Topic | None:
    """The topic after the last of ``history`` (None when it holds no user turn)."""
    topic: Topic | None = None
    for turn in history:
        if turn.role == "user":
            if stands_alone(turn.content, topic):
                topic = Topic(_merge(_ordered(turn.content), ()), turn.content, turn.as_of)
            else:
                assert topic is not None
                words = _merge(_ordered(turn.content), topic.words)
                as_of = turn.as_of or topic.as_of
                topic = Topic(words, topic.period_text, as_of, topic.article_ids)
        elif topic is not None:
            topic = Topic(topic.words, topic.period_text, topic.as_of, turn.article_ids)
    return topic


def resolve(question: str, history: Sequence[Turn]) -> Resolution:
    """How ``question`` is searched after ``history`` (oldest first)."""
    if not history:
        return alone(question)
    topic = topic_of(history)
    if topic is None or stands_alone(question, topic):
        return alone(question)
    own = _stems(content_words(question))
    carried = [w for w in topic.words if not (_stems([w]) <= own)][:MAX_CARRIED]
    standalone = f"{question} ({' '.join(carried)})" if carried else question
    return Resolution(
        question,
        standalone,
        True,
        tuple(carried),
        topic.period_text,
        topic.as_of,
        topic.article_ids,
        bool(_RELATIVE.search(question)),
        "rules",
    )
