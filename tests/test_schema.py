"""The OpenAPI schema says what the server does: the statuses, limits and security of every route, and
patterns (text that is not blank, ids, dates) that mean to schema tools and browsers what they mean to the
server."""

from __future__ import annotations

import json
import re
import subprocess

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from index.clean import VISIBLE, is_blank
from index.dates import DATE_PATTERN
from index.records import ID_PATTERN
from tests.conftest import Server


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


def test_the_schema_declares_statuses_limits_and_security(client: TestClient[Litestar]) -> None:
    schema = client.get("/schema/openapi.json").json()
    paths = schema["paths"]
    expected = {
        ("/ask", "post"): {"200", "400", "401", "403", "413", "415", "422", "429", "500", "503"},
        ("/search", "get"): {"200", "400", "401", "403", "422", "429", "500", "503"},
        ("/articles", "post"): {"200", "202", "400", "401", "403", "413", "415", "422", "429", "500", "503"},
        ("/articles/{article_id}", "get"): {"200", "400", "401", "403", "404", "429", "500", "503"},
        ("/articles/{article_id}", "delete"): {"204", "400", "401", "403", "404", "429", "500", "503"},
        ("/jobs/{job_id}", "get"): {"200", "400", "401", "403", "404", "429", "500", "503"},
        ("/health", "get"): {"200", "503"},
    }
    for (path, method), statuses in expected.items():
        operation = paths[path][method]
        assert set(operation["responses"]) == statuses, (path, method)
        for status in statuses - {"200", "202", "204"}:
            assert "application/problem+json" in operation["responses"][status]["content"]
        if path != "/health":
            assert operation["security"] == [{"bearer": []}]
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearer"]["description"],
    }
    ask_in = schema["components"]["schemas"]["AskIn"]
    assert ask_in["properties"]["question"]["maxLength"] == 2000
    assert ask_in["properties"]["question"]["minLength"] == 1
    assert (ask_in["properties"]["top_k"]["minimum"], ask_in["properties"]["top_k"]["maximum"]) == (1, 50)
    assert ask_in["additionalProperties"] is False
    k = next(p for p in paths["/search"]["get"]["parameters"] if p["name"] == "k")
    assert (k["schema"]["minimum"], k["schema"]["maximum"]) == (1, 50)
    assert set(client.options("/articles/t-wheat-harvest").headers["allow"].split(", ")) == {
        "GET",
        "DELETE",
        "OPTIONS",
    }
    assert client.put("/articles/t-wheat-harvest").headers["allow"] is not None


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


@pytest.mark.slow
@pytest.mark.parametrize("blank", ["\x1f", "\x1c\x1d", "\u00a0", "\ufeff", " \u2028 ", "\x00"])
def test_blank_means_the_same_to_the_schema_and_the_server(open_server: Server, blank: str) -> None:
    """Before: "\\x1f" was text to the schema (ECMA regexes) and blank to Python."""
    _problem(httpx.post(f"{open_server.base}/ask", json={"question": blank}), 400)
    _problem(httpx.get(f"{open_server.base}/search", params={"q": blank}), 400)
    _problem(httpx.post(f"{open_server.base}/articles", json={"id": "blank", "body": blank}), 400)


@pytest.mark.slow
def test_dates_the_schema_admits_are_the_dates_the_server_reads(open_server: Server) -> None:
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
