"""The reader (issue 30): which of a few candidate sentences states what the question asks, and the words
that do. A small transformer trained here (evals/fit/reader.py; its card is rag/models/reader/README.md)
run on ONNX Runtime with the word-piece tokenizer of the ``tokenizers`` package; neither torch nor
transformers is loaded to serve it.

The question is read once with several candidates packed after it into one short context
(``[CLS] question [SEP] s1 s2 ... [SEP]``, at most ``MAX_LENGTH`` pieces a row; more candidates make more
rows of one batch). SQuAD 2.0-style, the model scores every piece as an answer's start and as its end, and
the [CLS] piece as "no answer here": a sentence's score is its best span (at most ``LONGEST`` pieces)
against its row's [CLS], and its probability of answering is the two-way softmax of the two.

The model file is checked against the checksum in ``reader.json`` whenever it is opened: missing or
damaged, the service stops with the fix (the embedder's export is checked the same way, index/onnx.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from index.errors import ConfigError
from index.onnx import file_sha256

DEFAULT_FOLDER = Path(__file__).with_name("models") / "reader"
MANIFEST = "reader.json"
MAX_LENGTH = 160
"""Pieces in one row, question and markers included: what the model was trained on."""
MAX_QUESTION = 48
"""A longer question is cut to its first pieces (the question limit is in characters, 2,000)."""
LONGEST = 30
"""The longest answer span, in pieces."""
FIX = "restore it with `git checkout -- rag/models/reader` or train it again with `make train-reader`"


@dataclass(frozen=True)
class Reading:
    """What the reader says of one candidate sentence."""

    probability: float
    """That the sentence states the answer (its best span against no answer)."""
    start: int
    """The best span's character offsets in the sentence."""
    end: int


