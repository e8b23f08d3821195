"""Indexes built for evaluation, cached by the content hash of everything that shapes them."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import shutil
from pathlib import Path

from evals.config import EvalSettings
from evals.data import DatasetError
from index import Embedder, load_paths, make_ingestor, open_index
from index.config import PROJECT_ROOT, IndexSettings
from rag import Answerer


def index_key(corpus: Path, settings: IndexSettings) -> str:
    """Hash of the corpus bytes, the chunking settings, the model's backend and the indexing code (every
    module of index/, so that no change to how an index is built can reuse a stale one)."""
    digest = hashlib.sha256()
    digest.update(corpus.read_bytes())
    digest.update(f"{settings.embedder}|{settings.chunk_tokens}|{settings.chunk_overlap_tokens}".encode())
    for path in sorted((PROJECT_ROOT / "index").rglob("*.py")):
        digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def cached_answerer(
    corpus: Path, base: EvalSettings, embedder: Embedder, progress: bool | None = None
) -> Answerer:
    """An Answerer over ``corpus``, built once and reused while nothing that shapes it changes."""
    key = index_key(corpus, base.index)
    folder = base.cache_dir / key
    settings = dataclasses.replace(base.index, data_dir=folder, cluster=None)
    done = folder / "COMPLETE"
    base.cache_dir.mkdir(parents=True, exist_ok=True)
    # One builder at a time: a second process waits for the first one's index instead of deleting it.
    with (base.cache_dir / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            _build(corpus, folder, settings, embedder, progress)
            done.write_text(key)
    return Answerer(open_index(settings, embedder), embedder, base.answers)


def _build(
    corpus: Path, folder: Path, settings: IndexSettings, embedder: Embedder, progress: bool | None
) -> None:
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted build: start over rather than trust it
    store = open_index(settings, embedder)
    report = make_ingestor(settings, store, embedder).ingest(load_paths([corpus]), progress=progress)
    store.close()
    if not (report.added or report.replaced):
        shutil.rmtree(folder)
        raise DatasetError(f"{corpus}: no record could be ingested: {report.failed[:3]}")
    (folder / "REJECTED").write_text("".join(f"{line}\n" for line in report.failed))


def rejected_records(corpus: Path, base: EvalSettings) -> list[str]:
    """Messages for the corpus records that the cached index for ``corpus`` could not ingest."""
    path = base.cache_dir / index_key(corpus, base.index) / "REJECTED"
    return path.read_text().splitlines() if path.exists() else []
