"""Article addresses: the canonical form they are stored in, the ones that cannot be read (refused with a
422 over HTTP, and skipped record by record by `rag ingest`), and markup in them stored escaped."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from index.urls import AddressError, canonical_url
from tests.conftest import Server
from tests.servers import rag, rag_env


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    return body


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


@pytest.mark.slow
def test_a_bracket_address_is_a_422_over_http(open_server: Server) -> None:
    """Before: urlsplit raised ValueError and the API answered 500."""
    response = httpx.post(f"{open_server.base}/articles", json={"body": "Quokkas.", "url": "http://["})
    body = _problem(response, 422)
    assert "'url'" in str(body["detail"])
    assert "Traceback" not in open_server.log.read_text()


@pytest.mark.slow
def test_a_bracket_address_in_jsonl_skips_that_record_only(tmp_path: Path, tiktoken_dir: Path) -> None:
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


@pytest.mark.slow
def test_markup_in_an_address_is_stored_escaped(open_server: Server) -> None:
    article = {
        "id": "escaped-url",
        "body": "The ferry ran late.",
        "url": 'https://x.example/"><script>a</script>',
    }
    assert httpx.post(f"{open_server.base}/articles", json=article).status_code == 200
    stored = httpx.get(f"{open_server.base}/articles/escaped-url").json()
    assert stored["url"] == "https://x.example/%22%3E%3Cscript%3Ea%3C/script%3E"
