"""Standing questions: a watch fires once per story when a new article answers it, and its alerts reach
the store, the Atom feed, the event stream and a signed webhook (api/store/watches.py, matching.py,
alerts.py, api/web/watches.py), on the real app and the real reader."""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from api.errors import WatchLimitError
from api.store.keys import KeyRing
from api.store.records import Alert, Found
from api.store.standing import WatchTables
from api.web.atom import atom
from api.work.webhooks import WebhookSender, deliver_due
from index.fetch import Fetcher, Limits, parse_networks
from tests.servers import free_port, rag, rag_env, server_process, serving, until
from tests.sites import Site, article_page, rss

LIGHTHOUSE = "When will the Gull Point lighthouse open to visitors?"
FERRY = "How much will the new Harbour ferry ticket cost?"


def _article(article_id: str, title: str, body: str, day: str = "2024-04-15") -> dict[str, Any]:
    return {"id": article_id, "title": title, "body": body, "source": "Harbour Times", "published_at": day,
            "url": f"https://harbour.example/{article_id}"}  # fmt: skip


LIGHT = _article(
    "gull-light",
    "Lighthouse restored",
    "The old lighthouse on Gull Point has been restored by volunteers. It will open to visitors on 1 June, "
    "the heritage trust said on Monday. The restoration took three years and cost 2 million euros.",
)
TICKET = _article(
    "ferry-fare",
    "New ferry fares",
    "The Harbour ferry company announced new fares on Tuesday. A single ticket on the new ferry will cost "
    "4 euros from May, the company said. Season tickets will also rise.",
)
UNRELATED = _article(
    "bake-sale",
    "School bake sale",
    "Pupils at the primary school raised money for new books at a bake sale on Saturday. Parents baked "
    "cakes and biscuits, and the head teacher thanked everyone who came.",
)


def _alerts(client: TestClient[Litestar], watch_id: str) -> list[dict[str, Any]]:
    answer = client.get(f"/watches/{watch_id}/alerts")
    assert answer.status_code == 200, answer.text
    alerts: list[dict[str, Any]] = answer.json()["alerts"]
    return alerts


def test_a_new_article_answering_a_watch_alerts_once_per_story(client: TestClient[Litestar]) -> None:
    made = client.post("/watches", json={"question": LIGHTHOUSE})
    assert made.status_code == 201, made.text
    watch = made.json()
    assert watch["feed_url"].startswith("http://127.0.0.1:8000/watches/")
    assert watch["webhook_secret"] is None
    assert client.post("/articles", json=UNRELATED).status_code == 200
    assert client.post("/articles", json=LIGHT).status_code == 200
    (alert,) = until(lambda: _alerts(client, watch["id"]))
    assert alert["seq"] == 1
    assert alert["watch_id"] == watch["id"]
    assert alert["article_id"] == "gull-light"
    assert "1 June" in alert["short_answer"]["text"]
    assert alert["citations"][0]["article_id"] == "gull-light"
    assert not alert["abstained"]
    assert "1 June" in alert["answer"]
    assert alert["coverage"]["articles"] == 1

    # The same article again (unchanged), and a copy of its story under another id: no second alert.
    # A second watch answered after them shows that the matcher has read past both.
    ferry = client.post("/watches", json={"question": FERRY}).json()
    assert client.post("/articles", json=LIGHT).json()["unchanged"] == ["gull-light"]
    copy = {**LIGHT, "id": "gull-light-copy", "url": "https://copies.example/gull-light"}
    assert client.post("/articles", json=copy).status_code == 200
    assert client.post("/articles", json=TICKET).status_code == 200
    (fare,) = until(lambda: _alerts(client, ferry["id"]))
    assert "4 euros" in fare["short_answer"]["text"]
    assert len(_alerts(client, watch["id"])) == 1
    assert client.get(f"/watches/{watch['id']}").json()["alerts"] == 1

    # The Atom feed: the token is the key; a wrong one, or a revoked feed, is a 404.
    feed = feedparser.parse(client.get(watch["feed_url"]).content)
    (entry,) = feed.entries
    assert "1 June" in entry.title
    assert entry.link == "https://harbour.example/gull-light"
    assert entry.id == f"urn:newsrag:alert:{alert['id']}"
    assert client.get(watch["feed_url"] + "x").status_code == 404
    renewed = client.post(f"/watches/{watch['id']}/feed").json()["feed_url"]
    assert client.get(watch["feed_url"]).status_code == 404
    assert client.get(renewed).status_code == 200
    assert client.delete(f"/watches/{watch['id']}/feed").status_code == 204
    assert client.get(renewed).status_code == 404

    assert [w["id"] for w in client.get("/watches").json()] == [watch["id"], ferry["id"]]
    assert client.delete(f"/watches/{watch['id']}").status_code == 204
    assert client.get(f"/watches/{watch['id']}").status_code == 404
    assert client.get(f"/watches/{watch['id']}/alerts").status_code == 404


