"""The HTTP face of the service (Litestar). No retrieval logic here: requests go to rag and index.

Every request passes the guard (api/web/guard.py: request id, keys, origins, JSON bodies, limits) before a
handler runs. Handlers answer from one snapshot of the index; writes publish a new one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Litestar, Request, Response, delete, get, post
from litestar.datastructures import MutableScopeHeaders, State
from litestar.exceptions import ValidationException
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromPath, JSONBody, Parameter
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsPlugin,
)
from litestar.plugins.prometheus import PrometheusConfig
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT
from litestar.types import Message, Scope
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.config import Settings
from api.logs import LOG_FORMAT, RequestIdFilter, SafeFormatter
from api.metrics import (
    INDEX_ARTICLES,
    INDEX_CHUNKS,
    INDEX_GENERATION,
    INGEST_QUEUED,
    STAGE_SECONDS,
    WATCHES,
    WORKER_REQUESTS,
    WORKERS,
    metrics_registry,
)
from api.service import DEFAULT_HEARTBEAT_SECONDS, Startup, build_answerer
from api.web.chat import CHAT_ROUTES, ROUTING_HANDLERS
from api.web.context import service_of, startup_of
from api.web.feeds import ROUTES as FEED_ROUTES
from api.web.guard import Guard
from api.web.keys import ROUTES as KEY_ROUTES
from api.web.mcp_server import build_mcp, mcp_mount
from api.web.openapi import ArticlesOperation, StrictStructSchemaPlugin
from api.web.problems import internal_error, problems, to_problem
from api.web.schemas import (
    MAX_ARTICLES_PER_REQUEST,
    AnswerOut,
    ArticleOut,
    ArticlesIn,
    AskIn,
    HealthOut,
    IngestOut,
    JobOut,
    ProblemOut,
    SearchOut,
    answer_out,
    article_out,
    ingest_out,
    job_out,
    passage_out,
    render_answer,
)
from api.web.watches import ROUTES as WATCH_ROUTES
from index import ArticleError, parse_record
from index.clean import VISIBLE
from index.errors import (
    ArticleNotFoundError,
    NotFoundError,
    RagError,
)
from index.records import ID_PATTERN, Article
from rag import Answer, Answerer, Filters
from rag.answer import MAX_TOP_K
from rag.config import DEFAULT_MAX_QUESTION_CHARS
from rag.follow import Turn

log = logging.getLogger("api")
ASK: dict[str, Any] = {"scope": "ask"}
ADMIN: dict[str, Any] = {"scope": "admin"}
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
ArticleId = Annotated[str, Parameter(pattern=ID_PATTERN, description="an article id")]


@post(
    "/ask",
    sync_to_thread=True,
    status_code=200,
    opt=ASK,
    security=_SECURITY,
    responses=problems(400, 413, 415, 422),
    summary="Answer a question with cited sentences",
)
def ask(request: Request[Any, Any, Any], data: JSONBody[AskIn]) -> AnswerOut:
    answerer = service_of(request).answerer
    return answer_out(_answer(answerer, data))


def _answer(answerer: Answerer, data: AskIn) -> Answer:
    f = data.filters
    filters = Filters(
        sources=tuple(f.sources or ()) if f else (),
        published_after=f.published_after if f else None,
        published_before=f.published_before if f else None,
    )
    history = [Turn(t.role, t.content, tuple(t.article_ids or ()), t.as_of) for t in data.history or ()]
    question = answerer.question(
        data.question, as_of=data.as_of, top_k=data.top_k, filters=filters, history=history
    )
    answer = answerer.ask(question)
    for stage, ms in answer.timings_ms.items():
        STAGE_SECONDS.labels(stage).observe(ms / 1000)
    return answer


@post(
    "/ask/stream",
    status_code=200,
    opt=ASK,
    security=_SECURITY,
    media_type="text/event-stream",
    responses=problems(400, 413, 415),
    summary="Answer a question as a stream of Server-Sent Events",
    description=(
        'Takes the /ask body. Events: `sources` (`{"citations": [...], "coverage", "timeline", '
        '"short_answer", "unstated"}`, before any text), one `sentence` per answer sentence '
        '(`{"text", "cites": [n], "verified"}`), then `done` '
        '(`{"abstained", "timings_ms", "generated", "fallback", "standalone_question", "rewritten_by", '
        '"coverage", "timeline"}`); '
        "or `error` (an RFC 9457 problem) when the question cannot be answered. Comment lines "
        "(`: keepalive`) are sent while an answer takes long. Malformed requests, keys, origins and limits "
        "are answered before the stream starts, as for /ask."
    ),
)
async def ask_stream(request: Request[Any, Any, Any], data: JSONBody[AskIn]) -> ServerSentEvent:
    startup = startup_of(request)
    answerer = startup.require().answerer
    return ServerSentEvent(_answer_events(answerer, data, startup.heartbeat_seconds))


async def _answer_events(
    answerer: Answerer, data: AskIn, heartbeat: float
) -> AsyncIterator[ServerSentEventMessage]:
    work = asyncio.ensure_future(anyio.to_thread.run_sync(_answer, answerer, data))
    while not work.done():
        await asyncio.wait({work}, timeout=heartbeat)
        if not work.done():
            yield ServerSentEventMessage(comment="keepalive", data=None)
    try:
        answer = work.result()
    except Exception as exc:
        if isinstance(exc, RagError):
            problem = to_problem(exc)
            body = ProblemOut(problem.status_code, problem.title or "", problem.detail)
        else:
            log.exception("answering a streamed question failed")
            body = ProblemOut(500, "Internal error", "the server failed; the error is logged")
        yield ServerSentEventMessage(event="error", data=msgspec.json.encode(body).decode())
        return
    out = answer_out(answer)
    sources = {
        "citations": out.citations,
        "coverage": out.coverage,
        "timeline": out.timeline,
        "short_answer": out.short_answer,
        "unstated": out.unstated,
    }
    yield ServerSentEventMessage(event="sources", data=_json(sources))
    for sentence in answer.sentences:
        said = {"text": sentence.text, "cites": sentence.cites, "verified": sentence.verified}
        yield ServerSentEventMessage(event="sentence", data=_json(said))
    done = {
        "abstained": answer.abstained,
        "timings_ms": answer.timings_ms,
        "generated": answer.generated,
        "fallback": answer.fallback,
        "standalone_question": answer.standalone_question,
        "rewritten_by": answer.rewritten_by,
        "coverage": out.coverage,
        "timeline": answer.timeline,
    }
    yield ServerSentEventMessage(event="done", data=_json(done))


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


@get(
    "/search",
    sync_to_thread=True,
    opt=ASK,
    security=_SECURITY,
    responses=problems(400, 422),
    summary="Passages only, no composed answer",
)
def search(
    request: Request[Any, Any, Any],
    q: Annotated[
        str,
        Parameter(
            min_length=1, max_length=DEFAULT_MAX_QUESTION_CHARS, pattern=VISIBLE, description="question"
        ),
    ],
    k: Annotated[int, Parameter(ge=1, le=MAX_TOP_K, description="passages")] = 5,
    as_of: Annotated[date | None, Parameter(description="nothing published after this day")] = None,
) -> SearchOut:
    answerer = service_of(request).answerer
    hits = answerer.search(answerer.question(q, as_of=as_of, top_k=k))
    return SearchOut([passage_out(h) for h in hits])


@get(
    "/articles/{article_id:str}",
    sync_to_thread=True,
    opt=ASK,
    security=_SECURITY,
    responses=problems(400, 404),
    summary="One stored article",
)
def get_article(request: Request[Any, Any, Any], article_id: ArticleId) -> ArticleOut:
    answerer = service_of(request).answerer
    found = answerer.index.reader().articles([article_id])
    if article_id not in found:
        raise ArticleNotFoundError(f"no article with id {article_id!r}")
    return article_out(found[article_id])


@post(
    "/articles",
    sync_to_thread=True,
    status_code=200,
    opt=ADMIN,
    security=_SECURITY,
    responses={
        202: ResponseSpec(JobOut, description="Accepted as a background job; poll the job's url"),
        **problems(400, 413, 415, 422),
    },
    summary="Ingest one JSON article or a list of them",
    operation_class=ArticlesOperation,
    description=(
        f"Up to {MAX_ARTICLES_PER_REQUEST} articles. A small request is ingested at once (200, with what "
        "was added, replaced, unchanged or failed); more articles or more text than the request budget "
        "become a background job (202, Location: /jobs/{id})."
    ),
)
def post_articles(
    request: Request[Any, Any, Any], data: JSONBody[ArticlesIn]
) -> Response[IngestOut | JobOut]:
    service = service_of(request)
    ingestor = service.ingestor
    records = data if isinstance(data, list) else [data]
    if not 1 <= len(records) <= MAX_ARTICLES_PER_REQUEST:  # msgspec drops bounds inside a union
        raise ValidationException(f"send 1 to {MAX_ARTICLES_PER_REQUEST} articles in one request")
    items: list[Article | ArticleError] = []
    for number, record in enumerate(records):
        fields = {k: v for k, v in msgspec.structs.asdict(record).items() if v is not None}
        try:
            items.append(parse_record(fields, f"article[{number}]"))
        except ArticleError as exc:
            items.append(exc)
    if all(isinstance(item, ArticleError) for item in items):
        raise ArticleError("body", "no article could be ingested: " + "; ".join(map(str, items)))
    budget = service.settings.service
    text = sum(len(r.body) for r in records)
    if len(records) > budget.ingest_sync_articles or text > budget.ingest_sync_chars:
        job = service.jobs.submit(items)
        out = job_out(job)
        return Response(out, status_code=202, headers={"Location": out.url})
    report = ingestor.ingest(items, progress=False)
    return Response(ingest_out(report), status_code=200)


@get(
    "/jobs/{job_id:str}",
    sync_to_thread=False,
    opt=ADMIN,
    security=_SECURITY,
    responses=problems(400, 404),
    summary="A background ingest job",
)
def get_job(request: Request[Any, Any, Any], job_id: FromPath[str]) -> JobOut:
    job = service_of(request).jobs.table.get(job_id)
    if job is None:
        raise NotFoundError(f"no job with id {job_id!r}")
    return job_out(job)


@delete(
    "/articles/{article_id:str}",
    sync_to_thread=True,
    status_code=HTTP_204_NO_CONTENT,
    opt=ADMIN,
    security=_SECURITY,
    responses=problems(400, 404),
    summary="Remove an article; no question asked after this returns can cite it",
)
def delete_article(request: Request[Any, Any, Any], article_id: ArticleId) -> None:
    answerer = service_of(request).answerer
    answerer.index.delete(article_id)


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
            ask,
            ask_stream,
            search,
            get_article,
            post_articles,
            delete_article,
            get_job,
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
