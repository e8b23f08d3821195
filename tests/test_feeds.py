"""Feeds and sitemaps followed from a real HTTP server on 127.0.0.1: what becomes an article, what is not
fetched again, and what the fetcher refuses (index/feeds.py, index/fetch.py, api/work/poll.py)."""

from __future__ import annotations

import gzip
import http.server
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from api.store.feeds import FeedRegistry
from api.work.feeds import FeedWorker
from api.work.poll import Poller, detect
from index import Article, Embedder, IndexSettings, make_ingestor
from index.feeds import FeedError, article_id, parse
from index.fetch import Fetcher, FetchError, Limits, parse_networks
from index.store import IndexStore
from tests.servers import rag, rag_env, until
from tests.sites import Reply, Site, article_page, rss, serve_site

LOOPBACK = parse_networks("127.0.0.0/8")
QUICK = Limits(host_delay_seconds=0.0, read_seconds=2.0)

COUNCIL = (
    "Council votes for cycling lanes",
    "The city council voted 7 to 2 on Tuesday to build protected cycling lanes on Harbour Road, "
    "the mayor said.",
)


@pytest.fixture
def store(tmp_path: Path, embedder: Embedder) -> Iterator[IndexStore]:
    opened = IndexStore(tmp_path / "index", embedder.name, embedder.dimension)
    yield opened
    opened.close()


@pytest.fixture
def poller(tmp_path: Path, store: IndexStore, embedder: Embedder, tiktoken_dir: Path) -> Iterator[Poller]:
    settings = IndexSettings(data_dir=tmp_path / "index", tiktoken_cache_dir=tiktoken_dir)
    registry = FeedRegistry(tmp_path / "service.sqlite")
    fetcher = Fetcher(LOOPBACK, QUICK)
    yield Poller(registry, fetcher, make_ingestor(settings, store, embedder))
    fetcher.close()
    registry.close()


def _article(store: IndexStore, url: str) -> Article:
    found = store.reader().articles([article_id(url)])
    assert found, f"no article for {url}"
    return found[article_id(url)]


def _follow(poller: Poller, url: str) -> int:
    parsed = detect(poller.fetcher, url)
    return poller.registry.add(url, parsed.title or url, parsed.kind, 900).id


def test_an_rss_feed_becomes_articles_without_the_sites_furniture(
    site: Site, poller: Poller, store: IndexStore
) -> None:
    site.page(
        "/a",
        article_page(*COUNCIL),
        etag='"a1"',
    )
    site.page(
        "/b",
        article_page(
            "Ferry strike ends",
            "Ferry crews ended their strike on Wednesday after the "
            "operator agreed to a new rota for the winter season.",
        ),
        etag='"b1"',
    )
    items = [("/a", "Council votes for cycling lanes", "Tue, 16 Apr 2024 10:00:00 GMT"),
             ("/b", "Ferry strike ends", "Wed, 17 Apr 2024 09:00:00 GMT")]  # fmt: skip
    site.page("/feed.xml", rss(site, items), etag='"f1"', kind="application/rss+xml")
    feed_id = _follow(poller, f"{site.base}/feed.xml")
    feed = poller.registry.get(str(feed_id))
    assert feed.kind == "rss"

    report = poller.poll(feed)
    assert report.status == "ok", report.error
    assert len(report.added) == 2
    article = _article(store, f"{site.base}/a")
    assert "voted 7 to 2" in article.body
    for furniture in ("cookies", "Related stories", "Copyright", "Sport"):
        assert furniture not in article.body
    assert article.title == "Council votes for cycling lanes"
    assert article.source == "Harbour Times"
    assert str(article.published_at) == "2024-04-16"

    # Second poll: the feed answers 304; nothing else is fetched, nothing embedded.
    before = list(site.log)
    again = poller.poll(poller.registry.get(str(feed_id)))
    assert again.status == "not modified"
    assert site.log[len(before) :] == ["/feed.xml"]
    assert again.added == []
    assert again.replaced == []

    # The feed changes: an updated entry replaces its article; the unchanged one is not fetched again.
    items[0] = ("/a", "Council votes for cycling lanes", "Thu, 18 Apr 2024 08:00:00 GMT")
    site.page("/feed.xml", rss(site, items), etag='"f2"', kind="application/rss+xml")
    site.page(
        "/a",
        article_page(
            "Council votes for cycling lanes",
            "The city council voted 7 to 2 on Tuesday; "
            "on Thursday it set aside 4 million euros for the cycling lanes on Harbour Road.",
        ),
        etag='"a2"',
    )
    before = list(site.log)
    third = poller.poll(poller.registry.get(str(feed_id)))
    assert third.status == "ok"
    assert third.replaced == [article_id(f"{site.base}/a")]
    assert "/b" not in site.log[len(before) :]
    assert "4 million euros" in _article(store, f"{site.base}/a").body


