"""Words as the lexical index and the answer checks count them: bm25s tokens, English stopwords removed,
Snowball-stemmed."""

from __future__ import annotations

import bm25s
import Stemmer

_STEMMER = Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> list[list[str]]:
    """Lowercased, stopword-free, stemmed word tokens (the same for documents and queries)."""
    tokens: list[list[str]] = bm25s.tokenize(
        texts, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False
    )
    return tokens
