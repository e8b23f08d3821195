"""Keys, scopes, origins, JSON bodies, rate limits, daily caps, revocation and request ids, on the real
app in-process; and over real `rag serve` processes, the host names open mode answers, X-Forwarded-For
believed only from a trusted proxy, origins compared normalised, and access log lines no request can
forge."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.config import Settings
from api.errors import LimitsUnavailableError
from api.logs import RequestIdFilter
from api.store.counts import Counts
from api.store.keys import KeyRing, normalize_origin
from api.store.limits import Buckets, DailyCaps
from api.web.app import create_app
from api.web.origins import client_address
from index import Embedder, load_paths, make_ingestor
from index.errors import ConfigError
from index.fetch import parse_networks
from index.store import IndexStore
from rag import Answerer
from tests.conftest import NEWS, SEEDS, Server, local_client, make_settings, open_local
from tests.conftest import serve_copy as _server
from tests.servers import free_port, rag, rag_env, serving

PROBLEM = "application/problem+json"
INTRANET = "https://intranet.example.com"
QUESTION = {"question": "Why did Russian peacekeepers leave Karabakh?"}
GOOD = "https://good.example.com"


@dataclass
class Keys:
    admin: str
    ask: str
    widget: str
    """An ask key usable from INTRANET pages."""
    slow: str
    """An ask key limited to 3 requests a minute."""
    daily: str
    """An ask key limited to 2 requests a day."""


@pytest.fixture
def indexed(tmp_path: Path, tiktoken_dir: Path, embedder: Embedder) -> Iterator[tuple[Settings, IndexStore]]:
    settings = make_settings(tmp_path / "data", tiktoken_dir)
    store = open_local(settings, embedder)
    make_ingestor(settings.index, store, embedder).ingest(load_paths([SEEDS, NEWS]), progress=False)
    yield settings, store
    store.close()


def _client(
    settings: Settings, store: IndexStore, embedder: Embedder, **options: object
) -> TestClient[Litestar]:
    def opener(s: Settings) -> Answerer:
        return Answerer(store, embedder, s.answers)

    service = replace(settings.service, **options)  # type: ignore[arg-type]
    app = create_app(replace(settings, service=service), opener=opener, background=False)
    return local_client(app)


@pytest.fixture
def keys(indexed: tuple[Settings, IndexStore]) -> Keys:
    ring = KeyRing(indexed[0].service.state_path)
    made = Keys(
        admin=ring.add("ops", "admin"),
        ask=ring.add("reader", "ask"),
        widget=ring.add("widget", "ask", origins=[INTRANET + "/page"]),
        slow=ring.add("slow", "ask", per_minute=3),
        daily=ring.add("daily", "ask", per_day=2),
    )
    ring.close()
    return made


@pytest.fixture
def client(
    indexed: tuple[Settings, IndexStore], embedder: Embedder, keys: Keys
) -> Iterator[TestClient[Litestar]]:
    del keys  # created before the app starts
    with _client(*indexed, embedder) as test_client:
        yield test_client


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _problem(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith(PROBLEM)  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status
    return body


def test_a_key_is_needed_once_keys_exist(client: TestClient[Litestar], keys: Keys) -> None:
    missing = client.post("/ask", json=QUESTION)
    assert "API key" in str(_problem(missing, 401)["title"])
    assert missing.headers["www-authenticate"].startswith("Bearer")
    _problem(client.post("/ask", json=QUESTION, headers=_bearer("nqa_not-a-key")), 401)
    _problem(client.post("/ask", json=QUESTION, headers={"authorization": keys.ask}), 401)  # no scheme
    assert client.post("/ask", json=QUESTION, headers=_bearer(keys.ask)).status_code == 200
    assert client.get("/search", params={"q": "wheat"}, headers=_bearer(keys.ask)).status_code == 200
    assert client.get("/articles/t-wheat-harvest", headers=_bearer(keys.ask)).status_code == 200


def test_scopes_separate_asking_from_writing(client: TestClient[Litestar], keys: Keys) -> None:
    article = {"id": "scoped", "body": "The council approved the new harbour budget on Tuesday evening."}
    body = _problem(client.post("/articles", json=article, headers=_bearer(keys.ask)), 403)
    assert "needs 'admin'" in str(body["detail"])
    _problem(client.delete("/articles/t-wheat-harvest", headers=_bearer(keys.ask)), 403)
    assert client.post("/articles", json=article, headers=_bearer(keys.admin)).status_code == 200
    assert (
        client.post("/ask", json=QUESTION, headers=_bearer(keys.admin)).status_code == 200
    )  # admin asks too
    assert client.delete("/articles/scoped", headers=_bearer(keys.admin)).status_code == 204


def test_health_metrics_and_schema_stay_open(client: TestClient[Litestar]) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/schema/openapi.json").status_code == 200


def test_origins_and_cors(client: TestClient[Litestar], keys: Keys) -> None:
    listed = client.post("/ask", json=QUESTION, headers={**_bearer(keys.widget), "origin": INTRANET})
    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == INTRANET
    assert "Retry-After" in listed.headers["access-control-expose-headers"]
    assert "RateLimit-Remaining" in listed.headers["access-control-expose-headers"]
    assert listed.headers["vary"] == "Origin"
    other = client.post(
        "/ask", json=QUESTION, headers={**_bearer(keys.widget), "origin": "https://evil.example"}
    )
    assert "evil.example" in str(_problem(other, 403)["detail"])
    # A key without origins cannot be used from another site's pages either.
    _problem(client.post("/ask", json=QUESTION, headers={**_bearer(keys.ask), "origin": INTRANET}), 403)
    # Without an Origin (a server-side client) the widget key works.
    assert client.post("/ask", json=QUESTION, headers=_bearer(keys.widget)).status_code == 200

    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "authorization"}
    allowed = client.options("/ask", headers={**preflight, "origin": INTRANET})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == INTRANET
    assert "Authorization" in allowed.headers["access-control-allow-headers"]
    _problem(client.options("/ask", headers={**preflight, "origin": "https://evil.example"}), 403)


def test_bodies_must_be_json(client: TestClient[Litestar], keys: Keys) -> None:
    """A browser sends text/plain across sites without a preflight; such a body is refused unread."""
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = client.post(
            "/articles",
            content=b'{"id": "x", "body": "Replaced by another site."}',
            headers={**_bearer(keys.admin), "content-type": content_type},
        )
        _problem(response, 415)
    _problem(client.post("/ask", content=b"{}", headers=_bearer(keys.ask)), 415)  # no content type at all


def test_per_key_rate_limit_answers_429_with_retry_after(client: TestClient[Litestar], keys: Keys) -> None:
    first = client.post("/ask", json=QUESTION, headers=_bearer(keys.slow))
    assert (first.status_code, first.headers["ratelimit-limit"], first.headers["ratelimit-remaining"]) == (
        200,
        "3",
        "2",
    )
    for _ in range(2):
        assert client.post("/ask", json=QUESTION, headers=_bearer(keys.slow)).status_code == 200
    refused = client.post("/ask", json=QUESTION, headers=_bearer(keys.slow))
    body = _problem(refused, 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # one request comes back every 20 s
    assert refused.headers["ratelimit-remaining"] == "0"
    assert "3 requests a minute for this key" in str(body["detail"])
    assert (
        client.post("/ask", json=QUESTION, headers=_bearer(keys.ask)).status_code == 200
    )  # others unaffected
    metrics = client.get("/metrics").text
    assert 'newsqa_rate_limited_total{limit="key"}' in metrics


def test_daily_cap_survives_a_restart(
    indexed: tuple[Settings, IndexStore], embedder: Embedder, keys: Keys
) -> None:
    with _client(*indexed, embedder) as client:
        for _ in range(2):
            assert client.post("/ask", json=QUESTION, headers=_bearer(keys.daily)).status_code == 200
        refused = client.post("/ask", json=QUESTION, headers=_bearer(keys.daily))
        _problem(refused, 429)
        assert 1 <= int(refused.headers["retry-after"]) <= 86_400
    with _client(*indexed, embedder) as client:  # the counts were saved at shutdown and read back
        _problem(client.post("/ask", json=QUESTION, headers=_bearer(keys.daily)), 429)


def test_per_address_limit(indexed: tuple[Settings, IndexStore], embedder: Embedder) -> None:
    with _client(*indexed, embedder, rate_per_address=2) as client:
        assert client.get("/search", params={"q": "wheat"}).status_code == 200
        assert client.get("/search", params={"q": "wheat"}).status_code == 200
        refused = client.get("/search", params={"q": "wheat"})
        assert "from one address" in str(_problem(refused, 429)["detail"])
        assert int(refused.headers["retry-after"]) >= 1
        assert client.get("/health").status_code == 200  # health is never limited


def test_a_watch_feed_counts_against_the_per_address_limit(
    indexed: tuple[Settings, IndexStore], embedder: Embedder
) -> None:
    """The Atom feed needs no key (its token is in its address) but is limited per address like every
    other route: a feed reader polling in a loop is told to wait."""
    with _client(*indexed, embedder, rate_per_address=3) as client:
        made = client.post("/watches", json={"question": "When will the lighthouse open?"})
        assert made.status_code == 201, made.text
        feed = made.json()["feed_url"]
        assert [client.get(feed).status_code for _ in range(2)] == [200, 200]
        refused = client.get(feed)
        assert "from one address" in str(_problem(refused, 429)["detail"])
        assert int(refused.headers["retry-after"]) >= 1


def test_revocation_takes_effect_at_once(
    client: TestClient[Litestar], keys: Keys, indexed: tuple[Settings, IndexStore]
) -> None:
    assert client.post("/ask", json=QUESTION, headers=_bearer(keys.ask)).status_code == 200
    ring = KeyRing(indexed[0].service.state_path)
    ring.revoke("reader")
    ring.close()
    _problem(client.post("/ask", json=QUESTION, headers=_bearer(keys.ask)), 401)


def test_request_ids_in_headers_and_logs(
    client: TestClient[Litestar], keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestIdFilter())
    given = client.post("/ask", json=QUESTION, headers={**_bearer(keys.ask), "x-request-id": "trace-42"})
    assert given.headers["x-request-id"] == "trace-42"
    made = client.post("/ask", json=QUESTION, headers={**_bearer(keys.ask), "x-request-id": "bad id\n"})
    assert len(made.headers["x-request-id"]) == 32
    refused = client.post("/ask", json=QUESTION)
    assert len(refused.headers["x-request-id"]) == 32
    access = [r for r in caplog.records if r.name == "api.access"]
    assert {getattr(r, "request_id", None) for r in access} >= {"trace-42", made.headers["x-request-id"]}


def test_open_mode_refuses_other_sites(indexed: tuple[Settings, IndexStore], embedder: Embedder) -> None:
    with _client(*indexed, embedder) as client:  # no keys at all
        assert client.post("/ask", json=QUESTION).status_code == 200
        _problem(client.post("/ask", json=QUESTION, headers={"origin": "https://evil.example"}), 403)
        local = client.post("/ask", json=QUESTION, headers={"origin": "http://localhost:5173"})
        assert local.status_code == 200
        assert local.headers["access-control-allow-origin"] == "http://localhost:5173"


def test_limits_and_addresses_in_isolation() -> None:
    clock = [0.0]
    buckets = Buckets(clock=lambda: clock[0])
    assert [buckets.take("a", 2, "key").allowed for _ in range(3)] == [True, True, False]
    assert buckets.take("a", 2, "key").reset_seconds == 30
    clock[0] = 30.0
    assert buckets.take("a", 2, "key").allowed
    proxies = parse_networks("10.0.0.0/8")
    assert client_address("203.0.113.9", "1.2.3.4", proxies) == "203.0.113.9"  # not a proxy: header ignored
    assert client_address("10.0.0.2", "1.2.3.4, 10.0.0.7", proxies) == "1.2.3.4"
    assert client_address("10.0.0.2", "1.2.3.4", []) == "10.0.0.2"  # off by default
    assert normalize_origin("HTTPS://Intranet.Example.com:443/page?x=1") == INTRANET
    assert normalize_origin("http://localhost:8000") == "http://localhost:8000"
    with pytest.raises(ConfigError):
        normalize_origin("javascript:alert(1)")


def _damage(path: Path) -> None:
    """Garbage over every page of a SQLite file and its write-ahead log, as a failing disk leaves them."""
    for part in (path, path.with_name(f"{path.name}-wal")):
        with part.open("r+b") as file:
            file.write(bytes(range(256)) * (part.stat().st_size // 256 + 1))


def test_a_damaged_limits_file_is_started_afresh_only_when_no_process_has_it_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Counts on one file behave as workers do (a flock belongs to an open file description): one that
    meets the damage, or starts meanwhile, refuses clearly while another still has the file open, and the
    last one to let go of it starts it afresh."""
    path = tmp_path / "limits.sqlite"
    first, second = Counts(path), Counts(path)
    one, two = Buckets(first), Buckets(second)
    assert [one.take("a", 60, "address").remaining, two.take("a", 60, "address").remaining] == [59, 58]
    files = {p.name: p.stat().st_ino for p in tmp_path.iterdir()}
    _damage(path)
    for _ in range(2):
        with pytest.raises(LimitsUnavailableError, match="another process still has it open"):
            one.take("a", 60, "address")
    starting = Counts(path)  # a worker started now
    with pytest.raises(LimitsUnavailableError):
        Buckets(starting).take("a", 60, "address")
    # The same files: one deleted and made again while `second` holds it open would have a new inode.
    assert {p.name: p.stat().st_ino for p in tmp_path.iterdir()} == files
    second.check()  # what its saver does every few seconds: it meets the damage too, and is the last
    assert "started afresh" in caplog.text
    assert path.read_bytes().startswith(b"SQLite format 3\x00")
    takes = [b.take("a", 60, "address").remaining for b in (one, two, Buckets(starting))]
    assert takes == [59, 58, 57]  # one fresh file for all three
    for counts in (first, second, starting):
        counts.close()