def test_atom_and_a_news_sitemap(site: Site, poller: Poller, store: IndexStore) -> None:
    site.page(
        "/p1",
        article_page(
            "Bridge reopens",
            "The harbour bridge reopened on Monday after three months "
            "of repairs, the city's transport office said.",
        ),
    )
    site.page(
        "/p2",
        article_page(
            "Library extends hours",
            "The central library will open until 10 p.m. on "
            "weekdays from May, the council announced on Friday.",
        ),
    )
    atom = f"""<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>City</title>
<entry><title>Bridge reopens</title><link href="{site.base}/p1"/><updated>2024-04-15T08:00:00Z</updated>
<author><name>Bo Chen</name></author></entry></feed>""".encode()
    sitemap = f"""<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"
 xmlns:news="http://www.google.com/schemas/sitemap-news/0.9"><url><loc>{site.base}/p2</loc><news:news>
<news:publication><news:name>City Post</news:name><news:language>en</news:language></news:publication>
<news:publication_date>2024-04-19</news:publication_date><news:title>Library extends hours</news:title>
</news:news></url></urlset>""".encode()
    site.page("/atom.xml", atom, kind="application/atom+xml")
    site.page("/news-sitemap.xml", sitemap, kind="application/xml")
    atom_feed = poller.registry.get(str(_follow(poller, f"{site.base}/atom.xml")))
    news = poller.registry.get(str(_follow(poller, f"{site.base}/news-sitemap.xml")))
    assert (atom_feed.kind, news.kind) == ("atom", "news-sitemap")
    assert len(poller.poll(atom_feed).added) == 1
    assert len(poller.poll(news).added) == 1
    first = _article(store, f"{site.base}/p1")
    second = _article(store, f"{site.base}/p2")
    assert first.authors == ("Bo Chen",)
    assert second.source == "City Post"
    assert str(second.published_at) == "2024-04-19"

    # A sitemap index naming a plain sitemap: its pages are followed too.
    site.page("/p3", article_page("Tram line opens", "The new tram line to the airport opened on Saturday "
              "with trams every eight minutes, the operator said."))  # fmt: skip
    plain = f"""<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<url><loc>{site.base}/p3</loc><lastmod>2024-04-20</lastmod></url></urlset>""".encode()
    index = f"""<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<sitemap><loc>{site.base}/sitemap-1.xml</loc></sitemap></sitemapindex>""".encode()
    site.page("/sitemap-1.xml", plain, kind="application/xml")
    site.page("/sitemap.xml", index, kind="application/xml")
    assert parse(plain).kind == "sitemap"
    listing = poller.registry.get(str(_follow(poller, f"{site.base}/sitemap.xml")))
    assert listing.kind == "sitemap-index"
    assert len(poller.poll(listing).added) == 1
    assert str(_article(store, f"{site.base}/p3").published_at) == "2024-04-20"


def test_a_malformed_feed_is_read_as_far_as_it_goes_and_reported(site: Site, poller: Poller) -> None:
    site.page("/m1", article_page("Market hall reopens", "The covered market hall reopened on Saturday "
              "after a year of repairs to its roof, the city said."))  # fmt: skip
    broken = (
        f"<rss version='2.0'><channel><title>Broken</title><item><title>Market hall reopens</title>"
        f"<link>{site.base}/m1</link></item>".encode()
    )  # the document ends early
    site.page("/broken.xml", broken, kind="application/rss+xml")
    feed = poller.registry.get(str(_follow(poller, f"{site.base}/broken.xml")))
    report = poller.poll(feed)
    assert report.status == "ok"
    assert len(report.added) == 1
    assert "not well-formed" in (report.error or "")
    assert "not well-formed" in (poller.registry.get(str(feed.id)).last_error or "")


