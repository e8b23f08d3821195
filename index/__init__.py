"""Articles to a searchable index: load, clean, chunk, embed, store."""

from __future__ import annotations

from index.chunk import Chunker
from index.config import IndexSettings
from index.embed import Embedder, TorchEmbedder, packaged_embedder
from index.errors import ArticleError, RagError
from index.ingest import Ingestor, LocalPreparer
from index.load import load_paths, parse_record
from index.records import Article, Chunk, IngestReport, Span
from index.store import IndexStore
from index.store.protocols import Index, IndexReader, IndexWriter
from index.tokens import encoding

__all__ = [
    "Article",
    "ArticleError",
    "Chunk",
    "Chunker",
    "Embedder",
    "Index",
    "IndexReader",
    "IndexSettings",
    "IndexStore",
    "IndexWriter",
    "IngestReport",
    "Ingestor",
    "RagError",
    "Span",
    "TorchEmbedder",
    "load_paths",
    "make_ingestor",
    "open_index",
    "packaged_embedder",
    "parse_record",
]


def open_index(settings: IndexSettings, embedder: Embedder) -> Index:
    """The index ``settings`` name, for ``embedder``: on this machine (``settings.data_dir``) or, when
    ``settings.cluster`` is set, in shards on that Ray cluster (created there when it has none). The one
    place a backend is chosen (``make_ingestor`` follows it); stops with a clear error when the index is
    unusable."""
    if settings.cluster is not None:
        from index.cluster import open_cluster

        c = settings.cluster
        return open_cluster(c.address, c.base_dir, c.shards, c.replicas, embedder.name, embedder.dimension)
    return IndexStore(settings.data_dir, embedder.name, embedder.dimension)


def make_ingestor(settings: IndexSettings, store: IndexWriter, embedder: Embedder) -> Ingestor:
    """The ingest path into ``store``: batches prepared in this process with ``embedder``, or, when
    ``settings.cluster`` is set, on the cluster's Ray Data workers."""
    if settings.cluster is not None:
        from index.cluster_ingest import RayPreparer

        return Ingestor(store, RayPreparer(settings, settings.cluster.workers))
    return Ingestor(store, LocalPreparer(chunker(settings), embedder))


def chunker(settings: IndexSettings) -> Chunker:
    """The chunker the settings ask for."""
    return Chunker(
        encoding(settings.tiktoken_cache_dir), settings.chunk_tokens, settings.chunk_overlap_tokens
    )