def test_a_damaged_limits_file_answers_503_until_mended_never_500(
    indexed: tuple[Settings, IndexStore], embedder: Embedder
) -> None:
    limits = indexed[0].service.limits_path
    chat = {"model": "news", "messages": [{"role": "user", "content": QUESTION["question"]}]}
    with _client(*indexed, embedder, rate_per_address=1000) as client:
        assert client.get("/search", params={"q": "wheat"}).status_code == 200
        other = Counts(limits)  # another worker of `rag serve --workers 2`, which counts in between
        Buckets(other).take("address:203.0.113.9", 1000, "address")
        _damage(limits)
        refused = client.get("/search", params={"q": "wheat"})
        body = _problem(refused, 503)
        assert body["title"] == "Limits unavailable"
        assert "retry" in str(body["detail"])
        assert "limits.sqlite" not in refused.text
        assert refused.headers["retry-after"] == "5"
        openai = client.post("/v1/chat/completions", json=chat)
        assert openai.status_code == 503, openai.text
        assert openai.json()["error"]["type"] == "server_error"
        assert client.get("/health").status_code == 200  # what is not limited is not affected
        other.check()  # its saver meets the damage; the last to let go, it starts the file afresh
        assert client.get("/search", params={"q": "wheat"}).status_code == 200  # the app opens it again
        other.close()