def test_a_watch_is_refused_with_the_reason(client: TestClient[Litestar]) -> None:
    empty = client.post("/watches", json={"question": "   "})
    assert empty.status_code == 400
    private = client.post("/watches", json={"question": LIGHTHOUSE, "webhook": "http://10.1.2.3/hook"})
    assert private.status_code == 422
    assert private.json()["title"] == "Webhook refused"
    assert "not a public address" in private.json()["detail"]
    for hook in ("http://100.64.0.1/", "http://100.100.100.200/", "http://[2002:a9fe:a9fe::]/"):
        shared = client.post("/watches", json={"question": LIGHTHOUSE, "webhook": hook})
        assert shared.status_code == 422, (hook, shared.text)
    assert client.post("/watches", json={"question": LIGHTHOUSE, "min_confidence": 0}).status_code == 400
    assert client.get("/watches/w_0123456789abcdef").status_code == 404


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers each POST as told ("ok", "fail": 503, "hang": holds
    the request until released), keeping every request's headers and body."""

    def __init__(self, plan: list[str]) -> None:
        self.plan = plan
        self.got: list[tuple[dict[str, str], bytes, str]] = []
        self.changed = threading.Condition()
        self.release = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.changed:
                    how = receiver.plan.pop(0) if receiver.plan else "ok"
                    receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body, how))
                    receiver.changed.notify_all()
                if how == "hang":
                    receiver.release.wait(120)
                    self.close_connection = True
                    return
                self.send_response(200 if how == "ok" else 503)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, seconds: float = 120) -> list[tuple[dict[str, str], bytes, str]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.got) >= count, seconds), self.got
            return list(self.got)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_plan() -> list[str]:
    return ["ok"]


@pytest.fixture
def receiver(receiver_plan: list[str]) -> Iterator[Receiver]:
    made = Receiver(list(receiver_plan))
    yield made
    made.close()


def _server_env(tmp_path: Path, tiktoken_dir: Path) -> dict[str, str]:
    return rag_env(tmp_path / "data", tiktoken_dir) | {
        "RAG_FEEDS_ALLOW_NETWORKS": "127.0.0.0/8",
        "RAG_FEEDS_CHECK_SECONDS": "0.5",
        "RAG_FEEDS_HOST_DELAY": "0",
        "RAG_WATCH_CHECK_SECONDS": "0.2",
        "RAG_WEBHOOK_RETRY_SECONDS": "0.05",
    }


def _removing_ends_the_stream(base: str, watch_id: str) -> None:
    """A stream resumed after the watch's last alert waits; removing the watch ends it."""
    ended = threading.Event()

    def follow() -> None:
        with httpx.stream("GET", f"{base}/watches/{watch_id}/events?after=1", timeout=120) as stream:
            for _ in stream.iter_lines():
                pass
        ended.set()

    threading.Thread(target=follow, daemon=True).start()
    assert httpx.delete(f"{base}/watches/{watch_id}").status_code == 204
    assert ended.wait(120)


def _delivered(base: str, watch_id: str) -> dict[str, Any] | None:
    """The watch once a webhook delivery of it succeeded, else None."""
    watch: dict[str, Any] = httpx.get(f"{base}/watches/{watch_id}").json()
    return watch if watch["deliveries"]["delivered"] else None


