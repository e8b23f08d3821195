"""Cost curves of the index from 10,000 to 1,000,000 chunks, on a synthetic news stream.

    .venv/bin/python benchmarks/scale.py                      # 10k, 100k, 1M; table + plot to benchmarks/
    .venv/bin/python benchmarks/scale.py --chunks 100000 --json   # one size, one JSON object

The stream (built once per size and kept under ``$RAG_SCALE_DIR``, default ~/.cache/newsrag/scale):
- ``N / 3`` articles of 3 chunks, published in date order over ten years (2015-01-01 to 2024-12-31), as
  news arrives, from 50 outlets;
- each article takes the vector of one real chunk of the RealTime QA briefs index (5,018 vectors from
  all-MiniLM-L6-v2) plus Gaussian noise (0.03 per dimension, about 0.85 cosine to its source), and each
  of its chunks adds noise again: the clusters of the real corpus, at any size;
- text: six 15-word sentences per chunk and an 8-word title, words drawn from the briefs corpus with
  their frequencies; the stored BM25 tokens are those words' stems; every sentence gets a vector (its
  chunk's plus noise, stored as int8 as the service stores them).
Rows go straight into SQLite; opening the store then builds its segments from them (IVF-Flat above
50,000 chunks) and saves them, as it would after any bulk load.

Measured per size, each question of 300 real briefs questions asked as of its own date: answer latency
in-process (embedding included) by stage, and ``/ask`` over HTTP from one client; recall@10 of the
served dense stage against exact search under the same date window; adding a 64-article batch (its
vectors precomputed; the embedding time is measured apart) and deleting one article; opening the store;
the server's resident memory after the questions; bytes on disk per chunk.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals.cache import cached_answerer  # noqa: E402
from evals.config import EvalSettings  # noqa: E402
from evals.data import load_dataset  # noqa: E402
from index import packaged_embedder  # noqa: E402
from index.chunk import ChunkDraft  # noqa: E402
from index.config import IndexSettings  # noqa: E402
from index.embed import set_threads  # noqa: E402
from index.records import Article, Span  # noqa: E402
from index.sentences import split_sentences  # noqa: E402
from index.store import ArticleWrite, IndexStore  # noqa: E402
from index.store.lexical import SegmentedReader  # noqa: E402
from index.store.rows import quantize  # noqa: E402
from index.terms import tokenize  # noqa: E402

BRIEFS = ROOT / "evals" / "datasets" / "realtimeqa-briefs"
SIZES = (10_000, 100_000, 1_000_000)
FIRST_DAY = date(2015, 1, 1)
DAYS = (date(2024, 12, 31) - FIRST_DAY).days
OUTLETS = [f"Outlet {i:02d}" for i in range(50)]
ARTICLE_NOISE = 0.03
CHUNK_NOISE = 0.02
WORDS_PER_SENTENCE = 15
SENTENCES_PER_CHUNK = 6
_WORD = re.compile(r"[A-Za-z]+")


def _cache_dir() -> Path:
    return Path(os.environ.get("RAG_SCALE_DIR", Path.home() / ".cache" / "newsrag" / "scale"))


class Source:
    """Real material the stream is drawn from: briefs chunk vectors, words, their stems and frequencies."""

    def __init__(self) -> None:
        answerer = cached_answerer(
            BRIEFS / "corpus.jsonl",
            EvalSettings.from_env(),
            packaged_embedder(IndexSettings.from_env()),
        )
        reader = answerer.index.reader()
        self.vectors = reader.vectors(reader.chunk_ids())
        answerer.index.close()
        counts: collections.Counter[str] = collections.Counter()
        for line in (BRIEFS / "corpus.jsonl").open():
            counts.update(w.lower() for w in _WORD.findall(json.loads(line)["body"]))
        words = [w for w, _ in counts.most_common(30_000)]
        self.words = np.array(words)
        frequency = np.array([counts[w] for w in words], dtype=np.float64)
        self.p = frequency / frequency.sum()
        stems = tokenize(words)
        self.stems = [s[0] if s else "" for s in stems]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _article(
    i: int, n_articles: int, source: Source, rng: np.random.Generator
) -> tuple[dict[str, object], list[tuple[str, np.ndarray, list[str]]], list[tuple[int, int, np.ndarray]]]:
    """One synthetic article: its row, its chunks (text, vector, stems) and sentences (start, end, vector)."""
    day = FIRST_DAY + timedelta(days=int(i * DAYS / n_articles))
    base = source.vectors[rng.integers(source.vectors.shape[0])]
    topic = _unit(base + rng.normal(0, ARTICLE_NOISE, base.shape))
    word_ids = rng.choice(source.words.size, size=(3 * SENTENCES_PER_CHUNK, WORDS_PER_SENTENCE), p=source.p)
    title_ids = rng.choice(source.words.size, size=8, p=source.p)
    title = " ".join(source.words[title_ids]).capitalize()
    sentences = [" ".join(source.words[row]).capitalize() + "." for row in word_ids]
    texts = [" ".join(sentences[c * SENTENCES_PER_CHUNK : (c + 1) * SENTENCES_PER_CHUNK]) for c in range(3)]
    body = "\n\n".join(texts)
    title_stems = [source.stems[w] for w in title_ids if source.stems[w]]
    chunks, spans = [], []
    offset = 0
    for c, text in enumerate(texts):
        vector = _unit(topic + rng.normal(0, CHUNK_NOISE, topic.shape))
        stems = title_stems + [
            source.stems[w]
            for w in word_ids[c * SENTENCES_PER_CHUNK : (c + 1) * SENTENCES_PER_CHUNK].ravel()
            if source.stems[w]
        ]
        chunks.append((text, vector, stems))
        for span in split_sentences(text):
            spans.append(
                (
                    offset + span.start,
                    offset + span.end,
                    _unit(vector + rng.normal(0, CHUNK_NOISE, vector.shape)),
                )
            )
        offset += len(text) + 2
    row = {
        "id": f"s{i:07d}",
        "title": title,
        "body": body,
        "source": OUTLETS[int(rng.integers(len(OUTLETS)))],
        "url": f"https://news.example/{day.isoformat()}/{i}",
        "published_at": day.isoformat(),
        "title_terms": " ".join(title_stems),
    }
    return row, chunks, spans


def build(n_chunks: int, folder: Path, dimension: int) -> None:
    """Write the stream's rows into a fresh index in ``folder``, then let the store build its segments."""
    shutil.rmtree(folder, ignore_errors=True)
    IndexStore(folder, "all-MiniLM-L6-v2", dimension).close()
    source = Source()
    rng = np.random.default_rng(7)
    n_articles = n_chunks // 3
    db = sqlite3.connect(folder / "meta.sqlite", isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.executemany(
        "INSERT OR IGNORE INTO terms (term) VALUES (?)", [(s,) for s in dict.fromkeys(source.stems) if s]
    )
    chunk_id = 0
    started = time.perf_counter()
    for first in range(0, n_articles, 10_000):
        articles, chunks, sentences = [], [], []
        for i in range(first, min(first + 10_000, n_articles)):
            row, parts, spans = _article(i, n_articles, source, rng)
            articles.append(
                (
                    row["id"],
                    row["title"],
                    row["body"],
                    row["source"],
                    row["url"],
                    row["published_at"],
                    "[]",
                    hashlib.sha256(str(i).encode()).hexdigest(),
                    "synthetic",
                    "2025-01-01T00:00:00",
                    row["id"],
                    None,
                    row["title_terms"],
                )
            )
            offset = 0
            for ordinal, (text, vector, stems) in enumerate(parts):
                chunk_id += 1
                chunks.append(
                    (
                        chunk_id,
                        row["id"],
                        ordinal,
                        offset,
                        offset + len(text),
                        text,
                        150,
                        vector.tobytes(),
                        " ".join(stems),
                    )
                )
                offset += len(text) + 2
            blobs = quantize(np.vstack([v for _, _, v in spans]))
            sentences.extend((row["id"], s, e, blob) for (s, e, _), blob in zip(spans, blobs, strict=True))
        db.execute("BEGIN")
        db.executemany("INSERT INTO articles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", articles)
        db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", chunks)
        db.executemany("INSERT INTO sentences VALUES (?, ?, ?, ?)", sentences)
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        db.execute("COMMIT")
        print(
            f"  {chunk_id:,} chunks written ({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    db.close()
    started = time.perf_counter()
    IndexStore(folder, "all-MiniLM-L6-v2", dimension).close()  # builds and saves the segments
    print(f"  segments built in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    (folder / "COMPLETE").write_text(str(n_chunks))


def _rss_gb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def _exact_top(store: IndexStore, queries: np.ndarray, caps: list[int], k: int) -> list[set[int]]:
    """Exact top ``k`` per query among chunks published on or before its cap (undated always pass)."""
    snapshot = store.reader()
    ids = snapshot.chunk_ids()
    slots = snapshot.catalog.slots(ids)
    published = snapshot.catalog.published[slots]
    best_scores = np.full((len(caps), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(caps), k), dtype=np.int64)
    caps_array = np.array(caps)[:, None]
    for start in range(0, ids.size, 100_000):
        part = ids[start : start + 100_000]
        scores = queries @ snapshot.vectors(part).T
        allowed = (published[start : start + 100_000][None, :] <= caps_array) | (
            published[start : start + 100_000][None, :] < 0
        )
        scores = np.where(allowed, scores, -np.inf)
        merged_scores = np.hstack([best_scores, scores])
        merged_ids = np.hstack([best_ids, np.broadcast_to(part, scores.shape)])
        top = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, top, axis=1)
        best_ids = np.take_along_axis(merged_ids, top, axis=1)
    return [set(row.tolist()) for row in best_ids]


def measure(n_chunks: int, questions: int) -> dict[str, float]:  # noqa: PLR0915 - one measurement, in order
    import httpx

    from rag import Answerer
    from tests.servers import serving

    folder = _cache_dir() / f"chunks-{n_chunks}"
    embedder = packaged_embedder(IndexSettings.from_env())
    set_threads(1)  # as `rag serve` runs
    if not (folder / "COMPLETE").exists():
        subprocess.run([sys.executable, __file__, "--chunks", str(n_chunks), "--build-only"], check=True)
    work = Path(str(folder) + "-work")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(folder, work)  # adds and deletes below leave the built index as it was
    started = time.perf_counter()
    store = IndexStore(work, embedder.name, embedder.dimension)
    open_s = time.perf_counter() - started
    answerer = Answerer(store, embedder)
    dataset = load_dataset(BRIEFS)
    asked = sorted(dataset.questions, key=lambda q: hashlib.sha256(q.id.encode()).hexdigest())[:questions]
    answerer.ask(answerer.question("warm up", as_of=asked[0].asked_on))
    stages: dict[str, list[float]] = collections.defaultdict(list)
    for q in asked:
        answer = answerer.ask(answerer.question(q.question, as_of=q.asked_on))
        for stage, ms in answer.timings_ms.items():
            stages[stage].append(ms)
    # Recall of the served dense stage against exact search, under each question's date cap.
    vectors = embedder.embed([q.question for q in asked])
    snapshot = store.reader()
    windows = [snapshot.window(None, q.asked_on) for q in asked]
    served = [{i for i, _ in snapshot.dense(v, 10, w)} for v, w in zip(vectors, windows, strict=True)]
    exact = _exact_top(store, vectors, [w.before or 10**7 for w in windows], 10)
    recall = float(np.mean([len(s & e) / max(len(e), 1) for s, e in zip(served, exact, strict=True)]))
    # BM25: the served candidates (rarer terms nominate in large segments) against exact BM25 top 40.
    full = SegmentedReader(store._lexical.segments, store._lexical.vocabulary, large_segment=10**12)
    bm25_recall = []
    for q, w in zip(asked, windows, strict=True):
        tokens = tokenize([q.question])[0]
        want = {i for i, _ in full.query(tokens).top(40, w)}
        got = {i for i, _ in snapshot.lexical(tokens).top(40, w)}
        bm25_recall.append(len(got & want) / max(len(want), 1))
    # Writes: a 64-article batch (vectors precomputed) and single deletes.
    source_rng = np.random.default_rng(11)
    batch_vectors = _unit(source_rng.normal(size=(64 * 3, embedder.dimension)))
    texts = [
        f"Harbour works update {i}. The authority said repairs continue this week." for i in range(64 * 3)
    ]
    started = time.perf_counter()
    embedder.embed(texts + [t.split(". ")[1] for t in texts] * 6)
    embed_s = time.perf_counter() - started
    add_times, delete_times = [], []
    for round_ in range(5):
        batch = []
        for a in range(64):
            article_id = f"new-{round_}-{a}"
            body = " ".join(texts[a * 3 : a * 3 + 3])
            drafts = [ChunkDraft(c, Span(0, len(body)), body, 40) for c in range(3)]
            article = Article(article_id, f"Harbour {a}", body, "Outlet 01", None, date(2024, 12, 31))
            batch.append(ArticleWrite(article, drafts, batch_vectors[a * 3 : a * 3 + 3]))
        started = time.perf_counter()
        store.write(batch)
        add_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.delete(f"s{round_ * (n_chunks // 15):07d}")
        delete_times.append(time.perf_counter() - started)
    store.close()
    disk = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    # Over HTTP, one client, the same questions.
    env = {**os.environ, "RAG_DATA_DIR": str(work)}
    http: list[float] = []
    with serving(env, work / "server.log", "--rate-per-address", "0") as base:
        port = base.rsplit(":", 1)[1]
        pid = int(subprocess.check_output(["pgrep", "-f", "--", f"--port {port}"]).split()[0])
        with httpx.Client(base_url=base, timeout=120) as client:
            for q in asked:
                started = time.perf_counter()
                client.post(
                    "/ask", json={"question": q.question, "as_of": q.asked_on.isoformat()}
                ).raise_for_status()
                http.append((time.perf_counter() - started) * 1000)
        rss = _rss_gb(pid)
    shutil.rmtree(work, ignore_errors=True)

    def pct(values: list[float], p: float) -> float:
        return round(float(np.percentile(values, p)), 1)

    result: dict[str, float] = {"chunks": n_chunks}
    for stage, values in stages.items():
        result[f"{stage}_p50_ms"] = pct(values, 50)
        result[f"{stage}_p95_ms"] = pct(values, 95)
    result.update(
        query_p50_ms=pct(stages["total"], 50),
        query_p95_ms=pct(stages["total"], 95),
        http_p50_ms=pct(http, 50),
        http_p95_ms=pct(http, 95),
        recall_at_10=round(recall, 4),
        bm25_recall_at_40=round(float(np.mean(bm25_recall)), 4),
        add_batch_s=round(float(np.median(add_times)), 3),
        embed_batch_s=round(embed_s, 2),
        delete_s=round(float(np.median(delete_times)), 3),
        open_s=round(open_s, 2),
        rss_gb=round(rss, 2),
        disk_bytes_per_chunk=round(disk / n_chunks),
    )
    return result


def report(results: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["chunks"] for r in results]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for stage in ("embed", "retrieve", "compose", "total"):
        axis.plot(sizes, [r[f"{stage}_p50_ms"] for r in results], marker="o", label=f"{stage} p50")
    axis.plot(
        sizes, [r["http_p50_ms"] for r in results], marker="s", linestyle="--", label="/ask over HTTP p50"
    )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("chunks in the index")
    axis.set_ylabel("ms per question")
    axis.set_title("Answer latency against corpus size (2-core CPU)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(ROOT / "benchmarks" / "scale.png", dpi=110)
    keys = [
        "chunks",
        "query_p50_ms",
        "query_p95_ms",
        "embed_p50_ms",
        "retrieve_p50_ms",
        "retrieve_p95_ms",
        "compose_p50_ms",
        "http_p50_ms",
        "http_p95_ms",
        "recall_at_10",
        "bm25_recall_at_40",
        "add_batch_s",
        "embed_batch_s",
        "delete_s",
        "open_s",
        "rss_gb",
        "disk_bytes_per_chunk",
    ]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in results:
        print("| " + " | ".join(f"{r[k]:,}" if isinstance(r[k], int) else str(r[k]) for k in keys) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, help="one size (default: 10k, 100k and 1M)")
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print one JSON object (with --chunks)")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        build(
            args.chunks,
            _cache_dir() / f"chunks-{args.chunks}",
            packaged_embedder(IndexSettings.from_env()).dimension,
        )
        return 0
    if args.chunks:
        result = measure(args.chunks, args.questions)
        print(json.dumps(result) if args.json else result)
        return 0
    results = []
    for size in SIZES:
        output = subprocess.run(
            [sys.executable, __file__, "--chunks", str(size), "--questions", str(args.questions), "--json"],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(output.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