def test_daily_caps_roll_over_at_midnight(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "service.sqlite")
    ring.add("d", "ask", per_day=1)
    (key,) = ring.active()
    today = [date(2026, 1, 1)]
    caps = DailyCaps(ring, today=lambda: today[0])
    verdicts = [caps.take(key), caps.take(key)]
    assert [v.allowed if v else None for v in verdicts] == [True, False]
    today[0] = date(2026, 1, 2)
    fresh = caps.take(key)
    assert fresh is not None
    assert fresh.allowed
    caps.close()
    assert ring.usage(date(2026, 1, 2)) == {"d": 1}
    ring.close()


def test_keys_command_line(tmp_path: Path, tiktoken_dir: Path) -> None:
    env = rag_env(tmp_path / "data", tiktoken_dir)
    made = rag(
        "keys", "add", "intranet", "--scope", "ask", "--origin", INTRANET, "--per-minute", "30", env=env
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("nqa_")
    assert len(token) > 40
    listing = rag("keys", "list", env=env)
    assert "intranet" in listing.stdout
    assert INTRANET in listing.stdout
    assert token not in listing.stdout
    assert token not in (tmp_path / "data" / "service.sqlite").read_bytes().decode("latin-1")
    assert rag("keys", "add", "intranet", "--scope", "ask", env=env).returncode == 2  # names are unique
    assert rag("keys", "add", "x", "--scope", "ask", "--origin", "ftp://a", env=env).returncode == 2
    assert rag("keys", "revoke", "intranet", env=env).returncode == 0
    assert "revoked" in rag("keys", "list", env=env).stdout
    assert rag("keys", "revoke", "intranet", env=env).returncode == 2


@pytest.mark.slow
def test_serving_beyond_loopback_needs_keys_or_insecure(tmp_path: Path, tiktoken_dir: Path) -> None:
    env = rag_env(tmp_path / "data", tiktoken_dir)
    refused = rag("serve", "--host", "0.0.0.0", "--port", str(free_port()), env=env, timeout=120)
    assert refused.returncode == 2
    assert "without API keys" in refused.stderr
    assert "--insecure" in refused.stderr
    assert rag("keys", "add", "ops", "--scope", "admin", env=env).returncode == 0
    with serving(env, tmp_path / "server.log", "--host", "0.0.0.0") as base:
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
        assert httpx.post(f"{base}/ask", json=QUESTION, timeout=30).status_code == 401


@dataclass
class Keyed:
    server: Server
    admin: str
    widget: str
    """An ask key for pages on GOOD."""


@pytest.fixture(scope="module")
def keyed_server(
    index_dir: Path, tiktoken_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Keyed]:
    """Keys, and X-Forwarded-For believed from 127.0.0.1 (a proxy on this machine), 5 requests a minute
    per address."""
    folder = tmp_path_factory.mktemp("keyed")
    keys = ("ops --scope admin", f"widget --scope ask --origin {GOOD}")
    args = ("--trusted-proxy", "127.0.0.1", "--rate-per-address", "5")
    for server, (admin, widget) in _server(index_dir, tiktoken_dir, folder, *args, keys=keys):
        yield Keyed(server, admin, widget)


def test_writes_need_an_admin_key_and_a_json_body(
    settings_store: tuple[Settings, IndexStore], embedder: Embedder
) -> None:
    settings, store = settings_store
    ring = KeyRing(settings.service.state_path)
    admin = ring.add("ops", "admin")
    ring.close()
    app = create_app(settings, opener=lambda s: Answerer(store, embedder, s.answers), background=False)
    story = b'{"id": "t-wheat-harvest", "body": "Replaced by a page the reader happened to open."}'
    with local_client(app) as client:
        assert (
            client.post("/articles", content=story, headers={"content-type": "application/json"}).status_code
            == 401
        )
        assert client.delete("/articles/t-wheat-harvest").status_code == 401
        cross_site = client.post(
            "/articles",
            content=story,
            headers={
                "content-type": "text/plain",
                "origin": "https://evil.example",
                "authorization": f"Bearer {admin}",
            },
        )
        assert cross_site.status_code in {403, 415}
    assert "Replaced" not in store.reader().articles(["t-wheat-harvest"])["t-wheat-harvest"].body


@pytest.mark.slow
def test_open_mode_answers_only_loopback_host_names(open_server: Server) -> None:
    """Before: Host evil.example with a matching Origin passed as 'same origin' and could delete."""
    base, port = open_server.base, open_server.port
    rebound = {"host": f"evil.example:{port}", "origin": f"http://evil.example:{port}"}
    body = _problem(httpx.delete(f"{base}/articles/t-wheat-harvest", headers=rebound), 403)
    assert "127.0.0.1, [::1] or localhost" in str(body["detail"])
    story = {"id": "planted", "body": "A story planted by a page the reader happened to open."}
    _problem(httpx.post(f"{base}/articles", json=story, headers=rebound), 403)
    _problem(httpx.post(f"{base}/ask", json=QUESTION, headers={"host": "evil.example"}), 403)
    _problem(httpx.options(f"{base}/ask", headers={**rebound, "access-control-request-method": "POST"}), 403)
    assert httpx.get(f"{base}/articles/t-wheat-harvest").status_code == 200  # nothing was deleted
    assert httpx.get(f"{base}/articles/planted").status_code == 404
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", f"[::1]:{port}", "localhost"):
        assert httpx.post(f"{base}/ask", json=QUESTION, headers={"host": host}).status_code == 200, host


@pytest.mark.slow
def test_allowed_hosts_are_named_on_purpose(index_dir: Path, tiktoken_dir: Path, tmp_path: Path) -> None:
    args = ("--allowed-host", "desk.internal")
    for server, _ in _server(index_dir, tiktoken_dir, tmp_path, *args):
        named = httpx.get(f"{server.base}/articles/t-wheat-harvest", headers={"host": "desk.internal:80"})
        assert named.status_code == 200
        other = httpx.get(f"{server.base}/articles/t-wheat-harvest", headers={"host": "evil.example"})
        _problem(other, 403)


@pytest.mark.slow
def test_a_spoofed_forwarded_address_does_not_dodge_the_limit(
    index_dir: Path, tiktoken_dir: Path, tmp_path: Path
) -> None:
    """Before: uvicorn believed X-Forwarded-For from 127.0.0.1 and every spoofed address got a bucket."""
    for server, _ in _server(index_dir, tiktoken_dir, tmp_path, "--rate-per-address", "5"):
        with httpx.Client(base_url=server.base) as client:
            statuses = [
                client.get(
                    "/articles/t-wheat-harvest", headers={"x-forwarded-for": f"203.0.113.{i}"}
                ).status_code
                for i in range(12)
            ]
    assert statuses[:5] == [200] * 5
    assert set(statuses[5:]) == {429}


@pytest.mark.slow
def test_a_trusted_proxy_is_believed(keyed_server: Keyed) -> None:
    bearer = {"authorization": f"Bearer {keyed_server.admin}"}
    with httpx.Client(base_url=keyed_server.server.base, headers=bearer) as client:
        spread = [
            client.get("/articles/t-wheat-harvest", headers={"x-forwarded-for": f"198.51.100.{i}"})
            for i in range(8)
        ]
        one = [
            client.get("/articles/t-wheat-harvest", headers={"x-forwarded-for": "192.0.2.7"}).status_code
            for _ in range(7)
        ]
    assert [r.status_code for r in spread] == [200] * 8  # eight clients behind the proxy, one each
    assert one[:5] == [200] * 5
    assert set(one[5:]) == {429}


@pytest.mark.slow
def test_origins_are_compared_normalised(keyed_server: Keyed) -> None:
    """Before: the preflight compared origins raw and refused https://GOOD.example.com:443."""
    base = keyed_server.server.base
    for spelled in ("https://GOOD.example.com:443", "https://good.example.com"):
        preflight = httpx.options(
            f"{base}/ask", headers={"origin": spelled, "access-control-request-method": "POST"}
        )
        assert preflight.status_code == 204, (spelled, preflight.text)
        assert preflight.headers["access-control-allow-origin"] == spelled
    asked = httpx.post(
        f"{base}/ask",
        json=QUESTION,
        headers={"origin": "https://Good.Example.com", "authorization": f"Bearer {keyed_server.widget}"},
        timeout=60,
    )
    assert asked.status_code == 200, asked.text


@pytest.mark.slow
def test_a_line_break_in_a_path_cannot_forge_a_log_line(open_server: Server) -> None:
    forged = "zz%0a2026-12-01%2009:51:00,000%20ERROR%20api%20[forged]"
    response = httpx.get(f"{open_server.base}/articles/{forged}")
    assert response.status_code == 400  # not an article id
    escaped = "/articles/zz\\x0a2026-12-01 09:51:00,000 ERROR api [forged]"
    deadline = time.monotonic() + 60  # the log is written by a queue listener thread: wait for the line
    while escaped not in open_server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = open_server.log.read_text().splitlines()
    assert not [line for line in lines if line.startswith("2026-12-01 09:51:00,000 ERROR api [forged]")]
    assert any(escaped in line for line in lines)
