"""The one exception tree: drawn whole in index/errors.py, and every error raised on purpose answered
with its branch's status (none a 500)."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

import index.errors
from api.web.problems import to_problem
from index.errors import ArticleError, RagError
from tests.conftest import ROOT

STATUS = {
    "ConfigError": 503,
    "InputError": 422, "ArticleError": 422, "QuestionError": 422, "AddressError": 422, "FeedError": 422,
    "FetchError": 422, "WebhookRefusedError": 422, "KeyRefusedError": 422, "WatchRefusedError": 422,
    "WatchLimitError": 422, "DatasetError": 422, "CompareError": 422,
    "NotFoundError": 404, "ArticleNotFoundError": 404, "FeedNotFoundError": 404, "WatchNotFoundError": 404,
    "ModelNotFoundError": 404,
    "ConflictError": 409, "KeyTakenError": 409, "KeyInUseError": 409,
    "UnavailableError": 503, "IndexStoreError": 503, "IndexCorruptError": 503, "IndexMismatchError": 503,
    "IndexNotReadyError": 503, "ShardUnavailableError": 503, "QueueFullError": 503,
    "LimitsUnavailableError": 503,
}  # fmt: skip
"""Every subclass of RagError in the project, by name, and the status the API answers it with."""


def _every_error() -> dict[str, type[RagError]]:
    for package in ("index", "rag", "api", "evals"):
        for module in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    found: dict[str, type[RagError]] = {}
    waiting: list[type[RagError]] = [RagError]
    while waiting:
        for sub in waiting.pop().__subclasses__():
            if sub.__module__.split(".")[0] in {"index", "rag", "api", "evals"}:
                found[sub.__name__] = sub
                waiting.append(sub)
    return found


ERRORS = _every_error()


def _drawn() -> dict[str, str]:
    """The tree in index/errors.py's docstring, as each class's parent."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (index.errors.__doc__ or "").splitlines():
        if not (match := re.match(r"^([│├└─ ]*)(\w+Error)\b", line)):
            continue
        depth, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def test_the_drawn_tree_is_the_tree() -> None:
    real = {name: kind.__bases__[0].__name__ for name, kind in ERRORS.items()}
    assert _drawn() == real


def test_every_error_has_a_status_in_this_table() -> None:
    assert sorted(STATUS) == sorted(ERRORS)


def _instance(kind: type[RagError]) -> RagError:
    return ArticleError("feed.xml", "no title") if issubclass(kind, ArticleError) else kind("what went wrong")


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_every_error_is_answered_with_its_status(name: str) -> None:
    problem = to_problem(_instance(ERRORS[name]))
    assert problem.status_code == STATUS[name]
    assert problem.status_code != 500
    assert problem.title
    assert (problem.headers or {}).get("Retry-After") == ("5" if STATUS[name] == 503 else None)


def test_a_bare_rag_error_is_the_one_500() -> None:
    assert to_problem(RagError("unexpected")).status_code == 500
