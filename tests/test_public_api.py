"""The public names of each package, pinned (as httpx pins its own), and the direction of the flow:
index imports neither rag nor api, rag does not import api, and evals is never imported by the service's
packages (`rag eval` reaches the command line through an entry point)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import index
import index.store
import rag
from tests.conftest import ROOT

PUBLIC = {
    index: [
        "Article", "ArticleError", "Chunk", "Chunker", "Embedder", "Index", "IndexReader", "IndexSettings",
        "IndexStore", "IndexWriter", "IngestReport", "Ingestor", "RagError", "Span", "TorchEmbedder",
        "load_paths", "make_ingestor", "open_index", "packaged_embedder", "parse_record",
    ],
    index.store: [
        "ArticleWrite", "Catalog", "DB_NAME", "Index", "IndexReader", "IndexStore", "IndexWriter",
        "LocalReader", "Window",
    ],
    rag: [
        "ABSTAIN_TEXT", "Answer", "AnswerComposer", "AnswerSettings", "Answerer", "Citation",
        "DenseRetriever", "ExtractiveComposer", "Filters", "Hit", "Question", "Retriever",
    ],
}  # fmt: skip
BELOW = {"index": {"rag", "api", "evals"}, "rag": {"api", "evals"}, "api": {"evals"}, "evals": {"api"}}
"""Packages each package must not import: api and evals are siblings on rag."""


@pytest.mark.parametrize("package", list(PUBLIC), ids=lambda p: p.__name__)
def test_public_names_are_pinned(package: object) -> None:
    names = getattr(package, "__all__", None)
    assert names is not None
    assert sorted(names) == sorted(PUBLIC[package])  # type: ignore[index]
    for name in names:
        assert getattr(package, name) is not None


def _imports(path: Path, depth: int = 1) -> set[str]:
    """The modules ``path`` imports, cut to their first ``depth`` dotted names."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {".".join(alias.name.split(".")[:depth]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(".".join(node.module.split(".")[:depth]))
    return found


FLOORS = ["api.cli", "api.web", "api.service", "api.work", "api.store"]
"""api drawn from its imports: each floor imports only the floors after it (and the modules beside them
all: settings, errors, logs, metrics); nothing below the web side imports litestar."""


def _floor(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:2])


@pytest.mark.parametrize("floor", FLOORS)
def test_api_floors_import_only_the_floors_below(floor: str) -> None:
    above = set(FLOORS[: FLOORS.index(floor)])
    if FLOORS.index(floor) > FLOORS.index("api.web"):
        above.add("litestar")
    paths = (
        [ROOT / "api" / "service.py"]
        if floor == "api.service"
        else (ROOT / floor.replace(".", "/")).rglob("*.py")
    )
    offending = {
        str(path.relative_to(ROOT)): sorted(banned)
        for path in sorted(paths)
        if (
            banned := {
                name for name in _imports(path, depth=2) if name in above or name.split(".")[0] in above
            }
        )
    }
    assert not offending


def test_the_api_floors_cover_every_module() -> None:
    beside = {
        "api.__init__",
        "api.__main__",
        "api.config",
        "api.errors",
        "api.logs",
        "api.metrics",
        "api.supervisor",
    }
    assert {_floor(path) for path in (ROOT / "api").rglob("*.py")} <= set(FLOORS) | beside


@pytest.mark.parametrize("package", sorted(BELOW))
def test_no_import_climbs_back_up(package: str) -> None:
    offending = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if banned := _imports(path) & BELOW[package]:
            offending[str(path.relative_to(ROOT))] = sorted(banned)
    assert not offending


LONGEST = {"api": 400, "index": 500, "rag": 500}
"""Lines a source file may have: api's rooms are kept small (issue 42)."""


def test_no_source_file_is_over_its_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for package, limit in LONGEST.items()
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > limit
    }
    assert not long
