"""A poll of a few hundred feed entries from a real HTTP server on 127.0.0.1, and a second poll of the
same feed.

    .venv/bin/python benchmarks/feeds.py [--entries 300] [--json]

The site serves an RSS feed of N entries whose pages are RealTime QA articles (the articles corpus, then
briefs items) wrapped in a news page's navigation, cookie banner, related links and footer, with ETags.
The poll runs in this process through the served path (api/work/poll.py: the fetcher, trafilatura, the one
ingest path and the packaged model on ONNX Runtime) into a fresh index, without the pause between
requests to one host (a real site gets one request a second). Prints entries per second, the share of
the time spent embedding, and the second poll's requests and time.
"""

from __future__ import annotations

import argparse
import html
import http.server
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.store.feeds import FeedRegistry  # noqa: E402
from api.work.poll import Poller, detect  # noqa: E402
from index import Embedder, IndexSettings, load_paths, make_ingestor, packaged_embedder  # noqa: E402
from index.embed import Vectors, core_count  # noqa: E402
from index.fetch import Fetcher, Limits, parse_networks  # noqa: E402
from index.records import Article  # noqa: E402
from index.store import IndexStore  # noqa: E402

DATASETS = ROOT / "evals" / "datasets"


class Timed:
    """The model, with the time its calls take."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self.name, self.dimension = embedder.name, embedder.dimension
        self.seconds = 0.0

    def embed(self, texts: list[str]) -> Vectors:
        started = time.perf_counter()
        try:
            return self._embedder.embed(texts)
        finally:
            self.seconds += time.perf_counter() - started


def _title(article: Article) -> str:
    return article.title or " ".join(article.body.split()[:10])


def _page(article: Article) -> bytes:
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in article.body.split("\n") if p.strip())
    return f"""<!doctype html><html><head><title>{html.escape(_title(article))} | News</title></head><body>
<nav><a href="/">Home</a> | <a href="/world">World</a></nav><div class="cookie">We use cookies. Accept</div>
<article><h1>{html.escape(_title(article))}</h1>{paragraphs}</article>
<aside><h3>Related</h3><a href="/x">Another story</a></aside><footer>Copyright. Privacy.</footer>
</body></html>""".encode()


def _articles(count: int) -> list[Article]:
    found: list[Article] = []
    for corpus in ("realtimeqa-articles", "realtimeqa-briefs"):
        for item in load_paths([DATASETS / corpus / "corpus.jsonl"]):
            if isinstance(item, Article) and item.body.strip() and len(found) < count:
                found.append(item)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    articles = _articles(args.entries)
    pages = {f"/story/{i}": _page(a) for i, a in enumerate(articles)}
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            body = feed if self.path == "/feed.xml" else pages.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            etag = f'"{hash(body) & 0xFFFFFFFF:x}"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    items = "".join(
        f"<item><title>{html.escape(_title(a))}</title><link>{base}/story/{i}</link>"
        f"<pubDate>Mon, 15 Apr 2024 10:00:00 GMT</pubDate></item>"
        for i, a in enumerate(articles)
    )
    channel = f"<channel><title>Bench</title>{items}</channel>"
    feed = f'<?xml version="1.0"?><rss version="2.0">{channel}</rss>'.encode()

    work = Path(tempfile.mkdtemp(prefix="newsrag-feeds-"))
    settings = IndexSettings.from_env()
    settings = IndexSettings(data_dir=work / "index", tiktoken_cache_dir=settings.tiktoken_cache_dir)
    model = Timed(packaged_embedder(settings, core_count()))
    model.embed(["warm up"])
    model.seconds = 0.0
    store = IndexStore(settings.data_dir, model.name, model.dimension)
    registry = FeedRegistry(work / "service.sqlite")
    fetcher = Fetcher(parse_networks("127.0.0.0/8"), Limits(host_delay_seconds=0.0))
    poller = Poller(registry, fetcher, make_ingestor(settings, store, model))
    parsed = detect(fetcher, f"{base}/feed.xml")
    feed_row = registry.add(f"{base}/feed.xml", "Bench", parsed.kind, 900)
    requests.clear()
    started = time.perf_counter()
    first = poller.poll(registry.get(str(feed_row.id)))
    first_s = time.perf_counter() - started
    first_requests = len(requests)
    requests.clear()
    started = time.perf_counter()
    second = poller.poll(registry.get(str(feed_row.id)))
    second_s = time.perf_counter() - started
    figures = {
        "entries": len(articles),
        "first_poll_s": round(first_s, 2),
        "first_added": len(first.added),
        "first_requests": first_requests,
        "entries_per_s": round(len(articles) / first_s, 1),
        "embedding_share": round(model.seconds / first_s, 3),
        "chunks": store.reader().size,
        "second_poll_status": second.status,
        "second_poll_requests": len(requests),
        "second_poll_s": round(second_s, 3),
    }
    fetcher.close()
    registry.close()
    store.close()
    server.shutdown()
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:<22} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
