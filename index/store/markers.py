"""Markers that say what a folder held, so that losing a SQLite file is never mistaken for a new, empty
folder: an index that starts empty answers nothing, and a service whose keys vanished starts open.

``index.marker`` is written beside the index's ``meta.sqlite`` with the first commit of articles;
``keys.marker`` beside the service's ``service.sqlite`` with the first API key (api/store/keys.py). Opening a
folder with a marker but without its file (or with one that no longer holds what the marker says) stops
with what to do, at any size of index.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from index.errors import IndexCorruptError

DB_NAME = "meta.sqlite"
INDEX_MARKER = "index.marker"
KEYS_MARKER = "keys.marker"
RECOVER = "delete the folder {dir} and run `rag ingest` again to rebuild it"
_DERIVED = ("seg-", "vectors-", "bm25-")
_TEXT = {
    INDEX_MARKER: "an index of articles",
    KEYS_MARKER: "API keys",
}


def marked(data_dir: Path, marker: str) -> bool:
    return (data_dir / marker).exists()


def mark(data_dir: Path, marker: str) -> None:
    """Record, durably, that ``data_dir``'s metadata holds what ``marker`` names (once; idempotent)."""
    path = data_dir / marker
    if path.exists():
        return
    now = datetime.now(UTC).isoformat(timespec="seconds")
    temporary = path.with_name(f".{marker}.{os.getpid()}.tmp")
    temporary.write_text(
        f"{DB_NAME} beside this file holds {_TEXT[marker]} (since {now}).\n"
        f"If {DB_NAME} is missing, the service refuses to start rather than start empty or open.\n"
    )
    with temporary.open("rb") as handle:
        os.fsync(handle.fileno())
    temporary.replace(path)
    directory = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def require_metadata(data_dir: Path) -> None:
    """Raise IndexCorruptError when ``meta.sqlite`` is missing from a folder that held an index (its
    marker says so, or derived segment files are still there)."""
    if (data_dir / DB_NAME).exists() or not data_dir.is_dir():
        return
    held = [_TEXT[INDEX_MARKER]] if marked(data_dir, INDEX_MARKER) else []
    derived = [p.name for p in data_dir.iterdir() if p.name.startswith(_DERIVED)]
    if derived:
        held.append(f"{len(derived)} segment files")
    if held:
        raise IndexCorruptError(
            f"the index metadata {data_dir / DB_NAME} is missing, but the folder held "
            f"{' and '.join(held)}: restore {DB_NAME} from a backup, or {RECOVER.format(dir=data_dir)}"
        )


def refuse_lost(folder: Path, marker: str, what: str, file: str = DB_NAME) -> None:
    """Raise IndexCorruptError: ``file`` exists but no longer holds what ``marker`` says."""
    recover = "create the API keys again" if marker == KEYS_MARKER else RECOVER.format(dir=folder)
    raise IndexCorruptError(
        f"{folder / file} holds no {what}, though {folder / marker} says it held {_TEXT[marker]}: the file "
        f"was replaced or emptied; restore it from a backup, or {recover}"
    )
