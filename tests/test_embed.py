"""The batching embedder gives each concurrent caller its own vectors, from fewer model calls."""

from __future__ import annotations

import threading

import numpy as np

from index import Embedder
from index.embed import BatchingEmbedder, Vectors


class _Counted:
    """The real model, counting its calls."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self.calls = 0
        self.name, self.dimension = embedder.name, embedder.dimension

    def embed(self, texts: list[str]) -> Vectors:
        self.calls += 1
        return self._embedder.embed(texts)


def test_concurrent_callers_share_model_calls(embedder: Embedder) -> None:
    questions = [f"What did the council decide about road number {i}?" for i in range(16)]
    expected = embedder.embed(questions)
    counted = _Counted(embedder)
    batching = BatchingEmbedder(counted)
    results: dict[int, Vectors] = {}
    start = threading.Barrier(len(questions))

    def ask(i: int) -> None:
        start.wait()
        results[i] = batching.embed([questions[i]])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(len(questions)):
        assert results[i].shape == (1, embedder.dimension)
        assert float(results[i][0] @ expected[i]) > 0.999  # each caller got its own question's vector
    assert counted.calls < len(questions)
    alone = batching.embed(["one question"])
    assert np.allclose(alone, embedder.embed(["one question"]), atol=1e-5)