class SpanReader:
    """The packaged reader; safe to share between threads (ONNX Runtime runs a session from several).

    ``threads``: ONNX Runtime's intra-op threads for one question (one: the calling thread does the work,
    so a request thread that reads does not wait on a pool, and the reader's budget is its own)."""

    def __init__(self, folder: Path = DEFAULT_FOLDER, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(f"the reader needs {exc.name}; run `make install`") from exc
        model, about = checked(folder)
        self.about = about
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.cls = self._piece("[CLS]")
        self.sep = self._piece("[SEP]")
        self.pad = self._piece("[PAD]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own types for a file it cannot load
            raise ConfigError(f"the reader model cannot be loaded ({type(exc).__name__}); {FIX}") from exc

    def _piece(self, token: str) -> int:
        found = self.tokenizer.token_to_id(token)
        if found is None:
            raise ConfigError(f"the reader's tokenizer has no {token} piece; {FIX}")
        return int(found)

    def read(
        self,
        question: str,
        sentences: Sequence[str],
        rows: int | None = None,
        max_length: int = MAX_LENGTH,
    ) -> list[Reading]:
        """One reading for each of ``sentences`` (in their order), the question read with them in rows of
        at most ``max_length`` pieces (at most MAX_LENGTH, at least the question's and 16 more). ``rows``:
        read only the sentences that fit so many rows (the cost follows the pieces read); the others get
        probability 0."""
        return self.read_many([(question, sentences)], rows, max_length)[0]

    def read_many(
        self,
        asked: Sequence[tuple[str, Sequence[str]]],
        rows: int | None = None,
        max_length: int = MAX_LENGTH,
    ) -> list[list[Reading]]:
        """``read`` for several questions, each with its own sentences, in one run of the model (rows of
        several questions share the work better than one run each)."""
        packs = [self._pack(question, sentences, rows, max_length) for question, sentences in asked]
        table = [row for pack in packs for row in pack.rows]
        if not table:
            return [[] for _ in asked]
        width = max(len(pieces) for pieces, _ in table)
        ids = np.full((len(table), width), self.pad, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for r, (pieces, answer_from) in enumerate(table):
            ids[r, : len(pieces)] = pieces
            mask[r, : len(pieces)] = 1
            types[r, answer_from : len(pieces)] = 1
        starts, ends = self.session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        )
        found: list[list[Reading]] = []
        r = 0
        for pack in packs:
            readings = [Reading(0.0, 0, 0)] * pack.count
            for row in pack.places:
                none = float(starts[r, 0] + ends[r, 0])
                for n, first, length, offsets in row:
                    i, j, best = best_span(starts[r, first : first + length], ends[r, first : first + length])
                    margin = np.clip(best - none, -50.0, 50.0)
                    readings[n] = Reading(float(1.0 / (1.0 + np.exp(-margin))), offsets[i][0], offsets[j][1])
                r += 1
            found.append(readings)
        return found

    def _pack(self, question: str, sentences: Sequence[str], rows: int | None, max_length: int) -> _Pack:
        """The rows one question is read in: ``[CLS] question [SEP] sentences... [SEP]``, and where each
        sentence's pieces stand in them."""
        if not sentences:
            return _Pack(0, [], [])
        asked = self.tokenizer.encode(question, add_special_tokens=False).ids[:MAX_QUESTION]
        room = max(16, min(max_length, MAX_LENGTH) - len(asked) - 3)
        encoded = self.tokenizer.encode_batch(list(sentences), add_special_tokens=False)
        places: list[list[tuple[int, int, int, list[tuple[int, int]]]]] = [[]]
        used = 0
        for n, piece in enumerate(encoded):
            length = min(len(piece.ids), room)
            if used and used + length > room:
                if rows is not None and len(places) == rows:
                    break
                places.append([])
                used = 0
            places[-1].append((n, len(asked) + 2 + used, length, piece.offsets))
            used += length
        table = []
        for row in places:
            pieces = [self.cls, *asked, self.sep]
            for n, _, length, _ in row:
                pieces.extend(encoded[n].ids[:length])
            pieces.append(self.sep)
            table.append((pieces, len(asked) + 2))
        return _Pack(len(sentences), table, places)


@dataclass(frozen=True)
class _Pack:
    """One question's rows: their pieces (and where the sentences begin), and each sentence's place."""

    count: int
    rows: list[tuple[list[int], int]]
    places: list[list[tuple[int, int, int, list[tuple[int, int]]]]]


def best_span(
    start: npt.NDArray[np.float32], end: npt.NDArray[np.float32], longest: int = LONGEST
) -> tuple[int, int, float]:
    """The best (first, last) pieces with first <= last < first + ``longest`` and their score."""
    scores = start[:, None].astype(np.float64) + end[None, :]
    n = len(start)
    band = np.triu(np.ones((n, n), dtype=bool)) & ~np.triu(np.ones((n, n), dtype=bool), longest)
    scores = np.where(band, scores, -np.inf)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(i), int(j), float(scores[i, j])


def checked(folder: Path) -> tuple[Path, dict[str, Any]]:
    """The model file named by ``folder``'s manifest, whole (its SHA-256 as written there), and the
    manifest; ConfigError with the fix otherwise."""
    try:
        about = json.loads((folder / MANIFEST).read_text())
        name, digest = about["file"], about["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problem = f"the reader's manifest rag/models/reader/{MANIFEST} is missing or damaged"
        raise ConfigError(f"{problem}; {FIX}") from exc
    model = folder / str(name)
    if not model.is_file() or not (folder / "tokenizer.json").is_file():
        raise ConfigError(f"the reader model rag/models/reader/{name} is missing; {FIX}")
    if file_sha256(model) != digest:
        raise ConfigError(f"the reader model rag/models/reader/{name} is damaged (checksum differs); {FIX}")
    return model, about


_LOADED: dict[tuple[Path, int], SpanReader] = {}
_LOADING = threading.Lock()


def shared_reader(folder: Path = DEFAULT_FOLDER, threads: int = 1) -> SpanReader:
    """One reader a process for each folder and thread count (it is checked and loaded once; every
    Answerer of the process shares it)."""
    key = (folder.resolve(), threads)
    with _LOADING:
        if key not in _LOADED:
            _LOADED[key] = SpanReader(folder, threads)
        return _LOADED[key]
