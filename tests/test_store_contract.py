"""One contract, every implementation: the vector indexes (ExactVectors, SegmentedVectors, also forced to
IVF segments) and the lexical indexes (FullBM25, SegmentedBM25) pass the same test bodies."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from index.store.lexical import LexicalIndex, SegmentedBM25
from index.store.reference import ExactVectors, FullBM25
from index.store.vectors import SegmentedVectors, VectorIndex
from index.store.window import Window

DIM = 16
DAY = 738_000  # a proleptic ordinal (2021-07-...)

VECTOR_INDEXES: dict[str, Callable[[], VectorIndex]] = {
    "exact": lambda: ExactVectors(DIM),
    "segmented": lambda: SegmentedVectors(DIM, fanout=3),
    "segmented-tiers": lambda: SegmentedVectors(DIM, fanout=3, floor=0),  # no floor: tiers merge
    "segmented-ivf": lambda: SegmentedVectors(DIM, fanout=3, ivf_threshold=60, nprobe=64, floor=0),
}
LEXICAL_INDEXES: dict[str, Callable[[], LexicalIndex]] = {
    "full": FullBM25,
    "segmented": lambda: SegmentedBM25(fanout=3),
    "segmented-tiers": lambda: SegmentedBM25(fanout=3, floor=0),  # no floor: tiers merge
    "segmented-pruned": lambda: SegmentedBM25(fanout=3, large_segment=50, floor=0),  # rare terms nominate
}


def _unit(x: np.ndarray) -> np.ndarray:
    unit: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return unit


@pytest.fixture(params=sorted(VECTOR_INDEXES))
def vectors(request: pytest.FixtureRequest) -> VectorIndex:
    return VECTOR_INDEXES[request.param]()


@pytest.fixture(params=sorted(LEXICAL_INDEXES))
def lexical(request: pytest.FixtureRequest) -> LexicalIndex:
    return LEXICAL_INDEXES[request.param]()


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    ids = np.arange(100, 400, dtype=np.int64)
    centres = _unit(rng.normal(size=(6, DIM)))
    matrix = _unit(centres[rng.integers(6, size=ids.size)] + rng.normal(scale=0.15, size=(ids.size, DIM)))
    published = (DAY + rng.integers(0, 60, size=ids.size)).astype(np.int32)
    published[:20] = -1  # undated
    return ids, matrix, published


def _fill(index: VectorIndex, data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ids, matrix, published = data
    for start in range(0, ids.size, 25):  # many small writes: segments merge on the way
        index.add(ids[start : start + 25], matrix[start : start + 25], published[start : start + 25])


def _exact(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], query: np.ndarray, keep: np.ndarray, k: int
) -> list[int]:
    ids, matrix, _ = data
    scores = matrix[keep] @ query
    return [int(i) for i in ids[keep][np.argsort(-scores)[:k]]]


def test_vectors_search_best_first_within_windows(
    vectors: VectorIndex, data: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    _fill(vectors, data)
    ids, matrix, published = data
    reader = vectors.reader()
    assert reader.size == ids.size
    query = matrix[7]
    hits = reader.search(query, 10)
    assert hits[0][0] == int(ids[7])
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    windows = {
        "capped": (Window(before=DAY + 30), (published <= DAY + 30) | (published < 0)),
        "range, no undated": (
            Window(after=DAY + 10, before=DAY + 20, undated=False),
            (published >= DAY + 10) & (published <= DAY + 20),
        ),
        "undated only": (Window(after=DAY + 100), published < 0),
        "ids": (Window(ids=np.sort(ids[::9])), np.isin(ids, ids[::9])),
    }
    for name, (window, keep) in windows.items():
        found = [i for i, _ in reader.search(query, 5, window)]
        assert set(found) <= set(ids[keep].tolist()), name
        assert len(set(found) & set(_exact(data, query, keep, 5))) >= 4, name


def test_vectors_removal_and_frozen_readers(
    vectors: VectorIndex, data: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    _fill(vectors, data)
    ids, matrix, _ = data
    before = vectors.reader()
    gone = ids[::3]
    vectors.remove(gone)
    vectors.add(np.array([999], dtype=np.int64), matrix[:1], np.array([DAY], dtype=np.int32))
    after = vectors.reader()
    assert after.size == ids.size - gone.size + 1
    for q in matrix[:30]:
        assert not {i for i, _ in after.search(q, 20)} & set(gone.tolist())
    assert before.size == ids.size  # a reader taken earlier does not change
    assert int(ids[0]) in {i for i, _ in before.search(matrix[0], 3)}
    live = ids[1::3]
    assert np.allclose(after.vectors(live), matrix[1::3], atol=1e-5)


def test_lexical_scores_match_the_reference(lexical: LexicalIndex) -> None:
    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(120)]
    documents = [
        [words[j] for j in rng.integers(0, rng.integers(10, 120), size=rng.integers(5, 40))]
        for _ in range(240)
    ]
    ids = np.arange(1, 241, dtype=np.int64)
    published = (DAY + rng.integers(0, 60, size=ids.size)).astype(np.int32)
    published[:10] = -1
    reference = FullBM25()
    reference.add(ids, documents, published)
    for start in range(0, ids.size, 30):
        lexical.add(ids[start : start + 30], documents[start : start + 30], published[start : start + 30])
    query = ["w3", "w17", "w90", "w3", "unknown"]
    expected = reference.reader().query(query)
    found = lexical.reader().query(query)
    top = [i for i, _ in found.top(10)]
    assert len(set(top) & {i for i, _ in expected.top(10)}) >= 9
    assert [s for _, s in found.top(10)] == sorted((s for _, s in found.top(10)), reverse=True)
    assert np.allclose(found.of(ids), expected.of(ids), rtol=1e-4)
    window = Window(after=DAY + 5, before=DAY + 25, undated=False)
    within = found.top(10, window)
    assert len({i for i, _ in within} & {i for i, _ in expected.top(10, window)}) >= 9
    assert all(DAY + 5 <= published[i - 1] <= DAY + 25 for i, _ in within)
    assert np.allclose(lexical.reader().idf(["w3", "unknown"]), reference.reader().idf(["w3", "unknown"]))


def test_lexical_removal_and_frozen_readers(lexical: LexicalIndex) -> None:
    ids = np.arange(1, 61, dtype=np.int64)
    documents = [["harbour", "ferry", f"n{i}"] if i % 2 else ["wheat", "harvest", f"n{i}"] for i in range(60)]
    lexical.add(ids, documents, np.full(ids.size, DAY, dtype=np.int32))
    before = lexical.reader()
    lexical.remove(ids[1::2])  # every harbour document
    after = lexical.reader()
    assert after.query(["harbour"]).top(5) == []
    assert len(before.query(["harbour"]).top(5)) == 5
    assert after.size == 30
    assert {i for i, _ in after.query(["wheat"]).top(40)} == set(ids[::2].tolist())
