"""The question routes: /ask, its event stream, and /search (any key; none while there are none)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import date
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Request, get, post
from litestar.params import JSONBody, Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from api.metrics import (
    STAGE_SECONDS,
)
from api.web.context import service_of, startup_of
from api.web.doors import ASK, guarded
from api.web.problems import problems, to_problem
from api.web.schemas import (
    AnswerOut,
    AskIn,
    ProblemOut,
    SearchOut,
    answer_out,
    passage_out,
)
from index.clean import VISIBLE
from index.errors import (
    RagError,
)
from rag import Answer, Answerer, Filters
from rag.answer import MAX_TOP_K
from rag.config import DEFAULT_MAX_QUESTION_CHARS
from rag.follow import Turn

log = logging.getLogger("api")


@post(
    "/ask",
    sync_to_thread=True,
    status_code=200,
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


ROUTES = [guarded(ASK, ask, ask_stream, search)]