def test_a_redirect_a_missing_page_and_robots_txt(site: Site, poller: Poller, store: IndexStore) -> None:
    site.routes["/old-feed"] = lambda _: (301, {"Location": "/feed.xml"}, b"")
    site.page("/robots.txt", b"User-agent: *\nDisallow: /private/\n", kind="text/plain")
    site.page(
        "/ok",
        article_page(
            "Port expands",
            "The port authority will add two berths for container "
            "ships by 2026, its director told reporters on Monday.",
        ),
    )
    items = [("/ok", "Port expands", "Mon, 15 Apr 2024 10:00:00 GMT"),
             ("/gone", "A page that is gone", "Mon, 15 Apr 2024 11:00:00 GMT"),
             ("/private/memo", "A disallowed page", "Mon, 15 Apr 2024 12:00:00 GMT")]  # fmt: skip
    site.page("/feed.xml", rss(site, items), kind="application/rss+xml")
    feed = poller.registry.get(str(_follow(poller, f"{site.base}/old-feed")))
    report = poller.poll(feed)
    assert report.status == "ok"
    assert len(report.added) == 3
    # The 404 and the page robots.txt disallows fall back to the feed's own summary; the latter is
    # never requested.
    assert "/private/memo" not in site.log
    assert site.requests_to("/gone") == 1
    assert "the feed's own summary" in _article(store, f"{site.base}/gone").body
    assert "the feed's own summary" in _article(store, f"{site.base}/private/memo").body
    assert "two berths" in _article(store, f"{site.base}/ok").body


def test_failures_are_reported_and_counted(site: Site, poller: Poller) -> None:
    site.routes["/broken"] = lambda _: (500, {}, b"oops")

    def slow(_: http.server.BaseHTTPRequestHandler) -> Reply:
        time.sleep(3)
        return 200, {}, b"<rss/>"

    site.routes["/slow"] = slow
    for path, reason in (("/broken", "HTTP 500"), ("/slow", "timed out")):
        feed = poller.registry.add(f"{site.base}{path}", path, "rss", 900)
        report = poller.poll(feed)
        assert report.status == "failed"
        assert reason in (report.error or "")
        assert poller.registry.get(str(feed.id)).failures == 1


def test_a_site_that_hangs_delays_only_its_own_feeds(
    site: Site, tmp_path: Path, store: IndexStore, embedder: Embedder, tiktoken_dir: Path
) -> None:
    """The feed worker polls a few feeds at once, one at a time per host: a feed on another host is
    polled, and its article stored, while the first site still holds the worker's request to it (with
    a deadline of minutes here: polled one at a time, the second feed would never be reached)."""
    held = threading.Event()
    asked = threading.Event()

    def hanging(_: http.server.BaseHTTPRequestHandler) -> Reply:
        asked.set()
        held.wait(120)
        return 200, {"Content-Type": "application/rss+xml"}, rss(site, [])

    site.routes["/feed.xml"] = hanging
    settings = IndexSettings(data_dir=tmp_path / "index", tiktoken_cache_dir=tiktoken_dir)
    registry = FeedRegistry(tmp_path / "service.sqlite")
    patient = Fetcher(LOOPBACK, Limits(host_delay_seconds=0.0, read_seconds=300, total_seconds=300))
    worker = FeedWorker(Poller(registry, patient, make_ingestor(settings, store, embedder)), 0.05)
    with serve_site() as other:
        other.page("/a", article_page(*COUNCIL))
        entry = ("/a", "Council votes for cycling lanes", "Tue, 16 Apr 2024 10:00:00 GMT")
        other.page("/feed.xml", rss(other, [entry]), kind="application/rss+xml")
        registry.add(f"{site.base}/feed.xml", "Hanging", "rss", 900)  # first in line
        registry.add(f"{other.base}/feed.xml", "Harbour Times", "rss", 900)
        worker.start()
        try:
            assert asked.wait(60)
            until(lambda: store.reader().articles([article_id(f"{other.base}/a")]))
            assert not held.is_set()  # the first site still holds its request
        finally:
            held.set()
            worker.close()


