"""The service as an OpenAI-compatible model: ``GET /v1/models`` and ``POST /v1/chat/completions``.

A chat front end (Open WebUI, LibreChat, an IDE assistant) or the ``openai`` client talks to it as to any
model. The last user message is the question and the earlier user and assistant messages its history
(rag/follow.py); system messages and sampling fields (``temperature``, ``top_p``, ``max_tokens``, ...)
are accepted and have nothing to steer. The reply's content leads with the short answer when the reader
gives one (``**words** [n]`` and a blank line), then the cited answer with its ``[n]`` marks, then the list
of its sources (outlet, headline, date, link), so a front end that shows only the text still shows where
each claim comes from; the response also carries a top-level ``citations`` array (as
Perplexity's API does) with each citation's article id, outlet, headline, date, link and quote. Streamed,
the sentences arrive as ``chat.completion.chunk`` deltas and the stream ends with ``data: [DONE]``.

Models: ``news`` (verbatim quotes) and, when a language model is configured, ``news-generated``
(written by it, every sentence checked). Keys, scopes, origins and limits are the ones of ``/ask``; every
error, the guard's refusals and an unknown ``/v1`` path or method included, is in OpenAI's shape:
``{"error": {"message", "type", "param", "code"}}`` with the status OpenAI gives it (400 for a malformed
request; 422, as for ``/ask``, for one that is well-formed but cannot be answered: the last message not
the user's, an empty question).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from functools import cache
from typing import Annotated, Any, Literal

import anyio
import msgspec
import tiktoken
from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException
from litestar.params import Body, FromPath
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.response import ServerSentEvent, ServerSentEventMessage

from api.errors import ModelNotFoundError
from api.service import Service
from api.web.context import service_of
from api.web.doors import ASK, guarded
from api.web.openapi import ChatOperation
from api.web.problems import log, openai_error, openai_errors, to_problem
from api.web.schemas import cited_source
from index.errors import QuestionError, RagError
from index.tokens import encoding
from rag import Answer, Answerer, Citation
from rag.follow import MAX_HISTORY, Turn

QUOTED = "news"
GENERATED = "news-generated"
OPENAI: dict[str, Any] = {**ASK, "errors": "openai"}
_MAX_MESSAGES = 200


class ContentPart(msgspec.Struct):
    """A part of a message's content; only text parts are read."""

    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    """Only user and assistant turns are read."""
    content: str | list[ContentPart] | None = None


class ChatIn(msgspec.Struct):
    """OpenAI's chat completion request; fields not listed here (sampling and the rest) are accepted."""

    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1, max_length=_MAX_MESSAGES)]
    model: str = QUOTED
    stream: bool = False


def error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Any error of a /v1 route, in OpenAI's shape."""
    if isinstance(exc, ModelNotFoundError):
        status, message, headers = 404, str(exc), None
    elif isinstance(exc, RagError):
        problem = to_problem(exc)
        status, message, headers = problem.status_code, problem.detail or problem.title or "", problem.headers
    elif isinstance(exc, HTTPException):
        status, headers = exc.status_code, exc.headers
        extra = getattr(exc, "extra", None)
        message = f"{exc.detail}: {msgspec.json.encode(extra).decode()}" if extra else exc.detail
    else:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        status, message, headers = 500, "the server failed; the error is logged", None
    return Response(openai_error(status, message), status_code=status, headers=headers)


HANDLERS: dict[Any, Any] = {
    HTTPException: error_response,
    RagError: error_response,
    Exception: error_response,
}


def routing_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """No route for the path, or none for the method: raised before any route is chosen, so only the
    app's handlers see it. Under ``/v1`` in OpenAI's shape, as an OpenAI client expects; elsewhere as
    problem details, as the problem details plugin gives every other HTTP error."""
    path = request.url.path
    if path == "/v1" or path.startswith("/v1/"):
        return error_response(request, exc)
    problem = ProblemDetailsException(
        status_code=exc.status_code, title=exc.detail, extra=exc.extra, headers=exc.headers
    )
    return problem.to_response(request)


ROUTING_HANDLERS: dict[Any, Any] = {
    NotFoundException: routing_error,
    MethodNotAllowedException: routing_error,
}


def _models(answerer: Answerer) -> list[str]:
    return [QUOTED, GENERATED] if answerer.generates else [QUOTED]


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "news-qa"}


@get(
    "/v1/models",
    responses=openai_errors(),
    summary="The ways of answering, as OpenAI-compatible models",
    sync_to_thread=False,
)
def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    answerer = service_of(request).answerer
    return {"object": "list", "data": [_model(name) for name in _models(answerer)]}


@get(
    "/v1/models/{model_id:str}",
    responses=openai_errors(404),
    summary="One of the models",
    sync_to_thread=False,
)
def get_model(request: Request[Any, Any, Any], model_id: FromPath[str]) -> dict[str, Any]:
    answerer = service_of(request).answerer
    if model_id not in _models(answerer):
        raise ModelNotFoundError(
            f"the model {model_id[:100]!r} does not exist; the models are {_models(answerer)}"
        )
    return _model(model_id)


