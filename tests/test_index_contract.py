"""One contract, both backends: the index on this machine (``local``) and in shards on a real Ray cluster
(``sharded``, two shards on ``ray.cluster_utils.Cluster``) pass the same test bodies, written against
``Index``/``IndexReader``/``IndexWriter`` only: writes, replaces and deletes, readers that do not see
later writes, date windows and filters, stories, and BM25 statistics that add up over the whole index."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from index import Chunker, Embedder
from index.chunk import passage_text
from index.cluster import create_layout
from index.errors import ArticleNotFoundError
from index.ingest import prepare
from index.records import Article
from index.store import Index, IndexStore
from index.store.lexical import K1, B
from index.store.sharded import ShardedStore
from index.terms import tokenize
from index.tokens import encoding
from tests.conftest import local_cluster

pytestmark = pytest.mark.slow
BACKENDS = ("local", "sharded")
Make = Callable[[], Index]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    with local_cluster(workers=0):
        yield


@pytest.fixture(params=BACKENDS)
def make(request: pytest.FixtureRequest, tmp_path: Path, embedder: Embedder) -> Iterator[Make]:
    """A maker of a fresh, empty index of the backend (one per test)."""
    made: list[Any] = []

    def local() -> Index:
        made.append(IndexStore(tmp_path / "local", embedder.name, embedder.dimension))
        return made[-1]  # type: ignore[no-any-return]

    def sharded() -> Index:
        request.getfixturevalue("cluster")
        prefix = f"contract-{uuid.uuid4().hex[:8]}"
        layout = create_layout(str(tmp_path / prefix), 2, 1, embedder.name, embedder.dimension, prefix)
        made.append(layout)
        return ShardedStore(layout)

    yield local if request.param == "local" else sharded
    for thing in made:
        if isinstance(thing, IndexStore):
            thing.close()
        else:
            for copies in thing:
                for actor in copies:
                    ray.kill(actor, no_restart=True)


@pytest.fixture(scope="module")
def chunker(tiktoken_dir: Path) -> Chunker:
    return Chunker(encoding(tiktoken_dir), 180, 40)


def _article(i: int, body: str, day: date | None = None, source: str = "Harbour Wire") -> Article:
    return Article(id=f"a{i}", title=f"Story {i}", body=body, source=source, published_at=day)


CORPUS = [
    _article(
        1, "The harbour authority reopened the old stone pier on Monday after repairs.", date(2024, 3, 4)
    ),
    _article(
        2, "Wheat farmers in Kansas expect a small harvest after months without rain.", date(2024, 3, 20)
    ),
    _article(
        3, "The city orchestra returned to rehearsals after ratifying a new contract.", None, "Arts Desk"
    ),
    _article(
        4, "Engineering students tested a lunar rover in the Atacama Desert for a week.", date(2023, 11, 2)
    ),
]


def _write(index: Index, articles: list[Article], embedder: Embedder, chunker: Chunker) -> None:
    index.write(prepare(articles, chunker, embedder))


def _ids(hits: list[tuple[int, float]], index: Index) -> list[str]:
    return [chunk.article_id for chunk, _ in index.reader().passages([i for i, _ in hits])]


def test_writes_replaces_and_deletes(make: Make, embedder: Embedder, chunker: Chunker) -> None:
    index = make()
    _write(index, CORPUS, embedder, chunker)
    reader = index.reader()
    assert reader.article_count == 4
    assert reader.size == len(reader.chunk_ids()) >= 4
    assert set(reader.articles(["a1", "a2", "nope"])) == {"a1", "a2"}
    hashes = index.content_hashes(["a1", "nope"])
    assert hashes == {"a1": CORPUS[0].content_hash, "nope": None}
    old = reader.entry("a1")
    assert old is not None
    changed = _article(
        1, "The harbour authority closed the pier again on Friday for more repairs.", date(2024, 3, 8)
    )
    _write(index, [changed], embedder, chunker)
    new = index.reader().entry("a1")
    assert new is not None
    assert not set(old.chunk_ids) & set(new.chunk_ids)
    assert "Friday" in index.reader().articles(["a1"])["a1"].body
    assert index.reader().article_count == 4
    index.delete("a2")
    after = index.reader()
    assert after.article_count == 3
    assert after.entry("a2") is None
    assert "a2" not in after.articles(["a2"])
    vector = embedder.embed(["Kansas wheat harvest rain"])[0]
    assert "a2" not in _ids(after.dense(vector, 10), index)
    with pytest.raises(ArticleNotFoundError):
        index.delete("a2")


def test_a_reader_does_not_see_later_writes(make: Make, embedder: Embedder, chunker: Chunker) -> None:
    index = make()
    _write(index, CORPUS[:2], embedder, chunker)
    before = index.reader()
    vector = embedder.embed(["orchestra rehearsals contract"])[0]
    seen = before.dense(vector, 10)
    index.write(prepare(CORPUS[2:3], chunker, embedder), publish=False)
    assert index.reader().article_count == 2  # not published yet
    index.flush()
    assert index.reader().article_count == 3
    assert before.article_count == 2
    assert before.dense(vector, 10) == seen  # the old generation still answers as it did
    assert before.entry("a3") is None
    assert _ids(index.reader().dense(vector, 1), index) == ["a3"]
    assert index.reader().generation > before.generation


def test_date_windows_and_filters(make: Make, embedder: Embedder, chunker: Chunker) -> None:
    index = make()
    _write(index, CORPUS, embedder, chunker)
    reader = index.reader()
    vector = embedder.embed(["news of the week"])[0]
    tokens = tokenize(["harbour wheat orchestra rover"])[0]

    def found(**window: Any) -> tuple[set[str], set[str]]:
        allowed = reader.window(**window)
        dense = set(_ids(reader.dense(vector, 10, allowed), index))
        lexical = set(_ids(reader.lexical(tokens).top(10, allowed), index))
        return dense, lexical

    assert found() == ({"a1", "a2", "a3", "a4"},) * 2
    assert found(after=date(2024, 1, 1)) == ({"a1", "a2", "a3"},) * 2  # undated articles pass
    assert found(after=date(2024, 1, 1), undated=False) == ({"a1", "a2"},) * 2
    assert found(before=date(2024, 3, 10), undated=False) == ({"a1", "a4"},) * 2
    assert found(sources=["ARTS DESK"]) == ({"a3"},) * 2
    assert found(exclude=["a1", "a4"]) == ({"a2", "a3"},) * 2


def test_stories(make: Make, embedder: Embedder, chunker: Chunker) -> None:
    index = make()
    body = (
        "The central bank of Freedonia cut its main interest rate by half a point on Tuesday, citing slower "
        "growth and easing inflation across the country's largest cities."
    )
    copies = [
        _article(10, body, date(2024, 5, 7)),
        _article(11, body + " Markets rose after the decision.", date(2024, 5, 8), "Wire Service"),
        _article(
            12,
            "A different story entirely about a football final and the fans who travelled.",
            date(2024, 5, 8),
        ),
    ]
    for article in copies:  # one at a time: the later copy joins the earlier one's story
        _write(index, [article], embedder, chunker)
    reader = index.reader()
    first, second, other = (reader.entry(a) for a in ("a10", "a11", "a12"))
    assert first is not None
    assert second is not None
    assert other is not None
    assert first.story == second.story != other.story
    assert {e.article_id for e in reader.story(first.story)} == {"a10", "a11"}
    index.delete("a10")
    assert [e.article_id for e in index.reader().story(first.story)] == ["a11"]


def test_bm25_statistics_add_up_over_the_whole_index(
    make: Make, embedder: Embedder, chunker: Chunker
) -> None:
    index = make()
    _write(index, CORPUS, embedder, chunker)
    reader = index.reader()
    passages = reader.passages(reader.chunk_ids().tolist())
    documents = [tokenize([passage_text(article, chunk.text)])[0] for chunk, article in passages]
    query = tokenize(["harbour repairs pier rain harvest"])[0]
    stats = reader.statistics(query)
    assert stats.documents == len(documents) == reader.size
    assert list(stats.df) == [sum(token in d for d in documents) for token in query]
    assert stats.lengths == sum(len(d) for d in documents)
    avgdl = stats.lengths / stats.documents
    idf = reader.idf(query)
    assert idf == pytest.approx([math.log1p((stats.documents - df + 0.5) / (df + 0.5)) for df in stats.df])
    scores = reader.lexical(query).of(np.array([c.id for c, _ in passages], dtype=np.int64))
    for (_, _), document, score in zip(passages, documents, scores, strict=True):
        expected = 0.0
        for token, weight in zip(query, idf, strict=True):
            tf = document.count(token)
            expected += weight * tf / (tf + K1 * (1 - B + B * len(document) / avgdl))
        assert score == pytest.approx(expected, rel=1e-4)