def _first_alert(base: str, watch_id: str, got: list[dict[str, Any]], done: threading.Event) -> None:
    """Read the watch's event stream until its first alert."""
    with httpx.stream("GET", f"{base}/watches/{watch_id}/events", timeout=120) as stream:
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "alert":
                got.append(json.loads(line[6:]))
                done.set()
                return


@pytest.mark.slow
@pytest.mark.parametrize("receiver_plan", [["fail", "fail", "ok"]])
def test_a_feed_entry_answering_a_watch_reaches_every_channel_once(
    site: Site, receiver: Receiver, tmp_path: Path, tiktoken_dir: Path
) -> None:
    light = article_page("Lighthouse restored", LIGHT["body"])
    site.page("/a", light)
    entries = [("/a", "Lighthouse restored", "Mon, 15 Apr 2024 10:00:00 GMT")]
    site.page("/feed.xml", rss(site, entries), kind="application/rss+xml")
    with serving(_server_env(tmp_path, tiktoken_dir), tmp_path / "server.log") as base:
        made = httpx.post(f"{base}/watches", json={"question": LIGHTHOUSE, "webhook": receiver.url})
        assert made.status_code == 201, made.text
        watch = made.json()
        assert watch["webhook_secret"].startswith("whsec_")
        streamed: list[dict[str, Any]] = []
        heard = threading.Event()
        listener = threading.Thread(
            target=_first_alert, args=(base, watch["id"], streamed, heard), daemon=True
        )
        listener.start()
        feed = httpx.post(f"{base}/feeds", json={"url": f"{site.base}/feed.xml", "every": "1h"})
        assert feed.status_code == 201, feed.text

        # The receiver is down for two tries, then up: it gets the alert, signed, and once.
        tries = receiver.wait_for(3)
        assert [how for _, _, how in tries] == ["fail", "fail", "ok"]
        headers, body, _ = tries[2]
        alert = Webhook(watch["webhook_secret"]).verify(body, headers)
        assert {h["webhook-id"] for h, _, _ in tries} == {alert["id"]}
        assert alert["watch_id"] == watch["id"]
        assert alert["seq"] == 1
        assert "1 June" in alert["short_answer"]["text"]
        with pytest.raises(WebhookVerificationError):
            Webhook(watch["webhook_secret"]).verify(body.replace(b"1 June", b"2 June"), headers)
        state = until(
            lambda: (w := httpx.get(f"{base}/watches/{watch['id']}").json())["deliveries"]["delivered"] and w
        )
        assert state["deliveries"] == {"delivered": 1, "pending": 0, "given_up": 0}
        assert state["failing"] is None

        # The store, the Atom feed and the event stream carry the same alert.
        (stored,) = httpx.get(f"{base}/watches/{watch['id']}/alerts").json()["alerts"]
        assert stored == alert
        (entry,) = feedparser.parse(httpx.get(watch["feed_url"]).content).entries
        assert entry.id == f"urn:newsrag:alert:{alert['id']}"
        assert heard.wait(60)
        assert streamed == [alert]

        # The same story again, from another address: no second alert. A second watch, answered by a
        # later entry of the same poll, shows that the matcher has read past it.
        ferry = httpx.post(f"{base}/watches", json={"question": FERRY}).json()
        site.page("/b", light)
        site.page("/c", article_page("New ferry fares", TICKET["body"]))
        entries += [("/b", "Lighthouse restored", "Mon, 15 Apr 2024 11:00:00 GMT"),
                    ("/c", "New ferry fares", "Tue, 16 Apr 2024 10:00:00 GMT")]  # fmt: skip
        site.page("/feed.xml", rss(site, entries), kind="application/rss+xml")
        assert httpx.post(f"{base}/feeds/{feed.json()['id']}/poll", json={}).status_code == 202
        until(lambda: httpx.get(f"{base}/watches/{ferry['id']}/alerts").json()["alerts"])
        assert httpx.get(f"{base}/watches/{watch['id']}").json()["alerts"] == 1
        assert len(receiver.got) == 3
        metrics = httpx.get(f"{base}/metrics").text
        assert 'newsqa_webhook_deliveries_total{status="failed"} 2.0' in metrics
        assert 'newsqa_webhook_deliveries_total{status="delivered"} 1.0' in metrics
        assert "newsqa_watch_alerts_total 2.0" in metrics
        assert "newsqa_watches 2.0" in metrics

        _removing_ends_the_stream(base, watch["id"])


