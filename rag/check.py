"""Is a sentence supported by the passages it cites? Checked before anyone sees a generated sentence.

A sentence passes when:
- it cites at least one passage, and every number it cites exists;
- its numbers, dates (months, weekdays, years) and named entities all appear in the passages it cites;
- it says "not" exactly where its best supporting sentence does (negation added or removed fails);
- enough of its content words (stemmed, no stopwords) appear in the cited passages (``min_content``),
  and in one cited sentence at least ``min_overlap`` of them;
- embedding similarity to the supporting sentence only breaks ties between supporting sentences.
The verdict names the supporting sentence of each citation (its span in the article), so every
citation of a generated answer still points at verbatim text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from index.records import Span
from index.sentences import split_sentences
from index.terms import tokenize
from rag.records import Hit

DEFAULT_MIN_CONTENT = 0.85
DEFAULT_MIN_OVERLAP = 0.3
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "twenty": "20", "thirty": "30",
    "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000", "million": "1000000",
    "billion": "1000000000", "dozen": "12", "half": "0.5", "first": "1", "second": "2", "third": "3",
}  # fmt: skip
_DATE_WORDS = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ]
)
_NEGATIONS = frozenset(
    ["not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot", "n't"]
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'’\-]*")
_ENTITY = re.compile(r"\b(?:[A-Z][a-z'’\-]*[A-Z]?[a-z'’\-]*|[A-Z]{2,})(?:\s+(?:[A-Z][\w'’\-]*|of|de|al))*")
_COMMON_START = frozenset(
    [
        "the",
        "a",
        "an",
        "in",
        "on",
        "at",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "he",
        "she",
        "they",
        "we",
        "i",
        "you",
        "but",
        "and",
        "or",
        "so",
        "as",
        "after",
        "before",
        "when",
        "while",
        "if",
        "although",
        "however",
        "also",
        "his",
        "her",
        "their",
        "our",
        "there",
        "here",
        "what",
        "which",
        "who",
        "why",
        "how",
    ]
)


@dataclass(frozen=True)
class Verdict:
    """Whether a sentence is supported, why not, and what supports each citation."""

    supported: bool
    reasons: tuple[str, ...]
    evidence: dict[int, tuple[str, Span]]
    """Citation number -> (the best supporting sentence of that passage, its span in the article)."""


class SentenceChecker:
    """Checks generated sentences against the passages they cite (numbered from 1, as in the prompt)."""

    def __init__(
        self, min_content: float = DEFAULT_MIN_CONTENT, min_overlap: float = DEFAULT_MIN_OVERLAP
    ) -> None:
        self.min_content = min_content
        self.min_overlap = min_overlap

    def check(self, sentence: str, cites: Sequence[int], passages: Sequence[Hit]) -> Verdict:
        reasons: list[str] = []
        valid = [n for n in dict.fromkeys(cites) if 1 <= n <= len(passages)]
        if not cites:
            return Verdict(False, ("cites no passage",), {})
        if len(valid) < len(set(cites)):
            reasons.append("cites a passage that does not exist")
        if not valid:
            return Verdict(False, tuple(reasons), {})
        cited = [passages[n - 1] for n in valid]
        evidence_text = " ".join(hit.chunk.text for hit in cited)
        evidence_words = {w.lower() for w in _words(evidence_text)}
        evidence_numbers = _numbers(evidence_text) | {
            v for w, v in _NUMBER_WORDS.items() if w in evidence_words
        }
        for number in sorted(_numbers(sentence) | _number_words(sentence)):
            if number not in evidence_numbers:
                reasons.append(f"the number {number} is not in the cited passages")
        for word in sorted({w for w in _words(sentence.lower()) if w in _DATE_WORDS}):
            if word not in evidence_words:
                reasons.append(f"{word.capitalize()} is not in the cited passages")
        for entity in _entities(sentence):
            if entity.lower() not in evidence_words:
                reasons.append(f"{entity} is not in the cited passages")
        terms = set(tokenize([sentence])[0])
        evidence: dict[int, tuple[str, Span]] = {}
        best_overlap = 0.0
        candidates: list[tuple[float, bool]] = []
        if terms:
            found = set(tokenize([evidence_text])[0])
            share = len(terms & found) / len(terms)
            if share < self.min_content:
                reasons.append(f"only {share:.0%} of its content words are in the cited passages")
        for n, hit in zip(valid, cited, strict=True):
            ranked = _sentences(hit, terms)
            text, span, overlap = ranked[0]
            evidence[n] = (text, span)
            best_overlap = max(best_overlap, overlap)
            candidates.extend((share, _negates(t, terms)) for t, _, share in ranked)
        if terms and best_overlap < self.min_overlap:
            reasons.append(f"no cited sentence holds {self.min_overlap:.0%} of its content words")
        close = [
            negated for share, negated in candidates if share >= max(self.min_overlap, best_overlap - 0.2)
        ]
        if terms and close and _negates(sentence, terms) not in close:
            reasons.append("its negation differs from the sentences that support it")
        return Verdict(not reasons, tuple(reasons), evidence)


def _words(text: str) -> list[str]:
    """Words, possessives dropped ("Mexico's" -> "Mexico"), "n't" split off as a word of its own."""
    words = []
    for found in _WORD.findall(text.replace("’", "'")):
        word = found.strip("'-")
        if word.lower().endswith("n't"):
            words.extend([word[:-3], "n't"])
            continue
        word = word[:-2] if word.lower().endswith("'s") else word
        if word:
            words.append(word)
    return words


def _numbers(text: str) -> set[str]:
    return {m.replace(",", "") for m in _NUMBER.findall(text)}


def _number_words(text: str) -> set[str]:
    return {
        _NUMBER_WORDS[w]
        for w in _words(text.lower())
        if w in _NUMBER_WORDS and w not in {"first", "second", "one"}
    }


def _negates(text: str, claim: set[str]) -> bool:
    """Whether ``text`` negates something the claim (its content terms) is about: a negation word followed,
    within four words, by one of the claim's terms (a "no" in a clause the claim leaves out is not one)."""
    words = [w.lower() for w in _words(text)]
    for i, word in enumerate(words):
        if word in _NEGATIONS:
            following = tokenize([" ".join(words[i + 1 : i + 5])])[0]
            if not claim or set(following) & claim:
                return True
    return False


def _entities(sentence: str) -> list[str]:
    """Capitalised words (names, places, acronyms), leaving out the sentence's first word."""
    words = _words(sentence)[1:]
    found = [
        w
        for w in words
        if w[:1].isupper() and w.lower() not in _DATE_WORDS and w.lower() not in _COMMON_START
    ]
    return list(dict.fromkeys(found))


def _sentences(hit: Hit, terms: set[str]) -> list[tuple[str, Span, float]]:
    """The sentences of a passage (text, article span, share of ``terms``), best supporting first."""
    spans = split_sentences(hit.chunk.text)
    texts = [hit.chunk.text[s.start : s.end] for s in spans]
    if not texts:
        return [(hit.chunk.text, hit.chunk.span, 0.0)]
    tokens = tokenize(texts)
    shares = [len(terms & set(t)) / len(terms) if terms else 0.0 for t in tokens]
    order = sorted(range(len(texts)), key=lambda i: (-shares[i], abs(len(tokens[i]) - len(terms))))
    base = hit.chunk.span.start
    return [(texts[i], Span(base + spans[i].start, base + spans[i].end), shares[i]) for i in order]
