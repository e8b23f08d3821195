"""Indexes built for evaluation, cached by the content hash of everything that shapes them."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
from pathlib import Path

from evals.data import DatasetError
from index import PackagedEmbedder, load_paths, make_ingestor, open_store
from index.config import PROJECT_ROOT, Settings
from rag import Answerer

_INDEX_CODE = (
    "clean.py",
    "lexical.py",
    "dedup.py",
    "load.py",
    "sentences.py",
    "chunk.py",
    "ingest.py",
    "store/store.py",
    "store/catalog.py",
    "store/vectors.py",
    "store/lexical.py",
    "store/window.py",
    "embed.py",
    "config.py",
    "records.py",
)


def index_key(corpus: Path, settings: Settings) -> str:
    """Hash of the corpus bytes, the chunking settings, the model and the indexing code."""
    digest = hashlib.sha256()
    digest.update(corpus.read_bytes())
    digest.update(f"{settings.model_name}|{settings.chunk_tokens}|{settings.chunk_overlap_tokens}".encode())
    for name in _INDEX_CODE:
        digest.update((PROJECT_ROOT / "index" / name).read_bytes())
    return digest.hexdigest()[:20]


def cached_answerer(
    corpus: Path, base: Settings, embedder: PackagedEmbedder, progress: bool | None = None
) -> Answerer:
    """An Answerer over ``corpus``, built once and reused while nothing that shapes it changes."""
    key = index_key(corpus, base)
    folder = base.eval_cache_dir / key
    settings = Settings(data_dir=folder, tiktoken_cache_dir=base.tiktoken_cache_dir)
    done = folder / "COMPLETE"
    base.eval_cache_dir.mkdir(parents=True, exist_ok=True)
    # One builder at a time: a second process waits for the first one's index instead of deleting it.
    with (base.eval_cache_dir / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            _build(corpus, folder, settings, embedder, progress)
            done.write_text(key)
    return Answerer(open_store(settings, embedder), embedder, settings)


def _build(
    corpus: Path, folder: Path, settings: Settings, embedder: PackagedEmbedder, progress: bool | None
) -> None:
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted build: start over rather than trust it
    store = open_store(settings, embedder)
    report = make_ingestor(settings, store, embedder).ingest(load_paths([corpus]), progress=progress)
    store.close()
    if not (report.added or report.replaced):
        shutil.rmtree(folder)
        raise DatasetError(f"{corpus}: no record could be ingested: {report.failed[:3]}")
    (folder / "REJECTED").write_text("".join(f"{line}\n" for line in report.failed))


def rejected_records(corpus: Path, base: Settings) -> list[str]:
    """Messages for the corpus records that the cached index for ``corpus`` could not ingest."""
    path = base.eval_cache_dir / index_key(corpus, base) / "REJECTED"
    return path.read_text().splitlines() if path.exists() else []