@pytest.mark.slow
@pytest.mark.parametrize("receiver_plan", [["hang", "ok"]])
def test_an_alert_stored_before_a_kill_is_delivered_after_the_restart(
    receiver: Receiver, tmp_path: Path, tiktoken_dir: Path
) -> None:
    env = _server_env(tmp_path, tiktoken_dir)
    port = free_port()
    with server_process(env, tmp_path / "server.log", port=port) as (base, process):
        watch = httpx.post(f"{base}/watches", json={"question": LIGHTHOUSE, "webhook": receiver.url}).json()
        assert httpx.post(f"{base}/articles", json=LIGHT).status_code == 200
        ((first, _, _),) = receiver.wait_for(1)  # the delivery has begun and holds: kill the server now
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    receiver.release.set()
    with server_process(env, tmp_path / "server.log", port=port) as (base, _):
        tries = receiver.wait_for(2)
        assert tries[1][0]["webhook-id"] == first["webhook-id"]
        assert Webhook(watch["webhook_secret"]).verify(tries[1][1], tries[1][0])["seq"] == 1
        state = until(
            lambda: (w := httpx.get(f"{base}/watches/{watch['id']}").json())["deliveries"]["delivered"] and w
        )
        assert state["alerts"] == 1
        assert state["deliveries"] == {"delivered": 1, "pending": 0, "given_up": 0}


