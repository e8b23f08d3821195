"""One test for each finding of the second hardening review (issue 16), each of which failed before the
fix, over real `rag serve` processes on 127.0.0.1: 1 DNS rebinding in open mode, 2 a spoofed
X-Forwarded-For, 3 an address urllib cannot split, 4 forged log lines, 5 an index whose meta.sqlite was
lost, 6 the smaller ones (job progress, markup in addresses, dates and blanks the schema and the server
read alike, origins compared normalised, unsafe ids, control characters in stored text)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from index import ArticleError, parse_record
from index.clean import VISIBLE, is_blank
from index.dates import DATE_PATTERN, read_date
from index.records import ID_PATTERN
from index.urls import AddressError, canonical_url
from tests.conftest import NEWS, SEEDS
from tests.servers import free_port, rag, rag_env, serving

pytestmark = pytest.mark.slow
QUESTION = {"question": "Why did Russian peacekeepers leave Karabakh?"}
GOOD = "https://good.example.com"


@dataclass
class Server:
    base: str
    port: int
    env: dict[str, str]
    log: Path
    data: Path


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path) -> Path:
    """The seed and the short news items, ingested once by `rag ingest`; servers run on copies."""
    data = tmp_path_factory.mktemp("hardening") / "data"
    ingested = rag("ingest", "--quiet", str(SEEDS), str(NEWS), env=rag_env(data, tiktoken_dir))
    assert ingested.returncode == 0, ingested.stderr
    return data


def _server(
    index_dir: Path, tiktoken_dir: Path, folder: Path, *args: str, keys: tuple[str, ...] = ()
) -> Iterator[tuple[Server, list[str]]]:
    data = folder / "data"
    shutil.copytree(index_dir, data)
    env = rag_env(data, tiktoken_dir)
    tokens = []
    for spec in keys:
        made = rag("keys", "add", *spec.split(), env=env)
        assert made.returncode == 0, made.stderr
        tokens.append(made.stdout.strip())
    log = folder / "server.log"
    with serving(env, log, *args) as base:
        yield Server(base, int(base.rsplit(":", 1)[1]), env, log, data), tokens


@pytest.fixture(scope="module")
def open_server(
    index_dir: Path, tiktoken_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """No keys (open mode), no per-address limit."""
    folder = tmp_path_factory.mktemp("open")
    for server, _ in _server(index_dir, tiktoken_dir, folder, "--rate-per-address", "0"):
        yield server


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


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    return body


def _patterns(schema: object) -> list[str]:
    """Every ``pattern`` inside a JSON Schema fragment."""
    if isinstance(schema, dict):
        own = [schema["pattern"]] if isinstance(schema.get("pattern"), str) else []
        return own + [p for value in schema.values() for p in _patterns(value)]
    if isinstance(schema, list):
        return [p for value in schema for p in _patterns(value)]
    return []


# --- 1 DNS rebinding ---------------------------------------------------------------------------------


def test_1_open_mode_answers_only_loopback_host_names(open_server: Server) -> None:
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


def test_1_allowed_hosts_are_named_on_purpose(index_dir: Path, tiktoken_dir: Path, tmp_path: Path) -> None:
    args = ("--allowed-host", "desk.internal")
    for server, _ in _server(index_dir, tiktoken_dir, tmp_path, *args):
        named = httpx.get(f"{server.base}/articles/t-wheat-harvest", headers={"host": "desk.internal:80"})
        assert named.status_code == 200
        other = httpx.get(f"{server.base}/articles/t-wheat-harvest", headers={"host": "evil.example"})
        _problem(other, 403)


# --- 2 X-Forwarded-For ---------------------------------------------------------------------------------


def test_2_a_spoofed_forwarded_address_does_not_dodge_the_limit(
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


def test_2_a_trusted_proxy_is_believed(keyed_server: Keyed) -> None:
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


# --- 3 an address urllib cannot split ------------------------------------------------------------------


def test_3_a_bracket_address_is_a_422_over_http(open_server: Server) -> None:
    """Before: urlsplit raised ValueError and the API answered 500."""
    response = httpx.post(f"{open_server.base}/articles", json={"body": "Quokkas.", "url": "http://["})
    body = _problem(response, 422)
    assert "'url'" in str(body["detail"])
    assert "Traceback" not in open_server.log.read_text()


def test_3_a_bracket_address_in_jsonl_skips_that_record_only(tmp_path: Path, tiktoken_dir: Path) -> None:
    """Before: one such record aborted `rag ingest` with a traceback and stored none of the others."""
    corpus = tmp_path / "mixed.jsonl"
    records = [
        {"id": "quokka-1", "body": "Quokkas were counted on Rottnest Island on Monday."},
        {"id": "quokka-bad", "body": "Quokkas.", "url": "http://["},
        {"id": "quokka-2", "body": "Rangers said the quokka count rose for a third year."},
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    env = rag_env(tmp_path / "data", tiktoken_dir)
    result = rag("ingest", "--quiet", str(corpus), env=env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{corpus}:2: 'url' is not a usable http(s) address" in result.stderr
    assert "2 added" in result.stdout


# --- 4 forged log lines --------------------------------------------------------------------------------


def test_4_a_line_break_in_a_path_cannot_forge_a_log_line(open_server: Server) -> None:
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


# --- 5 a lost meta.sqlite ------------------------------------------------------------------------------


def test_5_a_small_index_without_its_metadata_refuses_to_start(index_dir: Path, tmp_path: Path) -> None:
    """Before: below 20,000 chunks there are no segment files, so the server started empty and open."""
    data = tmp_path / "data"
    shutil.copytree(index_dir, data)
    env = rag_env(data, tmp_path / "tiktoken")
    assert rag("keys", "add", "ops", "--scope", "admin", env=env).returncode == 0
    assert not list((data / "index").glob("seg-*"))  # a small index: nothing but SQLite and its marker
    for path in (data / "index").glob("meta.sqlite*"):
        path.unlink()
    served = rag("serve", "--port", str(free_port()), env=env, timeout=120)
    assert served.returncode == 2
    assert "meta.sqlite is missing, but the folder held an index of articles" in served.stderr
    assert not (data / "index" / "meta.sqlite").exists()  # nothing was created in its place
    listed = rag("keys", "list", env=env)  # the keys live apart from the index (issue 17)
    assert listed.returncode == 0, listed.stderr
    assert "ops" in listed.stdout


def test_5_lost_keys_refuse_to_start_rather_than_start_open(index_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(index_dir, data)
    env = rag_env(data, tmp_path / "tiktoken")
    assert rag("keys", "add", "ops", "--scope", "admin", env=env).returncode == 0
    (data / "service.sqlite").unlink()
    served = rag("serve", "--port", str(free_port()), env=env, timeout=120)
    assert served.returncode == 2
    assert "service.sqlite is missing" in served.stderr
    (data / "service.sqlite").write_bytes(b"")  # an empty file opens as an empty database
    served = rag("serve", "--port", str(free_port()), env=env, timeout=120)
    assert served.returncode == 2
    assert "holds no API keys" in served.stderr


def test_5_a_replaced_metadata_file_is_not_taken_for_a_new_index(index_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(index_dir, data)
    env = rag_env(data, tmp_path / "tiktoken")
    for path in (data / "index").glob("meta.sqlite*"):
        path.unlink()
    (data / "index" / "meta.sqlite").write_bytes(b"")  # an empty file opens as an empty database
    served = rag("serve", "--port", str(free_port()), env=env, timeout=120)
    assert served.returncode == 2
    assert "holds no articles" in served.stderr


# --- 6 the smaller findings ----------------------------------------------------------------------------


def test_6_a_job_reports_progress_as_its_batches_commit(open_server: Server) -> None:
    """Before: ``done`` stayed 0 until the job ended."""
    sentence = "The regional council voted on measure {i} about roads, schools and the harbour budget. "
    articles = [
        {"id": f"progress-{i}", "title": f"Council measure {i}", "body": sentence.format(i=i) * 60}
        for i in range(24)
    ]  # about 5,300 characters each: six commits of the 20,000-character request budget
    accepted = httpx.post(f"{open_server.base}/articles", json=articles, timeout=60)
    assert accepted.status_code == 202, accepted.text
    seen: list[int] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = httpx.get(f"{open_server.base}{accepted.json()['url']}").json()
        seen.append(job["done"])
        if job["status"] in {"done", "failed"}:
            break
        time.sleep(0.05)
    assert job["status"] == "done"
    assert any(0 < done < 24 for done in seen), sorted(set(seen))
    assert seen == sorted(seen)


def test_6_markup_in_an_address_is_stored_escaped(open_server: Server) -> None:
    article = {
        "id": "escaped-url",
        "body": "The ferry ran late.",
        "url": 'https://x.example/"><script>a</script>',
    }
    assert httpx.post(f"{open_server.base}/articles", json=article).status_code == 200
    stored = httpx.get(f"{open_server.base}/articles/escaped-url").json()
    assert stored["url"] == "https://x.example/%22%3E%3Cscript%3Ea%3C/script%3E"


def test_6_dates_the_schema_admits_are_the_dates_the_server_reads(open_server: Server) -> None:
    """Before: any string was valid per the schema, and "someday" was a 422."""
    schema = httpx.get(f"{open_server.base}/schema/openapi.json").json()
    declared = schema["components"]["schemas"]["ArticleIn"]["properties"]["published_at"]
    assert DATE_PATTERN in _patterns(declared)
    url = f"{open_server.base}/articles"
    _problem(httpx.post(url, json={"id": "d1", "body": "Text.", "published_at": "someday"}), 400)
    feed_date = {"id": "d2", "body": "Text.", "published_at": "Fri, 19 Jan 2024 10:00:00 GMT"}
    assert httpx.post(url, json=feed_date).status_code == 200
    assert httpx.get(f"{url}/d2").json()["published_at"] == "2024-01-19"
    impossible = _problem(
        httpx.post(url, json={"id": "d3", "body": "Text.", "published_at": "2023-02-30"}), 422
    )
    assert "no day 2023-02-30" in str(impossible["detail"])


@pytest.mark.parametrize("blank", ["\x1f", "\x1c\x1d", "\u00a0", "\ufeff", " \u2028 ", "\x00"])
def test_6_blank_means_the_same_to_the_schema_and_the_server(open_server: Server, blank: str) -> None:
    """Before: "\\x1f" was text to the schema (ECMA regexes) and blank to Python."""
    _problem(httpx.post(f"{open_server.base}/ask", json={"question": blank}), 400)
    _problem(httpx.get(f"{open_server.base}/search", params={"q": blank}), 400)
    _problem(httpx.post(f"{open_server.base}/articles", json={"id": "blank", "body": blank}), 400)


def test_6_origins_are_compared_normalised(keyed_server: Keyed) -> None:
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


@pytest.mark.parametrize("article_id", [".", "..", "a/b", "a b", "caf\u00e9", "x\n", ".hidden"])
def test_6_ids_are_of_a_safe_character_set(open_server: Server, article_id: str) -> None:
    """Before: "." and ".." were stored, and could not be deleted over HTTP."""
    response = httpx.post(
        f"{open_server.base}/articles", json={"id": article_id, "body": "The bus ran late."}
    )
    _problem(response, 400)


def test_6_control_characters_are_not_stored(open_server: Server) -> None:
    article = {
        "id": "controls",
        "title": "Harbour\x00 re\x1fopens",
        "source": "Harbour\x07 Wire",
        "authors": ["Ann\x00 Lee"],
        "body": "The harbour\x00 reopened on Monday.\x0bFishing boats returned\x1b the same afternoon.",
    }
    assert httpx.post(f"{open_server.base}/articles", json=article).status_code == 200
    stored = httpx.get(f"{open_server.base}/articles/controls").json()
    assert (stored["title"], stored["source"], stored["authors"]) == (
        "Harbour reopens",
        "Harbour Wire",
        ["Ann Lee"],
    )
    assert stored["body"] == "The harbour reopened on Monday.\n\nFishing boats returned the same afternoon."


# --- the rules themselves -------------------------------------------------------------------------------


def test_the_visible_and_id_patterns_mean_the_same_in_javascript() -> None:
    """The schema's regexes are ECMA-262; browsers and schema tools read them so. Node.js checks every
    character of the Basic Multilingual Plane against VISIBLE, and a set of ids against ID_PATTERN."""
    ids = [".", "..", "a", "a.b", "_x", "x\n", "caf\u00e9", "a/b", "-x", "a" * 200, "a" * 201, "x:1"]
    script = (
        "const visible = new RegExp(process.argv[1]); const id = new RegExp(process.argv[2]);"
        "const blank = []; for (let c = 0; c < 0x10000; c++) {"
        "  if (c >= 0xd800 && c < 0xe000) continue;"
        "  if (!visible.test(String.fromCharCode(c))) blank.push(c); }"
        "const ids = JSON.parse(process.argv[3]).map((s) => id.test(s));"
        "console.log(JSON.stringify({blank, ids}));"
    )
    out = subprocess.run(
        ["node", "-e", script, VISIBLE, ID_PATTERN, json.dumps(ids)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    seen = json.loads(out.stdout)
    python_blank = [c for c in range(0x10000) if not 0xD800 <= c < 0xE000 and is_blank(chr(c))]
    assert seen["blank"] == python_blank
    assert seen["ids"] == [re.search(ID_PATTERN, i) is not None for i in ids]
    assert not [c for c in python_blank if chr(c).isprintable() and not chr(c).isspace()]


@pytest.mark.parametrize(
    ("given_url", "stored"),
    [
        ("HTTP://Example.COM:80/a?utm_source=x&b=2&a=1", "http://example.com/a?a=1&b=2"),
        ("https://user:secret@example.com/story", "https://example.com/story"),
        ("https://example.com/a'b`c", "https://example.com/a%27b%60c"),
        ("http://[::1]:8080/a", "http://[::1]:8080/a"),
    ],
)
def test_addresses_are_stored_in_canonical_form(given_url: str, stored: str) -> None:
    assert canonical_url(given_url) == stored


@pytest.mark.parametrize(
    "bad", ["http://[", "https://x:99999/", "https://x:abc/", "https:///path", "ftp://x/", "https://a<b/"]
)
def test_addresses_that_cannot_be_read_are_refused(bad: str) -> None:
    with pytest.raises(AddressError):
        canonical_url(bad)


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("2024-01-19", "2024-01-19"),
        ("2024-01-19T23:30:00-05:00", "2024-01-19"),
        ("2024/01/19", "2024-01-19"),
        ("January 19, 2024", "2024-01-19"),
        ("19 Jan 2024", "2024-01-19"),
        ("Fri, 19 Jan 2024 10:00:00 GMT", "2024-01-19"),
        ("sept 3rd 2023", "2023-09-03"),
    ],
)
def test_dates_in_the_accepted_forms(text: str, day: str) -> None:
    assert read_date(text).isoformat() == day


@pytest.mark.parametrize("text", ["10", "someday", "19/01/2024", "2024-01-19\n", "2023-02-30", "Friday"])
def test_other_dates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a date|no day"):
        read_date(text)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_FIELDS = ("id", "title", "url", "source", "published_at", "authors", "body", "text")


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(_FIELDS),
        _JSON | st.sampled_from(["http://[", "https://x:99999/", "\x00", "..", "2023-02-30", "Quokkas."]),
    )
)
def test_any_record_is_an_article_or_an_article_error(record: dict[str, object]) -> None:
    """What a .jsonl line or a POST can hold: never any other exception (one would abort an ingest)."""
    with contextlib.suppress(ArticleError):
        parse_record(record, "record")
