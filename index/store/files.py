"""Derived files of one index: segments saved as checksummed files and recorded in SQLite.

A segment of at least ``persist_min`` chunks is saved by its own ``save`` (temporary file, fsync,
rename) with the SHA-256 of its files recorded in the ``segments`` table, and its files are dropped when
a merge replaces it. Opening adopts the recorded segments whose files are whole and that do not overlap
a larger one (two processes may each have saved one); a damaged one is forgotten, and what no segment
covers is built from SQLite rows by the store. Only this process's own segments are recorded or dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

import numpy as np
import numpy.typing as npt

from index.store.markers import DB_NAME

if TYPE_CHECKING:
    from index.store.rows import Rows
    from index.store.window import Layout

log = logging.getLogger("index.store")


class SavedSegment(Protocol):
    """A segment that saves and loads itself (vectors.Segment, lexical.Segment)."""

    @property
    def name(self) -> str: ...

    @property
    def layout(self) -> Layout: ...

    def without(self, positions: npt.NDArray[np.int64]) -> Self: ...

    def save(self, folder: Path) -> list[Path]: ...

    @staticmethod
    def files(folder: Path, name: str) -> list[Path]: ...

    @classmethod
    def load(cls, folder: Path, name: str, dimension: int) -> Self: ...


def atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a temporary file beside ``path``, fsync it and rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    write(tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)


def save_arrays(path: Path, arrays: dict[str, Any]) -> None:
    """numpy arrays to ``path`` (``.npz``), atomically."""

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)

    atomically(path, save)


def map_arrays(path: Path) -> dict[str, npt.NDArray[Any]]:
    """The arrays of an ``.npz`` that ``np.savez`` wrote (uncompressed), mapped from the file instead of
    read into memory, so every process serving this index shares their pages (`rag serve --workers N`).
    The maps are copy-on-write: nothing written to an array reaches the file. A compressed member is read.

    By hand because numpy maps a ``.npy`` file (``np.load(mmap_mode=...)``) but not a member of an
    ``.npz``: a stored member is a ``.npy`` at a known offset of the archive, mapped here at that offset.
    Raises OSError, ValueError or zipfile.BadZipFile when the file is damaged."""
    arrays: dict[str, npt.NDArray[Any]] = {}
    with zipfile.ZipFile(path) as archive, path.open("rb") as raw:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            with archive.open(info) as member:
                if info.compress_type != zipfile.ZIP_STORED:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
                    continue
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(member)
                header = member.tell()
            if dtype.hasobject:
                raise ValueError(f"{info.filename} holds Python objects")
            raw.seek(info.header_offset)
            local = raw.read(30)  # the local file header: its name and extra field lengths end it
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise ValueError(f"{info.filename}: no local file header")
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            offset = info.header_offset + 30 + name_length + extra_length + header
            if not all(shape):
                arrays[name] = np.empty(shape, dtype=dtype)
                continue
            arrays[name] = np.memmap(
                path, dtype=dtype, mode="c", offset=offset, shape=shape, order="F" if fortran else "C"
            )
    return arrays


def checksum(paths: Iterable[Path]) -> str:
    """SHA-256 of each file, joined (raises OSError when one is missing)."""
    parts = []
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        parts.append(digest.hexdigest())
    return ":".join(parts)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentFiles:
    """The saved segments of one index folder; see the module docstring."""

    def __init__(
        self,
        folder: Path,
        rows: Rows,
        dimension: int,
        persist_min: int,
        kinds: Mapping[str, type[SavedSegment]],
    ) -> None:
        self.folder = folder
        self._kinds = kinds
        self._rows = rows
        self._dimension = dimension
        self.persist_min = persist_min
        self._saved: dict[str, str] = {}
        """Segment name -> kind, for this process's segments that are on disk."""
        self._discard: list[str] = []
        """Recorded segments found damaged or overlapping: forgotten once the load is done."""

    def reset(self) -> None:
        """Before a load from scratch: nothing of this process is on disk yet."""
        self._saved, self._discard = {}, []

    def load(self, kind: str, live: npt.NDArray[np.int64]) -> tuple[list[Any], npt.NDArray[np.int64]]:
        """The recorded segments of ``kind`` whose files are whole and that do not overlap each other, with
        the chunks SQLite no longer has marked removed; and the live chunk ids they cover."""
        top = int(live.max()) + 1 if live.size else 0
        alive = np.zeros(top, dtype=bool)
        alive[live] = True
        covered = np.zeros(top, dtype=bool)
        adopted = []
        segment_type = self._kinds[kind]
        for name, recorded in self._rows.recorded_segments(kind):
            try:
                if checksum(segment_type.files(self.folder, name)) != recorded:
                    log.warning("segment %s is missing or does not match its checksum; rebuilding", name)
                    self._discard.append(name)
                    continue
                segment = segment_type.load(self.folder, name, self._dimension)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                log.warning("segment %s cannot be read (%s); rebuilding it from %s", name, exc, DB_NAME)
                self._discard.append(name)
                continue
            ids = segment.layout.ids
            inside = ids < top
            if covered[ids[inside]].any():
                self._discard.append(name)  # overlaps a larger segment saved by another process
                continue
            gone = np.flatnonzero(~inside | ~alive[np.minimum(ids, max(top - 1, 0))])
            if gone.size:
                segment = segment.without(gone)
            adopted.append(segment)
            self._saved[segment.name] = kind
            covered[ids[inside]] = True
        return adopted, np.flatnonzero(covered & alive).astype(np.int64)

    def forget_discarded(self) -> None:
        """Forget the damaged or overlapping segments found by ``load``, and delete their files."""
        if not self._discard:
            return
        self._rows.forget_segments(self._discard)
        for name in self._discard:
            for segment_type in self._kinds.values():
                for path in segment_type.files(self.folder, name):
                    path.unlink(missing_ok=True)
        self._discard = []

    def remove_unrecorded(self) -> None:
        """Files of segments no longer recorded, temporary files, and files of the previous layout."""
        recorded = {name for name, _ in self._rows.recorded_segments()}
        for path in [*self.folder.glob("seg-*.npz"), *self.folder.glob("seg-*.faiss")]:
            if path.stem[4:] not in recorded:
                path.unlink(missing_ok=True)
        for path in self.folder.glob(".seg-*"):
            path.unlink(missing_ok=True)
        for path in [*self.folder.glob("vectors-*.faiss"), *self.folder.glob("bm25-*")]:
            if path.is_file():
                path.unlink(missing_ok=True)  # files of the previous layout (schema 3)

    def persist(self, segments: dict[str, Sequence[SavedSegment]]) -> None:
        """Save the segments (by kind) of at least ``persist_min`` chunks that are not on disk; forget
        the saved ones a merge replaced."""
        current: dict[str, tuple[str, SavedSegment]] = {}
        for kind, group in segments.items():
            for segment in group:
                if segment.name in self._saved or segment.layout.size >= self.persist_min:
                    current[segment.name] = (kind, segment)
        new = {n: v for n, v in current.items() if n not in self._saved}
        dropped = [n for n in self._saved if n not in current]
        if not new and not dropped:
            return
        written = [
            (name, kind, checksum(segment.save(self.folder)), segment.layout.size)
            for name, (kind, segment) in new.items()
        ]
        recorded = self._rows.record_segments(written, dropped)
        fsync_dir(self.folder)
        for name in dropped:
            if name in recorded:
                for path in self._kinds[self._saved[name]].files(self.folder, name):
                    path.unlink(missing_ok=True)
            del self._saved[name]
        self._saved.update({name: kind for name, kind, _, _ in written})
