"""What a handler reaches through the app's state: the process's Startup, and the Service once built."""

from __future__ import annotations

from typing import Any

from litestar import Request

from api.service import Service, Startup


def startup_of(request: Request[Any, Any, Any]) -> Startup:
    """This process's Startup (its worker slot and draining flag, the service once built)."""
    startup: Startup = request.app.state.startup
    return startup


def service_of(request: Request[Any, Any, Any]) -> Service:
    """The Service; IndexNotReadyError (503) while it is being built or when building it failed."""
    return startup_of(request).require()