def test_dangerous_documents_are_refused(site: Site) -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE z [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b'<rss version="2.0"><channel><title>&c;</title></channel></rss>'
    )
    external = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<rss version="2.0"><channel><title>&x;</title></channel></rss>'
    )
    for document in (bomb, external):
        with pytest.raises(FeedError, match="refused"):
            parse(document)
    malformed = parse(b"<rss version='2.0'><channel><title>x</title><item><title>a</title>"
                      b"<link>https://example.org/a</link></item>")  # fmt: skip
    assert [e.url for e in malformed.entries] == ["https://example.org/a"]
    assert malformed.problems

    small = Fetcher(LOOPBACK, Limits(max_bytes=10_000, host_delay_seconds=0.0))
    site.page("/big", b"x" * 20_000)
    inflated = gzip.compress(b"<" * 5_000_000)  # 5 MB of markup in about 5 kB

    def bomb_reply(_: http.server.BaseHTTPRequestHandler) -> Reply:
        return 200, {"Content-Encoding": "gzip", "Content-Type": "application/xml"}, inflated

    site.routes["/gzip-bomb"] = bomb_reply
    for path in ("/big", "/gzip-bomb"):
        with pytest.raises(FetchError, match="over the limit"):
            small.get(f"{site.base}{path}")
    small.close()

    public_only = Fetcher(limits=QUICK)
    with pytest.raises(FetchError, match="not a public address"):
        public_only.get(f"{site.base}/big")
    with pytest.raises(FetchError, match="only http"):
        public_only.get("file:///etc/passwd")
    public_only.close()
    assert "/big" in site.log  # fetched once, by the fetcher that allows loopback


REFUSED_HOSTS = [
    "127.0.0.1", "2130706433", "0x7f000001", "10.1.2.3", "192.168.0.1", "169.254.169.254",
    "100.64.0.1", "100.100.100.200",  # shared address space (the latter a cloud metadata address)
    "192.0.0.8", "0.0.0.0", "224.0.0.1", "198.18.0.1", "192.0.2.1",
    "[::1]", "[::]", "[fe80::1]", "[fd00::1]", "[fec0::1]", "[ff02::1]", "[2001:db8::1]",
    "[::ffff:127.0.0.1]", "[::ffff:a9fe:a9fe]", "[::127.0.0.1]",  # IPv4-mapped, IPv4-compatible
    "[64:ff9b::7f00:1]", "[64:ff9b::a9fe:a9fe]", "[64:ff9b:1::1]",  # NAT64
    "[2002:a9fe:a9fe::]", "[2002:7f00:1::]",  # 6to4 of 169.254.169.254 and 127.0.0.1
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo whose client is 127.0.0.1
]  # fmt: skip
PUBLIC_HOSTS = ["93.184.216.34", "[2606:4700::1111]", "[::ffff:93.184.216.34]", "[64:ff9b::5db8:d822]",
                "[2002:5db8:d822::1]"]  # fmt: skip


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_one_address_rule_refuses_every_non_public_spelling(host: str) -> None:
    """Feeds, pages and webhooks go through one check (``index.fetch.is_public``), at creation and again
    on the connected socket; literal addresses need no name lookup."""
    fetcher = Fetcher()
    try:
        with pytest.raises(FetchError, match="not a public address"):
            fetcher.check_address(f"http://{host}/hook")
    finally:
        fetcher.close()


@pytest.mark.parametrize("host", PUBLIC_HOSTS)
def test_one_address_rule_lets_public_addresses_through(host: str) -> None:
    fetcher = Fetcher()
    try:
        fetcher.check_address(f"https://{host}/hook")
    finally:
        fetcher.close()


def test_the_feeds_command_line(site: Site, tmp_path: Path, tiktoken_dir: Path) -> None:
    site.page(
        "/a",
        article_page(*COUNCIL),
    )
    entry = ("/a", "Council votes for cycling lanes", "Tue, 16 Apr 2024 10:00:00 GMT")
    site.page("/feed.xml", rss(site, [entry]),
              kind="application/rss+xml")  # fmt: skip
    env = rag_env(tmp_path / "data", tiktoken_dir)
    refused = rag("feeds", "add", f"{site.base}/feed.xml", env=env)
    assert refused.returncode == 2
    assert "not a public address" in refused.stderr
    env["RAG_FEEDS_ALLOW_NETWORKS"] = "127.0.0.0/8"
    added = rag("feeds", "add", f"{site.base}/feed.xml", "--every", "1h", env=env)
    assert added.returncode == 0, added.stderr
    feed_id = added.stdout.strip()
    polled = rag("feeds", "poll", feed_id, env=env)
    assert polled.returncode == 0, polled.stderr
    assert "1 added" in polled.stdout
    listed = rag("feeds", "list", env=env)
    assert "Harbour Times" in listed.stdout
    assert "1 articles" in listed.stdout
    asked = rag("ask", "How did the council vote on the cycling lanes?", env=env)
    assert "7 to 2" in asked.stdout
    assert rag("feeds", "remove", feed_id, env=env).returncode == 0
    assert "no feeds" in rag("feeds", "list", env=env).stdout


