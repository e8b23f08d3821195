"""Articles to a searchable index: load, clean, chunk, embed, store."""

from __future__ import annotations

from pathlib import Path

from index.chunk import Chunker
from index.config import Settings
from index.embed import Embedder, PackagedEmbedder
from index.errors import ArticleError, RagError
from index.ingest import Ingestor
from index.load import load_paths, parse_record
from index.records import Article, Chunk, IngestReport, Span
from index.store import IndexStore
from index.store.protocols import StoreView
from index.tokens import encoding

__all__ = [
    "Article",
    "ArticleError",
    "Chunk",
    "Chunker",
    "Embedder",
    "IndexStore",
    "IngestReport",
    "Ingestor",
    "PackagedEmbedder",
    "RagError",
    "Settings",
    "Span",
    "load_paths",
    "make_ingestor",
    "open_store",
    "parse_record",
]


def open_store(settings: Settings, embedder: Embedder) -> IndexStore:
    """The index under ``settings.data_dir`` for ``embedder``; stops with a clear error when unusable."""
    return IndexStore(Path(settings.data_dir), embedder.name, embedder.dimension)


def make_ingestor(settings: Settings, store: StoreView, embedder: Embedder) -> Ingestor:
    """An Ingestor with the chunking the settings ask for."""
    chunker = Chunker(
        encoding(settings.tiktoken_cache_dir), settings.chunk_tokens, settings.chunk_overlap_tokens
    )
    return Ingestor(store, embedder, chunker)
