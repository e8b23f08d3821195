"""News-aware retrieval on a small dated corpus: as_of, periods, BM25 beside FAISS, duplicate stories."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from index import Embedder, load_paths, make_ingestor
from index.errors import ConfigError
from index.terms import tokenize
from rag import Answerer, Filters
from rag.rank import LinearRanker
from tests.conftest import make_settings, open_local

RAISE = (
    "Freedonia's central bank raised its main interest rate to 6 percent on Wednesday, its fifth increase "
    "in a row, saying inflation in food and energy prices was still far above its target."
)
CUT = (
    "Freedonia's central bank cut its main interest rate to 4 percent on Wednesday, the first cut in two "
    "years, as inflation eased and unemployment rose in the spring."
)
CORPUS = [
    {"id": "rates-2023", "source": "Daily Ledger", "published_at": "2023-03-01", "body": RAISE},
    {"id": "rates-2024", "source": "Daily Ledger", "published_at": "2024-05-08", "body": CUT},
    {
        "id": "rates-2024-wire",
        "source": "Wire Service",
        "published_at": "2024-05-09",
        "body": CUT + " Markets rose after the announcement.",
    },
    {
        "id": "rates-future",
        "source": "Daily Ledger",
        "published_at": "2024-06-01",
        "body": "Freedonia's central bank cut its main interest rate again on Wednesday, to 3.5 percent.",
    },
    {
        "id": "harvest",
        "source": "Farm Weekly",
        "published_at": "2024-05-07",
        "body": "Freedonia's wheat harvest is expected to be the largest in a decade after a wet spring.",
    },
]
AS_OF = date(2024, 5, 10)


@pytest.fixture
def answerer(tmp_path: Path, tiktoken_dir: Path, embedder: Embedder) -> Iterator[Answerer]:
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    settings = make_settings(tmp_path / "data", tiktoken_dir)
    store = open_local(settings, embedder)
    report = make_ingestor(settings.index, store, embedder).ingest(load_paths([tmp_path / "corpus.jsonl"]))
    assert len(report.added) == 5
    yield Answerer(store, embedder, settings.answers)
    store.close()


def _ids(answerer: Answerer, question: str, as_of: date = AS_OF, **filters: object) -> list[str]:
    q = answerer.question(question, as_of=as_of, top_k=10, filters=Filters(**filters))  # type: ignore[arg-type]
    return [h.article.id for h in answerer.search(q)]


def test_nothing_published_after_as_of_is_ever_returned(answerer: Answerer) -> None:
    for question in ("central bank cut interest rate again 3.5 percent", "Freedonia", "wheat harvest"):
        assert "rates-future" not in _ids(answerer, question)
    assert (
        _ids(answerer, "central bank cut interest rate again 3.5 percent", date(2024, 6, 2))[0]
        == "rates-future"
    )


def test_a_named_month_finds_that_months_story(answerer: Answerer) -> None:
    question = "What did Freedonia's central bank do with interest rates in March 2023?"
    assert _ids(answerer, question)[0] == "rates-2023"


def test_a_named_year_is_a_soft_signal(answerer: Answerer) -> None:
    question = "What did Freedonia's central bank do with interest rates in 2023?"
    assert "rates-2023" in _ids(answerer, question)[:2]


def test_this_week_finds_the_recent_story(answerer: Answerer) -> None:
    assert (
        _ids(answerer, "What did Freedonia's central bank do with interest rates this week?")[0]
        == "rates-2024"
    )


def test_copies_of_one_story_collapse_into_the_earliest(answerer: Answerer) -> None:
    reader = answerer.index.reader()
    stories = {a: e.story for a in ("rates-2024", "rates-2024-wire", "rates-2023") if (e := reader.entry(a))}
    assert stories["rates-2024"] == stories["rates-2024-wire"] != stories["rates-2023"]
    hits = answerer.search(answerer.question("Why did the central bank cut rates?", as_of=AS_OF, top_k=10))
    ids = [h.article.id for h in hits]
    assert "rates-2024-wire" not in ids
    (hit,) = [h for h in hits if h.article.id == "rates-2024"]
    assert [a.id for a in hit.also_reported] == ["rates-2024-wire"]
    assert hit.also_reported[0].source == "Wire Service"


def test_the_source_filter_applies_to_every_candidate_source(answerer: Answerer) -> None:
    assert set(_ids(answerer, "Freedonia interest rate", sources=("farm weekly",))) == {"harvest"}


def test_bm25_follows_deletes(answerer: Answerer) -> None:
    index = answerer.index
    tokens = tokenize(["wheat harvest"])[0]
    before = index.reader().lexical(tokens).top(5)
    assert before
    entry = index.reader().entry("harvest")
    assert entry is not None
    harvest = set(entry.chunk_ids)
    assert {i for i, _ in before} & harvest
    index.delete("harvest")
    after = index.reader().lexical(tokens).top(5)
    assert not {i for i, _ in after} & harvest
    assert "harvest" not in _ids(answerer, "wheat harvest")


def test_a_damaged_ranker_file_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "ranker.json"
    path.write_text('{"features": ["dense", "no-such-feature"], "mean": [0, 0]}')
    with pytest.raises(ConfigError, match=r"evals\.fit\.ranker"):
        LinearRanker.load(path)


def test_the_packaged_ranker_loads() -> None:
    ranker = LinearRanker.load()
    assert "fresh_7" in ranker.names
    assert ranker.weights.size == len(ranker.names)
