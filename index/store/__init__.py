"""The stored index: SQLite (the truth), vector and lexical indexes beside it, snapshots for readers.

store.py      IndexStore: writes, snapshots, derived files, other processes' writes
catalog.py    per-article and per-chunk metadata in memory
vectors.py    the vector-index protocol: ExactVectors, SegmentedVectors
lexical.py    the lexical-index protocol: FullBM25, SegmentedBM25
window.py     what a search may return (Window) and how segments lay entries out by date
markers.py    what a data folder held, so that a lost meta.sqlite stops start-up
"""

from __future__ import annotations

from index.store.catalog import Catalog
from index.store.markers import DB_NAME
from index.store.store import ArticleWrite, IndexStore, Snapshot
from index.store.window import Window

__all__ = ["DB_NAME", "ArticleWrite", "Catalog", "IndexStore", "Snapshot", "Window"]
