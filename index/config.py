"""Typed settings of the index: where it lives, the model, the chunking, and (optionally) the Ray cluster
that holds it. Each package has its own settings type and reads only its own variables
(``IndexSettings.from_env``); api/config.py puts them together."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
INDEX_FOLDER = "index"
"""The index's folder inside the data folder (service state such as API keys sits beside it)."""
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
# all-MiniLM-L6-v2 truncates input at 256 word pieces (max_seq_length in the packaged
# sentence_bert_config.json). Chunks are measured in cl100k tokens, which run about 1.0-1.3 word pieces
# each on news English, so 180 tokens keep a chunk inside the model's window with room to spare.
DEFAULT_CHUNK_TOKENS = 180
DEFAULT_CHUNK_OVERLAP_TOKENS = 40
DEFAULT_SHARDS = 2


@dataclass(frozen=True)
class ClusterSettings:
    """The index in shards on a Ray cluster (docs/SCALING.md)."""

    address: str
    """The cluster's head, ``HOST:PORT`` (or ``auto``)."""
    base_dir: str
    """Folder for the shards on each node."""
    shards: int = DEFAULT_SHARDS
    """Shards, when the cluster holds no index yet."""
    replicas: int = 1
    """Copies of each shard, on different nodes, when the cluster holds no index yet."""
    workers: int = 1
    """Embedding workers of an ingest."""


@dataclass(frozen=True)
class IndexSettings:
    """Everything that shapes the index, passed in rather than read ad hoc."""

    data_dir: Path = DEFAULT_DATA_DIR / INDEX_FOLDER
    """Folder of the index (SQLite metadata, segment files): RAG_DATA_DIR/index."""

    embedder: str = "onnx"
    """How the packaged model runs (index.embed.BACKENDS): ``onnx`` (fp32), ``onnx-int8`` or ``torch``.
    The index records the model's name, and one built with another (int8 is one) stops start-up.
    Env: RAG_EMBEDDER."""

    model_cache: Path | None = None
    """Folder of the model's ONNX export; None: beside the packaged weights (or ~/.cache/newsrag/models
    where their folder is read-only). Env: RAG_MODEL_CACHE."""

    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    """Most cl100k tokens in one chunk."""

    chunk_overlap_tokens: int = DEFAULT_CHUNK_OVERLAP_TOKENS
    """Tokens of trailing sentences repeated at the start of the next chunk."""

    tiktoken_cache_dir: Path = field(default_factory=lambda: DEFAULT_DATA_DIR / "tiktoken")
    """Where the offline cl100k_base file is placed for tiktoken. Env: TIKTOKEN_CACHE_DIR."""

    cluster: ClusterSettings | None = None
    """Hold the index on this Ray cluster instead of this machine (`--cluster`)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IndexSettings:
        """RAG_DATA_DIR (the index is its ``index/`` folder), TIKTOKEN_CACHE_DIR, RAG_EMBEDDER and
        RAG_MODEL_CACHE."""
        env = os.environ if env is None else env
        data_dir = data_dir_from_env(env)
        cache = Path(env.get("TIKTOKEN_CACHE_DIR", str(data_dir / "tiktoken"))).expanduser().resolve()
        return cls(
            data_dir=data_dir / INDEX_FOLDER,
            tiktoken_cache_dir=cache,
            embedder=env.get("RAG_EMBEDDER", "onnx").strip() or "onnx",
            model_cache=Path(env["RAG_MODEL_CACHE"]).expanduser().resolve()
            if env.get("RAG_MODEL_CACHE")
            else None,
        )

    @classmethod
    def under(cls, data_dir: Path, tiktoken_cache_dir: Path | None = None) -> IndexSettings:
        """The index of the data folder ``data_dir`` (in its ``index/`` folder)."""
        return cls(
            data_dir=data_dir / INDEX_FOLDER, tiktoken_cache_dir=tiktoken_cache_dir or data_dir / "tiktoken"
        )


def data_dir_from_env(env: Mapping[str, str]) -> Path:
    """RAG_DATA_DIR, default ./data of the project."""
    return Path(env.get("RAG_DATA_DIR", str(DEFAULT_DATA_DIR))).expanduser().resolve()