def test_rag_serve_polls_feeds_in_the_background(site: Site, tmp_path: Path, tiktoken_dir: Path) -> None:
    import httpx

    from tests.conftest import SEEDS
    from tests.servers import serving

    site.page("/a", article_page("Lighthouse restored", "The old lighthouse on Gull Point was restored and "
              "will open to visitors on 1 June, the heritage trust said on Monday."))  # fmt: skip
    entry = ("/a", "Lighthouse restored", "Mon, 15 Apr 2024 10:00:00 GMT")
    site.page("/feed.xml", rss(site, [entry]), etag='"f1"', kind="application/rss+xml")
    env = rag_env(tmp_path / "data", tiktoken_dir) | {
        "RAG_FEEDS_ALLOW_NETWORKS": "127.0.0.0/8",
        "RAG_FEEDS_CHECK_SECONDS": "0.5",
    }
    assert rag("ingest", "--quiet", str(SEEDS), env=env).returncode == 0
    with serving(env, tmp_path / "server.log") as base:
        bad = httpx.post(f"{base}/feeds", json={"url": f"{site.base}/a"})
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert "not a feed" in bad.json()["detail"]
        added = httpx.post(f"{base}/feeds", json={"url": f"{site.base}/feed.xml", "every": "1h"})
        assert added.status_code == 201, added.text
        feed = added.json()
        assert feed["kind"] == "rss"
        deadline = time.monotonic() + 60
        answer = ""
        while time.monotonic() < deadline and "Gull Point" not in answer:
            time.sleep(0.5)
            answer = httpx.post(f"{base}/ask", json={"question": "When will the Gull Point lighthouse open?"},
                                timeout=30).json()["answer"]  # fmt: skip
        assert "1 June" in answer  # picked up without a restart
        listed = httpx.get(f"{base}/feeds").json()
        assert listed[0]["articles_added"] == 1
        assert listed[0]["last_status"] == "ok"
        before = len(site.log)
        assert httpx.post(f"{base}/feeds/{feed['id']}/poll", json={}).status_code == 202
        while time.monotonic() < deadline and httpx.get(f"{base}/feeds").json()[0]["last_status"] == "ok":
            time.sleep(0.2)
        assert httpx.get(f"{base}/feeds").json()[0]["last_status"] == "not modified"
        assert site.log[before:] == ["/feed.xml"]
        assert "newsqa_feed_polls_total" in httpx.get(f"{base}/metrics").text
        assert httpx.delete(f"{base}/feeds/{feed['id']}").status_code == 204
        assert httpx.delete(f"{base}/feeds/{feed['id']}").status_code == 404
        assert httpx.get(f"{base}/feeds").json() == []


def _many(site: Site, count: int, slow_after: int, delay: float) -> None:
    """A feed of ``count`` entries whose pages after the first ``slow_after`` each take ``delay`` s."""
    items = []
    for i in range(count):
        path = f"/story-{i}"
        page = article_page(f"Harbour story {i}", f"Story {i}: the harbour board approved plan number {i} "
                             f"for berth {i % 7} on a vote of {i % 5 + 3} to 2, its chair said.")  # fmt: skip

        def reply(
            _: http.server.BaseHTTPRequestHandler, page: bytes = page, slow: bool = i >= slow_after
        ) -> Reply:
            if slow:
                time.sleep(delay)
            return 200, {"Content-Type": "text/html"}, page

        site.routes[path] = reply
        items.append((path, f"Harbour story {i}", "Mon, 15 Apr 2024 10:00:00 GMT"))
    site.page("/feed.xml", rss(site, items), kind="application/rss+xml")


def _cli_env(tmp_path: Path, tiktoken_dir: Path) -> dict[str, str]:
    return rag_env(tmp_path / "data", tiktoken_dir) | {
        "RAG_FEEDS_ALLOW_NETWORKS": "127.0.0.0/8",
        "RAG_FEEDS_HOST_DELAY": "0",
    }


