"""Routes grouped by who may use them: each group is a Litestar router that carries, once, what its
handlers need (the key's scope the guard checks, the bearer scheme the schema declares, how errors are
answered)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Router
from litestar.types import ControllerRouterHandler, ExceptionHandlersMap

ASK: dict[str, Any] = {"scope": "ask"}
"""Questions: a key of any scope (none while the service has no keys)."""
ADMIN: dict[str, Any] = {"scope": "admin"}
"""Writes: an admin key."""
WATCH: dict[str, Any] = {"scope": "watch"}
"""Standing questions: any key, which sees its own (an admin key every one)."""
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def guarded(
    opt: Mapping[str, Any],
    *handlers: ControllerRouterHandler,
    exception_handlers: ExceptionHandlersMap | None = None,
) -> Router:
    """``handlers`` behind the guard's ``opt`` (api/web/guard.py reads it), with the bearer scheme."""
    return Router(
        path="/",
        route_handlers=list(handlers),
        opt=dict(opt),
        security=BEARER,
        exception_handlers=exception_handlers,
    )
