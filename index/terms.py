"""Words as the lexical index and the answer checks count them: bm25s's tokens (its pattern, lowercased,
its English stopwords removed), Snowball-stemmed.

Written here rather than calling ``bm25s.tokenize``, which gives the same tokens but builds three
progress bars (disabled) and a vocabulary on every call: about 0.3 ms a call, and a question makes
several (its own words, the candidate sentences, the checks). tests/test_terms.py holds the two equal.
"""

from __future__ import annotations

import re

import Stemmer
from bm25s.stopwords import STOPWORDS_EN

_STEMMER = Stemmer.Stemmer("english")
_WORDS = re.compile(r"(?u)\b\w\w+\b").findall
"""bm25s's default token pattern: runs of two or more word characters."""
_STOPWORDS = frozenset(STOPWORDS_EN)


def tokenize(texts: list[str]) -> list[list[str]]:
    """Lowercased, stopword-free, stemmed word tokens (the same for documents and queries)."""
    stem = _STEMMER.stemWords
    return [stem([w for w in _WORDS(text.lower()) if w not in _STOPWORDS]) for text in texts]
