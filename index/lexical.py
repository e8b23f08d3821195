"""BM25 over chunks (bm25s, English stopwords, Snowball stemming), saved beside the FAISS file."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import bm25s
import numpy as np
import numpy.typing as npt
import Stemmer

_STEMMER = Stemmer.Stemmer("english")
_IDS_FILE = "chunk_ids.npy"


def tokenize(texts: list[str]) -> list[list[str]]:
    """Lowercased, stopword-free, stemmed word tokens (the same for documents and queries)."""
    tokens: list[list[str]] = bm25s.tokenize(
        texts, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False
    )
    return tokens


class LexicalIndex:
    """BM25 scores of a query against every chunk, aligned with ``chunk_ids``."""

    def __init__(self, model: bm25s.BM25 | None, chunk_ids: npt.NDArray[np.int64]) -> None:
        self._model = model
        self.chunk_ids = chunk_ids

    @classmethod
    def build(cls, chunk_ids: npt.NDArray[np.int64], texts: list[str]) -> LexicalIndex:
        if not texts:
            return cls(None, np.zeros(0, dtype=np.int64))
        model = bm25s.BM25()
        model.index(tokenize(texts), show_progress=False)
        return cls(model, chunk_ids)

    def scores(self, query: str) -> npt.NDArray[np.float32]:
        """BM25 score of every chunk (0 where no query word occurs)."""
        if self._model is None:
            return np.zeros(0, dtype=np.float32)
        (tokens,) = tokenize([query])
        known = [t for t in tokens if t in self._model.vocab_dict]
        if not known:
            return np.zeros(self.chunk_ids.size, dtype=np.float32)
        return np.asarray(self._model.get_scores(known), dtype=np.float32)

    def save(self, folder: Path) -> None:
        """Write to ``folder`` atomically (a temporary folder renamed into place), replacing it."""
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self._model is not None:
            self._model.save(str(tmp))
        np.save(tmp / _IDS_FILE, self.chunk_ids)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        chunk_ids = np.load(folder / _IDS_FILE)
        model = bm25s.BM25.load(str(folder)) if chunk_ids.size else None
        return cls(model, chunk_ids)
