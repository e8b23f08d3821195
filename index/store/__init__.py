"""The stored index: SQLite (the truth), vector and lexical indexes beside it, a frozen reader per question.

local.py      IndexStore: the index on one machine (writes, readers, catching up with other processes)
rows.py       its SQLite rows: schema, recovery checks, transactions, every statement
files.py      its derived files: segments that save and load themselves, checksummed and recorded
protocols.py  what users of an index rely on, and ArticleWrite, the record a write takes
catalog.py    per-article and per-chunk metadata in memory
vectors.py    the vector-index protocol: ExactVectors, SegmentedVectors
lexical.py    the lexical-index protocol: FullBM25, SegmentedBM25
window.py     what a search may return (Window) and how segments lay entries out by date
markers.py    what a data folder held, so that a lost meta.sqlite stops start-up
"""

from __future__ import annotations

from index.store.catalog import Catalog
from index.store.local import IndexStore, LocalReader
from index.store.markers import DB_NAME
from index.store.protocols import ArticleWrite, Index, IndexReader, IndexWriter
from index.store.window import Window

__all__ = [
    "DB_NAME",
    "ArticleWrite",
    "Catalog",
    "Index",
    "IndexReader",
    "IndexStore",
    "IndexWriter",
    "LocalReader",
    "Window",
]
