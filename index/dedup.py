"""Near-duplicate stories: MinHash signatures of word shingles, grouped with an LSH index (datasketch).

Syndicated copies and lightly updated versions of one story share most 3-word shingles; a Jaccard
similarity estimate of at least ``THRESHOLD`` puts two articles in the same story.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

import numpy as np
from datasketch import MinHash, MinHashLSH

NUM_PERM = 64
THRESHOLD = 0.7
SHINGLE_WORDS = 3
MIN_WORDS = 12
_WORD = re.compile(r"\w+")
_SCHEME = "affine32"


def signature(text: str) -> bytes | None:
    """The MinHash signature of ``text`` as bytes, or None when the text is too short to compare."""
    words = _WORD.findall(text.casefold())
    if len(words) < MIN_WORDS:
        return None
    shingles = {
        " ".join(words[i : i + SHINGLE_WORDS]).encode() for i in range(len(words) - SHINGLE_WORDS + 1)
    }
    minhash = MinHash(num_perm=NUM_PERM, seed=1, scheme=_SCHEME)
    minhash.update_batch(list(shingles))
    return bytes(minhash.hashvalues.astype(np.uint32).tobytes())


def _minhash(data: bytes) -> MinHash:
    return MinHash(num_perm=NUM_PERM, seed=1, scheme=_SCHEME, hashvalues=np.frombuffer(data, dtype=np.uint32))


class StoryIndex:
    """Which stored articles are near-duplicates of a new one."""

    def __init__(self) -> None:
        self._lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
        self._keys: set[str] = set()

    def add(self, article_id: str, data: bytes | None) -> None:
        if data is None:
            return
        self.remove(article_id)
        self._lsh.insert(article_id, _minhash(data))
        self._keys.add(article_id)

    def remove(self, article_id: str) -> None:
        if article_id in self._keys:
            self._lsh.remove(article_id)
            self._keys.discard(article_id)

    def similar(self, data: bytes | None) -> list[str]:
        """Ids of stored articles whose estimated Jaccard similarity passes the threshold."""
        if data is None:
            return []
        return sorted(self._lsh.query(_minhash(data)))


class StoryAssigner:
    """The story rule, for one machine and for a cluster alike: a new article joins the story of the
    earliest stored near-duplicate (by publication date, undated last, then id), else starts its own
    story named after itself."""

    def __init__(self, rows: Iterable[tuple[str, bytes | None, str, str | None]] = ()) -> None:
        """``rows``: (article id, MinHash signature, story, publication date) of the stored articles."""
        self._index = StoryIndex()
        self._known: dict[str, tuple[str, str | None]] = {}
        for article_id, minhash, story, published in rows:
            self._index.add(article_id, minhash)
            self._known[article_id] = (story, published)

    def assign(self, article_id: str, minhash: bytes | None, published: date | None) -> str:
        """The story of an article being written (which is then counted as stored)."""
        self.remove(article_id)
        similar = [s for s in self._index.similar(minhash) if s != article_id and s in self._known]
        story = article_id
        if similar:
            earliest = min(similar, key=lambda s: (self._known[s][1] is None, self._known[s][1] or "", s))
            story = self._known[earliest][0]
        self._index.add(article_id, minhash)
        self._known[article_id] = (story, published.isoformat() if published else None)
        return story

    def add(self, article_id: str, minhash: bytes | None, story: str, published: date | None) -> None:
        """An article written with a story decided elsewhere (a cluster's driver)."""
        self.remove(article_id)
        self._index.add(article_id, minhash)
        self._known[article_id] = (story, published.isoformat() if published else None)

    def remove(self, article_id: str) -> None:
        self._index.remove(article_id)
        self._known.pop(article_id, None)
