"""The HTTP face of the service (Litestar). No retrieval logic here: requests go to rag and index.

Every request passes the guard (api/web/guard.py: request id, keys, origins, JSON bodies, limits) before a
handler runs. Handlers answer from one snapshot of the index; writes publish a new one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.datastructures import MutableScopeHeaders, State
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsPlugin,
)
from litestar.plugins.prometheus import PrometheusConfig
from litestar.routes import HTTPRoute
from litestar.types import Message, Scope
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.config import Settings
from api.logs import LOG_FORMAT, RequestIdFilter, SafeFormatter
from api.metrics import (
    INDEX_ARTICLES,
    INDEX_CHUNKS,
    INDEX_GENERATION,
    INGEST_QUEUED,
    WATCHES,
    WORKER_REQUESTS,
    WORKERS,
    metrics_registry,
)
from api.service import DEFAULT_HEARTBEAT_SECONDS, Startup, build_answerer
from api.web.articles import ROUTES as ARTICLE_ROUTES
from api.web.ask import ROUTES as ASK_ROUTES
from api.web.chat import CHAT_ROUTES, ROUTING_HANDLERS
from api.web.context import service_of, startup_of
from api.web.feeds import ROUTES as FEED_ROUTES
from api.web.guard import Guard
from api.web.keys import ROUTES as KEY_ROUTES
from api.web.mcp_server import build_mcp, mcp_mount
from api.web.openapi import StrictStructSchemaPlugin
from api.web.problems import internal_error, problems, to_problem
from api.web.schemas import (
    HealthOut,
    render_answer,
)
from api.web.watches import ROUTES as WATCH_ROUTES
from index.errors import (
    RagError,
)
from rag import Answerer

log = logging.getLogger("api")


@get(
    "/health",
    sync_to_thread=False,
    responses={503: problems(503)[503]},
    summary="Ready once every part a request needs is loaded (the index, the models, keys and limits)",
)
def health(request: Request[Any, Any, Any]) -> HealthOut:
    answerer = service_of(request).answerer
    reader = answerer.index.reader()  # no SQL, no lock: never waits for a writer
    return HealthOut("ready", reader.article_count, reader.size, reader.generation)


@get(
    "/metrics",
    sync_to_thread=False,
    media_type="text/plain",
    summary="Prometheus metrics",
    description="Requests by route and status, latency histograms, answer stages, refusals, ingest jobs, "
    "index size, watches, their alerts and webhook deliveries.",
)
def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    service = startup_of(request).service
    if service is not None:
        WATCHES.set(service.watches.watches.count())
        INGEST_QUEUED.set(service.jobs.table.waiting())
        reader = service.answerer.index.reader()
        INDEX_ARTICLES.set(reader.article_count)
        INDEX_CHUNKS.set(reader.size)
        INDEX_GENERATION.set(reader.generation)
    return Response(generate_latest(metrics_registry()), headers={"Content-Type": CONTENT_TYPE_LATEST})


_WIDGET = Path(__file__).with_name("widget")


@get("/widget.js", sync_to_thread=False, include_in_schema=False)
def widget_js() -> Response[bytes]:
    """The chat widget: one file, no build step (api/web/widget/widget.js)."""
    return Response(
        (_WIDGET / "widget.js").read_bytes(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300", "Cross-Origin-Resource-Policy": "cross-origin"},
    )


@get("/", sync_to_thread=False, include_in_schema=False)
def demo_page() -> Response[bytes]:
    """A page that embeds the widget with one tag."""
    return Response((_WIDGET / "demo.html").read_bytes(), media_type="text/html; charset=utf-8")


async def _complete_allow(message: Message, scope: Scope) -> None:
    """Litestar 2's automatic OPTIONS answer lists only the methods of the first handler registered on a
    path (litestar#4169); list them all."""
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    headers = MutableScopeHeaders.from_message(message)
    if "allow" not in headers:
        return
    for route in scope["app"].routes:
        if isinstance(route, HTTPRoute) and route.path_format == scope.get("path_template"):
            headers["allow"] = ", ".join(sorted(route.methods))
            return


async def _worker_headers(message: Message, scope: Scope) -> None:
    """Under `rag serve --workers N`: which worker answered, and ``Connection: close`` from one that is
    stopping, so its clients' next requests go to the others."""
    if message["type"] != "http.response.start":
        return
    service: Startup = scope["app"].state.startup
    if service.worker is None:
        return
    WORKER_REQUESTS.labels(str(service.worker)).inc()
    headers = MutableScopeHeaders.from_message(message)
    headers["x-worker"] = str(service.worker)
    if service.draining.is_set():
        headers["connection"] = "close"


def create_app(
    settings: Settings,
    opener: Callable[[Settings], Answerer] = build_answerer,
    background: bool = True,
    on_load_error: Callable[[str], None] | None = None,
    open_without_keys: bool = True,
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
    worker: int | None = None,
) -> Litestar:
    """The Litestar app. The index loads on start-up (in a thread when ``background``) and every route
    answers 503 until it is ready. ``on_load_error`` is told when loading fails (`rag serve` stops).
    ``open_without_keys``: answer without a key while no key is configured (loopback or --insecure).
    ``worker``: this process's slot among `rag serve --workers N`, sent as ``X-Worker``."""
    startup = Startup(settings, open_without_keys, heartbeat_seconds=heartbeat_seconds, worker=worker)
    mcp_endpoint, mcp_lifespan = mcp_mount(build_mcp(lambda: startup.require().answerer))

    def start() -> None:
        args = (opener, render_answer, on_load_error)
        if background:
            threading.Thread(target=startup.load, args=args, name="index-load", daemon=True).start()
        else:
            startup.load(*args)
            if worker is not None and startup.error is None:
                WORKERS.labels(str(worker)).set(1)  # answering from now on

    problems = ProblemDetailsConfig(
        enable_for_all_http_exceptions=True,
        exception_to_problem_detail_map={RagError: to_problem},
    )
    prometheus = PrometheusConfig(app_name="newsqa", prefix="newsqa", group_path=True, exclude=["^/metrics$"])
    logging_config = LoggingConfig(
        formatters={"standard": {"()": SafeFormatter, "fmt": LOG_FORMAT}},
        filters={"request_id": {"()": RequestIdFilter}},
        handlers={
            "queue_listener": {
                "class": "litestar.logging.standard.QueueListenerHandler",
                "level": "DEBUG",
                "formatter": "standard",
                "filters": ["request_id"],
            }
        },
        log_exceptions="never",  # internal_error logs them, with the request id
    )
    return Litestar(
        route_handlers=[
            *ASK_ROUTES,
            *ARTICLE_ROUTES,
            health,
            metrics,
            widget_js,
            demo_page,
            *FEED_ROUTES,
            *WATCH_ROUTES,
            *KEY_ROUTES,
            *CHAT_ROUTES,
            mcp_endpoint,
        ],
        lifespan=[mcp_lifespan],
        on_startup=[start],
        on_shutdown=[startup.close],
        plugins=[ProblemDetailsPlugin(problems), StrictStructSchemaPlugin()],
        middleware=[
            prometheus.middleware,
            Guard(startup.door, settings.service.max_body_bytes),
        ],
        exception_handlers={Exception: internal_error, **ROUTING_HANDLERS},
        before_send=[_complete_allow, _worker_headers],
        request_max_body_size=settings.service.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="News QA",
            version="0.2.0",
            path="/schema",
            description="Questions over news, answered with a verbatim, cited quote for every sentence.",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="An API key from `rag keys add` (not needed while none is configured).",
                    )
                }
            ),
        ),
        state=State({"startup": startup}),
        logging_config=logging_config,
        debug=False,
    )