def test_a_key_sees_only_its_own_watches(client: TestClient[Litestar], tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "data" / "service.sqlite")
    alice, bob = ring.add("alice", "watch"), ring.add("bob", "watch")
    boss, asker = ring.add("boss", "admin"), ring.add("asker", "ask")
    ring.close()

    def auth(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    mine = client.post("/watches", json={"question": LIGHTHOUSE}, headers=auth(alice))
    assert mine.status_code == 201
    assert mine.json()["owner"] == "alice"
    theirs = client.post("/watches", json={"question": FERRY}, headers=auth(bob)).json()
    assert [w["id"] for w in client.get("/watches", headers=auth(alice)).json()] == [mine.json()["id"]]
    assert client.get(f"/watches/{theirs['id']}", headers=auth(alice)).status_code == 404
    assert client.delete(f"/watches/{theirs['id']}", headers=auth(alice)).status_code == 404
    assert client.get(f"/watches/{theirs['id']}/alerts", headers=auth(alice)).status_code == 404
    assert len(client.get("/watches", headers=auth(boss)).json()) == 2
    assert client.get(f"/watches/{theirs['id']}", headers=auth(boss)).status_code == 200
    assert client.get("/watches", headers=auth(asker)).status_code == 403
    assert client.post("/ask", json={"question": LIGHTHOUSE}, headers=auth(alice)).status_code == 200
    assert client.get("/watches").status_code == 401
    assert client.delete(f"/watches/{theirs['id']}", headers=auth(bob)).status_code == 204

    # Two keys watching one question are both told, from one reading of the article.
    ring = KeyRing(tmp_path / "data" / "service.sqlite")
    carol = ring.add("carol", "watch")
    ring.close()
    hers = client.post("/watches", json={"question": LIGHTHOUSE}, headers=auth(carol)).json()
    assert client.post("/articles", json=LIGHT, headers=auth(boss)).status_code == 200
    for token, watch_id in ((alice, mine.json()["id"]), (carol, hers["id"])):

        def told(t: str = token, w: str = watch_id) -> list[dict[str, Any]]:
            alerts: list[dict[str, Any]] = client.get(f"/watches/{w}/alerts", headers=auth(t)).json()[
                "alerts"
            ]
            return alerts

        assert "1 June" in until(told)[0]["short_answer"]["text"]

    # A key keeps at most RAG_WATCHES_PER_KEY watches (100 by default).
    for n in range(99):
        assert (
            client.post("/watches", json={"question": f"{FERRY} ({n})"}, headers=auth(carol)).status_code
            == 201
        )
    refused = client.post("/watches", json={"question": FERRY}, headers=auth(carol))
    assert refused.status_code == 422
    assert refused.json()["title"] == "Too many watches"
    assert client.post("/watches", json={"question": FERRY}, headers=auth(alice)).status_code == 201


@pytest.mark.parametrize("receiver_plan", [["fail", "fail", "fail"]])
def test_a_receiver_that_stays_down_marks_the_watch_failing(receiver: Receiver, tmp_path: Path) -> None:
    store = WatchTables.open(tmp_path / "service.sqlite")
    poster = Fetcher(parse_networks("127.0.0.0/8"))
    try:
        made = store.watches.add(LIGHTHOUSE, None, webhook=receiver.url)
        assert store.alerts.advance(None, 10, []) == []
        found = Found(made.watch.id, "gull-light", "gull-light", {"answer": "It opens on 1 June [1]."}, 0.9)
        (alert,) = store.alerts.advance(10, 20, [found]) or []
        assert store.alerts.advance(10, 30, [found]) is None  # another process moved the cursor first
        for attempt in range(3):  # each run tries what is due once, though it is due again at once
            assert deliver_due(store, poster, retry_seconds=0.0, tries=3, now=time.time() + attempt) == 0
        assert [h["webhook-id"] for h, _, _ in receiver.wait_for(3)] == [alert.id] * 3
        watch = store.watches.get(made.watch.id)
        assert watch.failing is not None
        assert "gave up after 3 tries: HTTP 503" in watch.failing
        assert store.outbox.deliveries(made.watch.id) == {"delivered": 0, "pending": 0, "given_up": 1}
        assert store.outbox.pending(time.time() + 3600) == []
    finally:
        poster.close()
        store.close()


def test_a_delivery_is_sent_by_one_process_and_a_stream_resumes_with_every_alert(tmp_path: Path) -> None:
    path = tmp_path / "service.sqlite"
    served, checking = (
        WatchTables.open(path),
        WatchTables.open(path),
    )  # as `rag serve` and `rag watch check` hold it
    try:
        made = served.watches.add(LIGHTHOUSE, None, webhook="https://hooks.example.com/news")
        served.alerts.advance(None, 0, [])
        for n in range(3):
            found = Found(made.watch.id, f"story-{n}", f"article-{n}", {"answer": f"answer {n} [1]"}, 0.9)
            assert len(served.alerts.advance(n * 10, n * 10 + 10, [found]) or []) == 1
        now = time.time()
        oldest_first = [a.id for a in reversed(served.alerts.alerts(made.watch.id))]
        assert served.outbox.pending(now) == [
            (oldest_first[0], made.watch.webhook, None)
        ]  # one a watch: its oldest
        claimed = [served.outbox.claim(alert_id, now) for alert_id in oldest_first]
        taken = [d for d in claimed if d is not None]
        assert [d.alert_id for d in taken] == oldest_first
        assert checking.outbox.pending(now) == []  # claimed by the other process for the lease
        assert checking.outbox.claim(oldest_first[0], now) is None
        checking.outbox.failed(taken[0], "HTTP 503", None)
        assert served.watches.get(made.watch.id).failing is not None
        served.outbox.delivered(taken[0].alert_id, made.watch.id)  # a late success still counts
        assert served.outbox.deliveries(made.watch.id) == {"delivered": 1, "pending": 2, "given_up": 0}
        assert served.watches.get(made.watch.id).failing is None
        served.outbox.delivered(taken[1].alert_id, made.watch.id)
        checking.outbox.failed(taken[1], "HTTP 503", None)  # a late failure after a success changes nothing
        assert served.outbox.deliveries(made.watch.id) == {"delivered": 2, "pending": 1, "given_up": 0}
        assert served.watches.get(made.watch.id).failing is None
        assert [
            a.seq for a in served.alerts.alerts(made.watch.id, after_seq=1, limit=1, oldest_first=True)
        ] == [2]
        assert [a.seq for a in served.alerts.alerts(made.watch.id, limit=2)] == [3, 2]
    finally:
        served.close()
        checking.close()


@pytest.mark.slow
def test_the_watch_command_line(tmp_path: Path, tiktoken_dir: Path) -> None:
    env = rag_env(tmp_path / "data", tiktoken_dir)
    made = rag("watch", "add", LIGHTHOUSE, "--source", "Harbour Times", env=env)
    assert made.returncode == 0, made.stderr
    watch_id = made.stdout.split()[0]
    assert f"feed: /watches/{watch_id}/feed.xml?token=wft_" in made.stdout
    for hook in ("http://127.0.0.1:9/hook", "http://100.64.0.1/"):
        refused = rag("watch", "add", LIGHTHOUSE, "--webhook", hook, env=env)
        assert refused.returncode == 2
        assert "not a public address" in refused.stderr
        assert "Traceback" not in refused.stderr
    other = rag("watch", "add", FERRY, "--source", "Another Outlet", env=env).stdout.split()[0]
    (tmp_path / "news.jsonl").write_text(json.dumps(LIGHT) + "\n")
    first = rag("watch", "check", env=env)  # the first check sets where the news begins: nothing yet
    assert first.returncode == 0, first.stderr
    assert "0 new alert(s)" in first.stdout
    assert rag("ingest", "--quiet", str(tmp_path / "news.jsonl"), env=env).returncode == 0
    checked = rag("watch", "check", "--as-of", "2024-04-16", env=env)
    assert checked.returncode == 0, checked.stderr
    (line,) = [line for line in checked.stdout.splitlines() if line.startswith(f"{watch_id} #1: ")]
    assert "1 June" in line  # the short answer
    assert other not in checked.stdout  # its outlet is not the article's
    assert "1 new alert(s)" in checked.stdout
    again = rag("watch", "check", env=env)
    assert "0 new alert(s)" in again.stdout
    listed = json.loads(rag("watch", "list", "--json", env=env).stdout)
    assert [(w["id"], w["alerts"]) for w in listed] == [(watch_id, 1), (other, 0)]
    restarted = rag("watch", "check", "--from-now", env=env)
    assert restarted.returncode == 0, restarted.stderr
    assert "news begins now" in restarted.stdout
    assert rag("watch", "remove", watch_id, env=env).returncode == 0
    missing = rag("watch", "remove", watch_id, env=env)
    assert missing.returncode == 2
    assert "no watch" in missing.stderr


def test_the_watch_cap_holds_when_creations_race(tmp_path: Path) -> None:
    """Twenty creations at once through two stores (as two workers hold the file): the key keeps its cap,
    since the count is taken inside the write transaction."""
    path = tmp_path / "service.sqlite"
    stores = [WatchTables.open(path), WatchTables.open(path)]
    start = threading.Barrier(20)
    outcomes: list[str] = []

    def create(n: int) -> None:
        start.wait(60)
        try:
            stores[n % 2].watches.add(f"{FERRY} ({n})", "carol", limit=3)
            outcomes.append("made")
        except WatchLimitError:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert sorted(outcomes) == ["made"] * 3 + ["refused"] * 17
        assert len(stores[0].watches.watches("carol")) == 3
    finally:
        for store in stores:
            store.close()


def test_text_xml_cannot_carry_never_breaks_a_feed(client: TestClient[Litestar]) -> None:
    """NUL, U+0001, U+FFFE and U+FFFF in a question, an article or a stored alert: the watch is made, the
    article ingested and the feed served, without them (removed at the edge, in ingest, and at
    rendering as the last guard)."""
    asked = client.post(
        "/watches", json={"question": "When will the Gull Point\x00 lighthouse\x01 open\ufffe?\uffff"}
    )
    assert asked.status_code == 201, asked.text
    assert asked.json()["question"] == "When will the Gull Point lighthouse open?"
    assert client.get(asked.json()["feed_url"]).status_code == 200
    marked = {
        **LIGHT,
        "title": "Lighthouse\ufffe restored\uffff",
        "body": LIGHT["body"].replace("June", "June\ufffe"),
    }
    assert client.post("/articles", json=marked).status_code == 200
    (alert,) = until(lambda: _alerts(client, asked.json()["id"]))
    assert "\ufffe" not in json.dumps(alert, ensure_ascii=False)
    served = client.get(asked.json()["feed_url"])
    assert served.status_code == 200
    (entry,) = feedparser.parse(served.content).entries
    assert "1 June" in entry.title

    body = {
        "answer": "Opens\x00 on 1 June\uffff [1].",
        "short_answer": {"text": "1 June\ufffe"},
        "citations": [{"n": 1, "title": "T\x01", "source": "S\ufffe", "url": "https://x.example/a"}],
    }
    stored = Alert("al_1", "w_0123456789abcdef", 1, "s", "a", "2024-04-16T10:00:00+00:00", body)
    watch = client.app.state.startup.require().watches.watches.get(asked.json()["id"])
    (old,) = feedparser.parse(atom(watch, [stored], "http://127.0.0.1:8000/feed")).entries
    assert old.title == "1 June"
    assert "Opens on 1 June [1]." in old.content[0].value


@pytest.mark.parametrize("receiver_plan", [["ok"]])
def test_hanging_receivers_delay_only_their_own_webhooks(receiver: Receiver, tmp_path: Path) -> None:
    """One key's watches post to three receivers that hold every request they get (the first for two
    watches); another key's healthy receiver, whose alert came after theirs, is delivered while they hold
    theirs. Each receiver gets one try at a time, and one key's tries take at most half of the senders.
    (Tries here may last minutes: one at a time, the healthy one would never be reached.)"""
    store = WatchTables.open(tmp_path / "service.sqlite")
    patient = Fetcher(parse_networks("127.0.0.0/8"), Limits(read_seconds=300, total_seconds=300))
    hanging = [Receiver(["hang"] * 3) for _ in range(3)]
    sender = WebhookSender(store, patient, senders=4)
    try:
        slow = [store.watches.add(LIGHTHOUSE, "mallory", webhook=h.url).watch for h in (*hanging, hanging[0])]
        healthy = store.watches.add(FERRY, "alice", webhook=receiver.url).watch
        store.alerts.advance(None, 0, [])
        for n, watch in enumerate(slow):  # the hanging receivers' alerts first
            found = Found(watch.id, f"story-{n}", f"article-{n}", {"answer": f"answer {n} [1]"}, 0.9)
            assert store.alerts.advance(n, n + 1, [found])
        found = Found(healthy.id, "ferry", "ferry-fare", {"answer": "A ticket costs 4 euros [1]."}, 0.9)
        assert store.alerts.advance(len(slow), len(slow) + 1, [found])

        sender.dispatch()
        receiver.wait_for(1)
        until(lambda: store.outbox.deliveries(healthy.id)["delivered"])
        for held in hanging[:2]:
            held.wait_for(1)
        assert not any(held.release.is_set() for held in hanging)  # both still hold their try
        assert sender.running() == 2  # mallory's share of four senders
        assert [len(held.got) for held in hanging] == [1, 1, 0]  # one try a receiver; the third waits
    finally:
        for held in hanging:
            held.close()
        sender.close()
        patient.close()
        store.close()


REWORDINGS = [
    "When will the Gull Point lighthouse open to visitors?",
    "When does the restored Gull Point lighthouse open to visitors?",
    "On what date will visitors be able to enter the Gull Point lighthouse?",
    "When can visitors go into the old lighthouse on Gull Point?",
    "When will the lighthouse on Gull Point open to the public?",
    "What day does the Gull Point lighthouse open to visitors?",
    "When will the volunteers' restored lighthouse at Gull Point open?",
]


def test_no_watch_crowds_another_out(keyed_client: tuple[TestClient[Litestar], dict[str, str]]) -> None:
    """Seven wordings of one question, owned by two keys: the story answers every one of them (an article
    was read for the three nearest questions only, so four went untold)."""
    client, tokens = keyed_client
    made = [
        client.post("/watches", json={"question": q}, headers=_bearer(tokens["alice" if n % 2 else "bob"]))
        for n, q in enumerate(REWORDINGS)
    ]
    assert [m.status_code for m in made] == [201] * len(REWORDINGS)
    boss = _bearer(tokens["boss"])
    assert client.post("/articles", json=LIGHT, headers=boss).status_code == 200

    def told() -> list[int]:
        return [client.get(f"/watches/{m.json()['id']}", headers=boss).json()["alerts"] for m in made]

    until(lambda: any(told()))  # one check stores all of its alerts in one transaction
    assert told() == [1] * len(REWORDINGS)


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
