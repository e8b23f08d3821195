"""The HTTP face of the service (Litestar). No retrieval logic here: requests go to rag and index."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from litestar import Litestar, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from litestar.status_codes import HTTP_204_NO_CONTENT

from api.schemas import (
    AnswerOut,
    ArticleOut,
    AskIn,
    HealthOut,
    IngestOut,
    SearchOut,
    answer_out,
    article_out,
    ingest_out,
    passage_out,
)
from index import ArticleError, Ingestor, make_ingestor, parse_record
from index.config import Settings
from index.errors import (
    ArticleNotFoundError,
    IndexNotReadyError,
    IndexStoreError,
    QuestionError,
    RagError,
)
from rag import Answerer, Filters, open_answerer

log = logging.getLogger("api")
MAX_ARTICLES_PER_REQUEST = 1000


@dataclass
class Service:
    """What the handlers need; filled in by a background load so /health can say 'not ready' meanwhile."""

    settings: Settings
    answerer: Answerer | None = None
    ingestor: Ingestor | None = None
    error: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    def load(self, opener: Callable[[Settings], Answerer], on_error: Callable[[str], None] | None) -> None:
        try:
            answerer = opener(self.settings)
            self.ingestor = make_ingestor(self.settings, answerer.store, answerer.embedder)
            self.answerer = answerer
            self.ready.set()
        except RagError as exc:
            self.error = str(exc)
            log.error("the index could not be loaded: %s", exc)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("the index could not be loaded")
        if self.error is not None and on_error is not None:
            on_error(self.error)

    def require(self) -> tuple[Answerer, Ingestor]:
        if self.answerer is None or self.ingestor is None:
            raise IndexNotReadyError(self.error or "the index is still loading; retry in a few seconds")
        return self.answerer, self.ingestor


def _service(request: Request[Any, Any, Any]) -> Service:
    service: Service = request.app.state.service
    return service


@post("/ask", sync_to_thread=True, status_code=200, summary="Answer a question with cited sentences")
def ask(request: Request[Any, Any, Any], data: JSONBody[AskIn]) -> AnswerOut:
    answerer, _ = _service(request).require()
    f = data.filters
    filters = Filters(
        sources=tuple(f.sources or ()) if f else (),
        published_after=f.published_after if f else None,
        published_before=f.published_before if f else None,
    )
    question = answerer.question(data.question, as_of=data.as_of, top_k=data.top_k, filters=filters)
    return answer_out(answerer.ask(question))


@get("/search", sync_to_thread=True, summary="Passages only, no composed answer")
def search(
    request: Request[Any, Any, Any],
    q: FromQuery[str],
    k: FromQuery[int] = 5,
    as_of: FromQuery[date | None] = None,
) -> SearchOut:
    answerer, _ = _service(request).require()
    hits = answerer.search(answerer.question(q, as_of=as_of, top_k=k))
    return SearchOut([passage_out(h) for h in hits])


@get("/articles/{article_id:str}", sync_to_thread=True, summary="One stored article")
def get_article(request: Request[Any, Any, Any], article_id: FromPath[str]) -> ArticleOut:
    answerer, _ = _service(request).require()
    return article_out(answerer.store.article(article_id))


@post("/articles", sync_to_thread=True, summary="Ingest one JSON article or a list of them")
def post_articles(
    request: Request[Any, Any, Any], data: JSONBody[dict[str, Any] | list[dict[str, Any]]]
) -> IngestOut:
    _, ingestor = _service(request).require()
    records = data if isinstance(data, list) else [data]
    if not records:
        raise ArticleError("body", "the list of articles is empty")
    if len(records) > MAX_ARTICLES_PER_REQUEST:
        raise ArticleError("body", f"more than {MAX_ARTICLES_PER_REQUEST} articles in one request")
    items: list[Any] = []
    for number, record in enumerate(records):
        try:
            items.append(parse_record(record, f"article[{number}]"))
        except ArticleError as exc:
            items.append(exc)
    report = ingestor.ingest(items, progress=False)
    if report.failed and not (report.added or report.replaced or report.unchanged):
        raise ArticleError("body", "no article could be ingested: " + "; ".join(report.failed))
    return ingest_out(report)


@delete("/articles/{article_id:str}", sync_to_thread=True, status_code=HTTP_204_NO_CONTENT)
def delete_article(request: Request[Any, Any, Any], article_id: FromPath[str]) -> None:
    answerer, _ = _service(request).require()
    answerer.store.delete(article_id)


@get("/health", sync_to_thread=False, summary="Ready once the index is loaded")
def health(request: Request[Any, Any, Any]) -> HealthOut:
    answerer, _ = _service(request).require()
    return HealthOut("ready", answerer.store.article_count(), answerer.store.size)


_STATUS: list[tuple[type[RagError], int, str]] = [
    (QuestionError, 400, "Invalid question"),
    (ArticleNotFoundError, 404, "Article not found"),
    (ArticleError, 422, "Article rejected"),
    (IndexNotReadyError, 503, "Index not ready"),
    (IndexStoreError, 503, "Index unavailable"),
    (RagError, 500, "Service error"),
]


def _problem(exc: RagError) -> ProblemDetailsException:
    for kind, status, title in _STATUS:
        if isinstance(exc, kind):
            headers = {"Retry-After": "5"} if status == 503 else None
            return ProblemDetailsException(status_code=status, title=title, detail=str(exc), headers=headers)
    raise AssertionError("RagError is the last row")


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    problem = ProblemDetailsException(
        status_code=500, title="Internal error", detail="the server failed; the error is logged"
    )
    return problem.to_response(request)


def create_app(
    settings: Settings,
    opener: Callable[[Settings], Answerer] = open_answerer,
    background: bool = True,
    on_load_error: Callable[[str], None] | None = None,
) -> Litestar:
    """The Litestar app. The index loads on start-up (in a thread when ``background``) and every route
    answers 503 until it is ready. ``on_load_error`` is told when loading fails (`rag serve` stops)."""
    service = Service(settings)

    def start() -> None:
        args = (opener, on_load_error)
        if background:
            threading.Thread(target=service.load, args=args, name="index-load", daemon=True).start()
        else:
            service.load(*args)

    problems = ProblemDetailsConfig(
        enable_for_all_http_exceptions=True,
        exception_to_problem_detail_map={RagError: _problem},
    )
    return Litestar(
        route_handlers=[ask, search, get_article, post_articles, delete_article, health],
        on_startup=[start],
        plugins=[ProblemDetailsPlugin(problems)],
        exception_handlers={Exception: _internal},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="News QA", version="0.1.0", path="/schema"),
        state=State({"service": service}),
        debug=False,
    )
