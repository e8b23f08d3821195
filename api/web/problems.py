"""Errors as HTTP answers: which status and title each error of the project's tree (index/errors.py)
becomes, as RFC 9457 problem details that never name a file, and the statuses each route declares."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.openapi import ResponseSpec
from litestar.plugins.problem_details import ProblemDetailsException

from api.errors import (
    KeyInUseError,
    KeyRefusedError,
    KeyTakenError,
    LimitsUnavailableError,
    ModelNotFoundError,
    QueueFullError,
    WatchLimitError,
    WatchRefusedError,
    WebhookRefusedError,
)
from api.web.schemas import ProblemOut
from index.errors import (
    ArticleError,
    ArticleNotFoundError,
    ConfigError,
    ConflictError,
    IndexNotReadyError,
    IndexStoreError,
    InputError,
    NotFoundError,
    QuestionError,
    RagError,
    UnavailableError,
)
from index.feeds import FeedError
from index.fetch import FetchError
from index.urls import AddressError

log = logging.getLogger("api")

_REASONS = {
    400: "Malformed JSON, a field out of range, or an invalid question",
    401: "No API key, or an unknown or revoked one (keys are configured)",
    403: "The key's scope does not cover this route, or the request's Origin is not allowed",
    404: "No such article, job, feed, watch, key or model",
    409: "A key of that name exists (names stay taken after revocation), or a key asked to revoke itself",
    413: "The request body is over the size limit",
    415: "A request body that is not application/json",
    422: "Well-formed but unusable: no article could be ingested, or contradictory filters",
    429: "Over a rate limit or daily cap; see Retry-After",
    500: "An unexpected server error (logged with the request id)",
    503: "The index is loading or unavailable, the ingest queue is full, or the limits are being repaired; "
    "see Retry-After",
}
_GUARDED = (401, 403, 429, 500, 503)
_OPENAI_TYPES = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("not_found_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", None),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    503: ("server_error", "service_unavailable"),
}


class OpenAIErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorOut(msgspec.Struct):
    """An error of the OpenAI-compatible routes, in OpenAI's shape."""

    error: OpenAIErrorBody


def openai_error(status: int, message: str) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``, typed as OpenAI types its errors."""
    kind, code = _OPENAI_TYPES.get(status, ("server_error", None))
    if status == 404 and "model" not in message:
        code = None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def openai_errors(*statuses: int) -> dict[int, ResponseSpec]:
    """The error responses of an OpenAI-compatible route, as ``problems`` gives those of the others."""
    return _responses(OpenAIErrorOut, "application/json", statuses)


def _responses(body: type[msgspec.Struct], media: str, statuses: tuple[int, ...]) -> dict[int, ResponseSpec]:
    """``statuses`` and those the guard may answer on any route, each with ``body`` as ``media``."""
    return {
        status: ResponseSpec(
            data_container=body, media_type=media, description=_REASONS[status], generate_examples=False
        )
        for status in sorted({*statuses, *_GUARDED})
    }


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    return _responses(ProblemOut, "application/problem+json", statuses)


_BRANCHES: dict[type[RagError], int] = {
    InputError: 422,
    NotFoundError: 404,
    ConflictError: 409,
    UnavailableError: 503,
    ConfigError: 503,
}
"""Each branch of the tree (index/errors.py) and its status; a bare RagError alone is a 500."""
_TITLES: dict[type[RagError], str] = {
    QuestionError: "Question cannot be answered as asked",
    ArticleError: "Article rejected",
    AddressError: "Address refused",
    FeedError: "Feed refused",
    FetchError: "Feed refused",
    WebhookRefusedError: "Webhook refused",
    KeyRefusedError: "Key refused",
    WatchRefusedError: "Watch refused",
    WatchLimitError: "Too many watches",
    InputError: "Request refused",
    ArticleNotFoundError: "Article not found",
    ModelNotFoundError: "Model not found",
    NotFoundError: "Not found",
    KeyTakenError: "Key name taken",
    KeyInUseError: "Key in use",
    ConflictError: "Conflict",
    IndexNotReadyError: "Index not ready",
    IndexStoreError: "Index unavailable",
    QueueFullError: "Ingest queue full",
    LimitsUnavailableError: "Limits unavailable",
    UnavailableError: "Service unavailable",
    ConfigError: "Service misconfigured",
}


def status_of(kind: type[Exception]) -> int:
    """The status an error of ``kind`` is answered with: its nearest branch's."""
    return next((_BRANCHES[k] for k in kind.__mro__ if k in _BRANCHES), 500)


def to_problem(exc: Exception) -> ProblemDetailsException:
    kind = type(exc)
    status = status_of(kind)
    title = next((_TITLES[k] for k in kind.__mro__ if k in _TITLES), "Service error")
    headers = {"Retry-After": "5"} if status == 503 else None
    # Store and settings errors name files and folders: the server log has them, the client gets no paths.
    if isinstance(exc, IndexStoreError) and not isinstance(exc, IndexNotReadyError):
        detail = "the index is unavailable; the server log says why"
    elif isinstance(exc, ConfigError):
        log.error("answered 503 for a settings error: %s", exc)
        detail = "the service is not configured to answer this; the server log says why"
    else:
        detail = str(exc)
    return ProblemDetailsException(status_code=status, title=title, detail=detail, headers=headers)


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    problem = ProblemDetailsException(
        status_code=500, title="Internal error", detail="the server failed; the error is logged"
    )
    return problem.to_response(request)
