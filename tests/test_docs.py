"""The documentation: the site builds strictly (and a broken link fails it), README.md is a front page whose
links resolve, and the HTTP examples of docs/http-api.md answer as they say against a real `rag serve`.

How an example is marked: in docs/http-api.md, a ```sh block holding one `curl` command and, after it, a
comment line `# STATUS` or `# STATUS: {...}`. Every `curl` on that page must be marked so. The request is
sent as written (method, path and query, headers, body; `127.0.0.1:8000` becomes the test server) to a
server over seeds/ and tests/data/conversation.jsonl; the answer must have that status and every field
the comment names, with the value written there unless it is `...` (any value), `[...]` (a list) or
`{...}` (an object).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SEEDS
from tests.servers import ROOT, rag, rag_env, serving

DOCS = ROOT / "docs"
README = ROOT / "README.md"
HTTP_PAGE = DOCS / "http-api.md"
CONVERSATION = ROOT / "tests" / "data" / "conversation.jsonl"
DOCUMENTED_ADDRESS = "127.0.0.1:8000"
ANY, LIST, OBJECT = "...", "[...]", "{...}"

SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
STATUS_LINE = re.compile(r"^# (\d{3})(?::\s*(.*))?$", re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Example:
    """One marked `curl` of the docs, as a request and what its answer must hold."""

    line: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes | None
    status: int
    fields: dict[str, Any]

    @property
    def name(self) -> str:
        return f"line {self.line}: {self.method} {self.target} -> {self.status}"


def curl_request(command: str) -> tuple[str, str, dict[str, str], bytes | None]:
    """Method, path with query, headers (lowercased names) and body of a `curl` command line."""
    words = shlex.split(command.replace("\\\n", " "))
    assert words[0] == "curl", command
    method: str | None = None
    url: str | None = None
    headers: dict[str, str] = {}
    body: bytes | None = None
    rest = iter(words[1:])
    for word in rest:
        if word in {"-s", "--silent", "-i"}:
            continue
        if word in {"-X", "--request"}:
            method = next(rest)
        elif word in {"-H", "--header"}:
            name, _, value = next(rest).partition(":")
            headers[name.strip().lower()] = value.strip()
        elif word in {"-d", "--data", "--data-raw"}:
            body = next(rest).encode()
        else:
            assert not word.startswith("-"), f"a curl option this check does not read: {word}"
            url = word
    assert url is not None, command
    address, slash, target = url.removeprefix("http://").partition("/")
    assert address == DOCUMENTED_ADDRESS, f"examples address the default server: {url}"
    if body is not None:
        headers.setdefault("content-type", "application/x-www-form-urlencoded")  # as curl does
    return method or ("POST" if body is not None else "GET"), slash + target, headers, body


def expected_fields(comment: str | None) -> dict[str, Any]:
    """The fields a status comment names: `[...]` and `{...}` stand for a list and an object, `...` for
    any value."""
    if not comment:
        return {}
    text = comment.replace(LIST, json.dumps(LIST)).replace(OBJECT, json.dumps(OBJECT))
    text = re.sub(r"([:,]\s*)\.\.\.(?=\s*[,}])", rf"\1{json.dumps(ANY)}", text)
    fields = json.loads(text)
    assert isinstance(fields, dict), comment
    return fields


def http_examples(page: Path) -> list[Example]:
    text = page.read_text()
    found: list[Example] = []
    for block in SH_BLOCK.finditer(text):
        if "curl " not in block[1]:
            continue
        status = STATUS_LINE.search(block[1])
        line = text.count("\n", 0, block.start()) + 1
        assert status, f"{page.name}, line {line}: a curl example without its `# STATUS` line"
        method, target, headers, body = curl_request(block[1][: status.start()].strip())
        fields = expected_fields(status[2])
        found.append(Example(line, method, target, headers, body, int(status[1]), fields))
    return found


def matches(expected: Any, actual: Any) -> bool:
    if expected == ANY:
        return True
    if expected == LIST:
        return isinstance(actual, list)
    if expected == OBJECT:
        return isinstance(actual, dict)
    return bool(expected == actual)


EXAMPLES = http_examples(HTTP_PAGE)


def mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    built = mkdocs_build(ROOT, tmp_path / "site")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "http-api" / "index.html").is_file()


@pytest.mark.parametrize(
    ("breakage", "page", "said"),
    [
        ("[gone](no-such-page.md)", "cli.md", "no-such-page.md"),
        ("[gone](workers.md#no-such-heading)", "cli.md", "no-such-heading"),
        ("# Left out of the nav", "orphan.md", "orphan.md"),
    ],
)
def test_a_broken_page_fails_the_build(tmp_path: Path, breakage: str, page: str, said: str) -> None:
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    shutil.copytree(DOCS, tmp_path / "docs")
    with (tmp_path / "docs" / page).open("a") as handle:
        handle.write(f"\n{breakage}\n")
    built = mkdocs_build(tmp_path, tmp_path / "site")
    assert built.returncode != 0
    assert said in built.stderr


def test_readme_is_a_front_page_whose_links_resolve() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 200
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]
    assert targets
    missing = [t for t in targets if not (ROOT / t.partition("#")[0]).exists()]
    assert not missing


def test_the_examples_are_found() -> None:
    assert len(EXAMPLES) >= 8
    assert {e.status for e in EXAMPLES} >= {200, 400, 404}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path) -> Iterator[str]:
    """`rag serve` on 127.0.0.1 over the seed and the conversation's stories; its base URL."""
    folder = tmp_path_factory.mktemp("docs-server")
    env = rag_env(folder / "data", tiktoken_dir)
    ingested = rag("ingest", "--quiet", str(SEEDS), str(CONVERSATION), env=env)
    assert ingested.returncode == 0, ingested.stderr
    with serving(env, folder / "server.log") as base:
        yield base


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_an_http_example_answers_as_documented(server: str, example: Example) -> None:
    response = httpx.request(
        example.method,
        server + example.target,
        headers=example.headers,
        content=example.body,
        timeout=120,
    )
    assert response.status_code == example.status, response.text
    if example.fields:
        body = response.json()
        wrong = {
            name: body.get(name, "(missing)")
            for name, value in example.fields.items()
            if name not in body or not matches(value, body[name])
        }
        assert not wrong, f"documented {example.fields}"