def _text(content: str | list[ContentPart] | None) -> str:
    if isinstance(content, str):
        return content
    return " ".join(part.text for part in content or () if part.type == "text" and part.text)


def _history(messages: list[ChatMessage], limit: int) -> list[Turn]:
    """The user and assistant turns before the last message, the last 20, each cut to ``limit``
    characters (a front end sends its whole thread back, our source lists included)."""
    turns = []
    for message in messages:
        content = " ".join(_text(message.content).split())
        if message.role in ("user", "assistant") and content:
            turns.append(Turn(message.role, content[:limit]))
    return turns[-MAX_HISTORY:]


def _ask(answerer: Answerer, data: ChatIn) -> Answer:
    models = _models(answerer)
    if data.model not in models:
        raise ModelNotFoundError(f"the model {data.model[:100]!r} does not exist; the models are {models}")
    last = data.messages[-1]
    if last.role != "user":
        raise QuestionError("the last message must be the user's question")
    limit = answerer.settings.max_question_chars
    question = answerer.question(_text(last.content), history=_history(data.messages[:-1], limit))
    return answerer.ask(question, generate=data.model == GENERATED)


def sources_text(citations: tuple[Citation, ...]) -> str:
    """The answer's sources as the text after it: ``[n] outlet, "headline", date, link``."""
    if not citations:
        return ""
    lines = []
    for c in citations:
        parts = [
            c.source or "unknown outlet",
            f"“{c.title}”",
            c.published_at.isoformat() if c.published_at else "undated",
        ]
        if c.url:
            parts.append(c.url)
        lines.append(f"[{c.n}] " + ", ".join(parts))
    return "\n\nSources:\n" + "\n".join(lines)


def citations_out(citations: tuple[Citation, ...]) -> list[dict[str, Any]]:
    return [msgspec.to_builtins(cited_source(c)) for c in citations]


def _pieces(answer: Answer) -> list[str]:
    """The answer's text in the pieces a stream sends: the short answer (when there is one), its sentences
    with their marks, then its sources."""
    said = [s.text + "".join(f" [{n}]" for n in s.cites) for s in answer.sentences]
    pieces = [(" " if i else "") + piece for i, piece in enumerate(said)]
    if "".join(pieces) != answer.text:  # an abstention's text says more than its one sentence
        pieces = [answer.text]
    short = answer.short_answer
    if short is not None:
        pieces.insert(0, f"**{short.text}** [{short.n}]\n\n")
    if answer.unstated:
        pieces.insert(0, f"{answer.unstated}\n\n")
    sources = sources_text(answer.citations)
    return [*pieces, sources] if sources else pieces


@cache
def _encoding(folder: str | None) -> tiktoken.Encoding:
    return encoding(folder)


def _usage(service: Service, data: ChatIn, content: str, limit: int) -> dict[str, int]:
    """Tokens of what the service read and wrote: the question, the history turns it keeps (the last 20,
    each cut to ``limit`` characters, as ``_history`` cuts them) and the reply. System messages and older
    turns are not read, so they are not counted either: the count is bounded by the question limits,
    whatever a client sends (it runs in a worker thread all the same)."""
    count = _encoding(service.settings.index.tiktoken_cache_dir).encode_ordinary
    read = [turn.content for turn in _history(data.messages[:-1], limit)]
    prompt = sum(len(count(text)) for text in [*read, _text(data.messages[-1].content)[:limit]])
    completion = len(count(content))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@post(
    "/v1/chat/completions",
    status_code=200,
    responses=openai_errors(400, 404, 413, 415, 422),
    operation_class=ChatOperation,
    summary="Answer the last user message, as an OpenAI chat completion (streamed or not)",
)
async def chat_completions(
    request: Request[Any, Any, Any], data: Annotated[ChatIn, Body(media_type="application/json")]
) -> Response[Any]:
    service = service_of(request)
    answerer = service.answerer
    answer = await anyio.to_thread.run_sync(_ask, answerer, data)
    pieces = _pieces(answer)
    content = "".join(pieces)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": data.model}
    citations = citations_out(answer.citations)
    limit = answerer.settings.max_question_chars
    usage = await anyio.to_thread.run_sync(_usage, service, data, content, limit)
    if not data.stream:
        message = {"role": "assistant", "content": content}
        return Response(
            {
                **head,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
                "usage": usage,
                "citations": citations,
            }
        )
    return ServerSentEvent(_chunks(head, pieces, citations, usage))


async def _chunks(
    head: dict[str, Any], pieces: list[str], citations: list[dict[str, Any]], usage: dict[str, int]
) -> AsyncIterator[ServerSentEventMessage]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> ServerSentEventMessage:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        body = {**head, "object": "chat.completion.chunk", "choices": [choice], **extra}
        return ServerSentEventMessage(data=msgspec.json.encode(body).decode())

    yield chunk({"role": "assistant", "content": ""}, citations=citations)
    for piece in pieces:
        yield chunk({"content": piece})
    yield chunk({}, "stop", citations=citations, usage=usage)
    yield ServerSentEventMessage(data="[DONE]")


CHAT_ROUTES = [guarded(OPENAI, list_models, get_model, chat_completions, exception_handlers=HANDLERS)]