def test_a_poll_killed_midway_is_resumed_without_loss(site: Site, tmp_path: Path, tiktoken_dir: Path) -> None:
    import signal
    import sqlite3
    import subprocess
    import sys

    from tests.servers import ROOT

    _many(site, 30, slow_after=22, delay=1.0)
    env = _cli_env(tmp_path, tiktoken_dir)
    feed_id = rag("feeds", "add", f"{site.base}/feed.xml", env=env).stdout.strip()
    poll = subprocess.Popen(
        [sys.executable, "-m", "api", "feeds", "poll", feed_id], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    state = Path(env["RAG_DATA_DIR"]) / "service.sqlite"
    deadline = time.monotonic() + 120
    recorded = 0
    while time.monotonic() < deadline and recorded < 20:  # the first group is committed and recorded
        time.sleep(0.2)
        with sqlite3.connect(state) as db:
            recorded = db.execute("SELECT count(*) FROM feed_entries").fetchone()[0]
    assert recorded == 20
    poll.send_signal(signal.SIGKILL)
    poll.wait()

    resumed = rag("feeds", "poll", feed_id, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "20 unchanged" in resumed.stdout  # recorded entries are not fetched again
    for i in range(20):
        assert site.requests_to(f"/story-{i}") == 1
    store = IndexStore(Path(env["RAG_DATA_DIR"]) / "index", "all-MiniLM-L6-v2", 384)
    assert store.reader().article_count == 30
    store.close()


def test_two_processes_polling_at_once_do_not_fetch_twice(
    site: Site, tmp_path: Path, tiktoken_dir: Path
) -> None:
    import subprocess
    import sys

    from tests.servers import ROOT

    _many(site, 6, slow_after=0, delay=1.5)
    env = _cli_env(tmp_path, tiktoken_dir)
    feed_id = rag("feeds", "add", f"{site.base}/feed.xml", env=env).stdout.strip()
    command = [sys.executable, "-m", "api", "feeds", "poll", feed_id]
    polls = [
        subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in polls]
    assert all(p.returncode == 0 for p in polls)
    assert sum("6 added" in out for out in outputs) == 1
    assert sum("another process is polling it" in out for out in outputs) == 1
    for i in range(6):
        assert site.requests_to(f"/story-{i}") == 1


def test_only_admin_keys_manage_feeds(tmp_path: Path, tiktoken_dir: Path) -> None:
    import httpx

    from tests.conftest import SEEDS
    from tests.servers import serving

    env = rag_env(tmp_path / "data", tiktoken_dir)
    assert rag("ingest", "--quiet", str(SEEDS), env=env).returncode == 0
    keys = {s: rag("keys", "add", f"k-{s}", "--scope", s, env=env).stdout.strip() for s in ("ask", "admin")}
    with serving(env, tmp_path / "server.log") as base:
        assert httpx.get(f"{base}/feeds").status_code == 401
        asking = {"authorization": f"Bearer {keys['ask']}"}
        assert httpx.get(f"{base}/feeds", headers=asking).status_code == 403
        refused = httpx.post(f"{base}/feeds", json={"url": "https://example.org/rss"}, headers=asking)
        assert refused.status_code == 403
        admin = {"authorization": f"Bearer {keys['admin']}"}
        assert httpx.get(f"{base}/feeds", headers=admin).json() == []
        huge = httpx.delete(f"{base}/feeds/99999999999999999999", headers=admin)
        assert huge.status_code == 404  # past SQLite's integers: no such feed, not a server error
        private = httpx.post(f"{base}/feeds", json={"url": "http://10.1.2.3/rss"}, headers=admin)
        assert private.status_code == 422
        assert "not a public address" in private.json()["detail"]


# --- issue 29: the doors a probe found open -----------------------------------------------------------


def test_an_entry_httpx_cannot_fetch_is_skipped_with_its_reason(
    site: Site, poller: Poller, store: IndexStore, tmp_path: Path, tiktoken_dir: Path
) -> None:
    """A redirect to ``javascript:`` and a link over 65,536 characters raised httpx.InvalidURL, which is no
    HTTPError: the poll crashed, kept its lease, and never stored the good entries beside them."""
    site.page("/ok", article_page(*COUNCIL))
    site.routes["/trap"] = lambda _: (302, {"Location": "javascript:alert(1)"}, b"")
    long_link = f"/long?{'x' * 70_000}"
    items = [
        ("/trap", "A trap", "Mon, 15 Apr 2024 10:00:00 GMT"),
        ("/ok", COUNCIL[0], "Mon, 15 Apr 2024 10:00:00 GMT"),
    ]
    feed = rss(site, items).replace(
        b"<channel>", f"<channel><item><title>Long</title><link>{site.base}{long_link}</link></item>".encode()
    )
    site.page("/feed.xml", feed, kind="application/rss+xml")
    feed_id = _follow(poller, f"{site.base}/feed.xml")
    report = poller.poll(poller.registry.get(str(feed_id)))
    assert report.status == "ok", report.error
    assert len(report.added) == 2  # the good page, and the trap from the feed's own summary
    assert len(report.skipped) == 1
    assert "... (70028 characters): an address over 2000 characters is not fetched" in report.skipped[0]
    followed = poller.registry.get(str(feed_id))
    assert followed.last_status == "ok"
    assert followed.failures == 0
    leased = sqlite3.connect(tmp_path / "service.sqlite").execute("SELECT lease_until FROM feeds").fetchone()
    assert leased == (0,)  # the lease is let go
    site.routes["/trap-feed"] = lambda _: (302, {"Location": "javascript:void(0)"}, b"")
    with pytest.raises(FetchError, match="cannot send this address or follow its redirect"):
        detect(poller.fetcher, f"{site.base}/trap-feed")  # POST /feeds: a 422 with the reason
    with pytest.raises(FetchError, match="over 2000 characters"):
        poller.fetcher.get(f"{site.base}{long_link}")
    # Without a feed summary to fall back on, the entries are skipped, each with its reason.
    bare = feed.replace(b"<description>A trap: the feed's own summary.</description>", b"")
    bare = bare.replace(b"<title>Long</title>", b"<title>Long</title><guid>long</guid>")
    site.page("/bare.xml", bare, kind="application/rss+xml")
    env = _cli_env(tmp_path, tiktoken_dir)
    feed_cli = rag("feeds", "add", f"{site.base}/bare.xml", env=env).stdout.strip()
    polled = rag("feeds", "poll", feed_cli, env=env)
    assert polled.returncode == 0, polled.stderr
    assert "Traceback" not in polled.stdout + polled.stderr
    assert "1 added, 0 replaced, 0 unchanged, 2 skipped" in polled.stdout
    assert "/trap: httpx cannot send this address or follow its redirect" in polled.stdout


def _dripping_server(drip_headers: bool) -> tuple[str, threading.Event, Callable[[], None]]:
    """A server that sends a response one byte every 0.2 s (its headers too, when ``drip_headers``):
    no single read ever waits long enough to time out. The event is set when the client hangs up."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    hung_up = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5000\r\n\r\n"
            sent = b"" if drip_headers else head
            connection.sendall(sent)
            for byte in (head if drip_headers else b"") + b"<p>" + b"a" * 4997:
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    hung_up.set()
                    return
                if hung_up.wait(0.2):
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop() -> None:
        hung_up.set()
        listener.close()

    return f"http://127.0.0.1:{listener.getsockname()[1]}/slow", hung_up, stop


@pytest.mark.parametrize("drip_headers", [False, True], ids=["body", "headers"])
def test_a_server_that_drips_is_cut_off_at_the_deadline(drip_headers: bool) -> None:
    """Each read waited less than the read timeout, so a byte a second held a fetch for ever (`rag feeds
    add` still reading after 75 s, another feed's poll waiting 67 s behind it)."""
    url, hung_up, stop = _dripping_server(drip_headers)
    fetcher = Fetcher(LOOPBACK, Limits(host_delay_seconds=0.0, read_seconds=2.0, total_seconds=3.0))
    try:
        with pytest.raises(FetchError, match=r"took longer than 3 s in all"):
            fetcher.get(url)  # 5,000 bytes at 5 a second would take 1,000 s
        assert hung_up.wait(60)  # the connection was closed, not left dripping
    finally:
        fetcher.close()
        stop()


CYRILLIC = (
    "Городской совет одобрил строительство нового моста через реку, сообщил мэр. Работы начнутся весной "
    "и продлятся два года, сказал Иван Петров."
)


def test_pages_and_feeds_are_read_in_the_charset_they_declare(
    site: Site, poller: Poller, store: IndexStore
) -> None:
    """Pages were decoded as UTF-8 whatever they declared (a windows-1251 page stored with 98 replacement
    characters), and a feed's charset given only in its HTTP header was not read (a garbled title)."""

    def page(title: str) -> bytes:
        return article_page(title, CYRILLIC).decode().encode("windows-1251")

    site.routes["/header"] = lambda _: (
        200,
        {"Content-Type": "text/html; charset=windows-1251"},
        page("Мост"),
    )
    meta = page("Мост").replace(b"<head>", b'<head><meta charset="windows-1251">')
    site.page("/meta", meta)
    site.page("/guessed", page("Мост"))  # no declaration at all: read from the bytes
    items = [
        (path, f"Новости {path[1:]}", "Mon, 15 Apr 2024 10:00:00 GMT")
        for path in ("/header", "/meta", "/guessed")
    ]
    feed = rss(site, items).decode().replace("Harbour Times", "Городские новости").encode("windows-1251")
    site.routes["/feed.xml"] = lambda _: (
        200,
        {"Content-Type": "application/rss+xml; charset=windows-1251"},
        feed,
    )
    parsed = detect(poller.fetcher, f"{site.base}/feed.xml")
    assert parsed.title == "Городские новости"
    feed_id = poller.registry.add(f"{site.base}/feed.xml", parsed.title, parsed.kind, 900).id
    report = poller.poll(poller.registry.get(str(feed_id)))
    assert len(report.added) == 3, report
    for path in ("/header", "/meta", "/guessed"):
        article = _article(store, f"{site.base}{path}")
        assert "\ufffd" not in article.body + article.title
        assert "Городской совет одобрил" in article.body
        assert article.title == f"Новости {path[1:]}"
        assert article.source == "Городские новости"


def test_feed_fields_get_the_limits_and_cleaning_of_post_articles(
    site: Site, poller: Poller, store: IndexStore
) -> None:
    """A 200,000-character feed title was stored (POST /articles allows 1,000), with its right-to-left
    override characters."""
    site.page("/ok", article_page(*COUNCIL))
    title = "Council \u202evote\u202c " + "long " * 40_000
    site.page(
        "/feed.xml",
        rss(site, [("/ok", title, "Mon, 15 Apr 2024 10:00:00 GMT")]).replace(
            b"Harbour Times", ("\u202e" + "Times " * 100).encode()
        ),
        kind="application/rss+xml",
    )
    feed_id = _follow(poller, f"{site.base}/feed.xml")
    followed = poller.registry.get(str(feed_id))
    assert len(followed.name) <= 200
    assert "\u202e" not in followed.name
    poller.poll(followed)
    stored = _article(store, f"{site.base}/ok")
    assert len(stored.title) <= 1000
    assert stored.title.startswith("Council vote long long")
    assert stored.title.endswith("…")
    assert not {"\u202e", "\u202c"} & set(stored.title + (stored.source or ""))


def test_a_removed_feed_s_id_is_never_given_again(tmp_path: Path) -> None:
    """SQLite reused the largest id once its row was removed: a stale id reached the next feed."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as old:  # a table as made before ids were AUTOINCREMENT
        old.executescript(
            "CREATE TABLE feeds (id INTEGER PRIMARY KEY, url TEXT NOT NULL UNIQUE, name TEXT NOT NULL, "
            "kind TEXT NOT NULL, every_seconds INTEGER NOT NULL, etag TEXT, last_modified TEXT, "
            "last_poll TEXT, last_status TEXT, last_error TEXT, failures INTEGER NOT NULL DEFAULT 0, "
            "next_poll REAL NOT NULL DEFAULT 0, added INTEGER NOT NULL DEFAULT 0, "
            "lease_until REAL NOT NULL DEFAULT 0, lease_pid INTEGER NOT NULL DEFAULT 0);"
            "CREATE TABLE feed_entries (feed_id INTEGER NOT NULL REFERENCES feeds(id) ON DELETE CASCADE, "
            "url TEXT NOT NULL, updated TEXT, etag TEXT, last_modified TEXT, article_id TEXT NOT NULL, "
            "PRIMARY KEY (feed_id, url));"
            "INSERT INTO feeds (url, name, kind, every_seconds) "
            "VALUES ('https://a.example/rss', 'A', 'rss', 900), ('https://b.example/rss', 'B', 'rss', 900);"
            "INSERT INTO feed_entries VALUES (2, 'https://b.example/1', NULL, NULL, NULL, 'feed-b1');"
        )
    for where in (path, tmp_path / "new.sqlite"):
        registry = FeedRegistry(where)
        if where == path:  # rebuilt: its feeds and entries kept
            assert [f.name for f in registry.feeds()] == ["A", "B"]
            assert registry.entry(registry.get("2"), "https://b.example/1") is not None
        first = registry.add("https://c.example/rss", "C", "rss", 900)
        registry.remove(str(first.id))
        second = registry.add("https://d.example/rss", "D", "rss", 900)
        assert second.id == first.id + 1
        registry.remove(str(second.id))
        registry.close()
        reopened = FeedRegistry(where)  # and after a restart
        assert reopened.add("https://e.example/rss", "E", "rss", 900).id == second.id + 1
        reopened.close()
