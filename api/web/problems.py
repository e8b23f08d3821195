"""Errors as HTTP answers: which status and title each error of the project's tree (index/errors.py)
becomes, as RFC 9457 problem details that never name a file, and the statuses each route declares."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.openapi import ResponseSpec
from litestar.plugins.problem_details import ProblemDetailsException

from api.state.alert_records import WatchLimitError
from api.state.errors import KeyInUseError, KeyRefusedError, NotFoundError, WebhookRefusedError
from api.state.jobs import QueueFullError
from api.state.keys import KeyTakenError
from api.web.schemas import ProblemOut
from index.errors import (
    ArticleError,
    ArticleNotFoundError,
    IndexNotReadyError,
    IndexStoreError,
    QuestionError,
    RagError,
)
from index.feeds import FeedError
from index.fetch import FetchError

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


_STATUS: list[tuple[type[Exception], int, str]] = [
    (QuestionError, 422, "Question cannot be answered as asked"),
    (ArticleNotFoundError, 404, "Article not found"),
    (NotFoundError, 404, "Not found"),
    (ArticleError, 422, "Article rejected"),
    (WebhookRefusedError, 422, "Webhook refused"),
    (WatchLimitError, 422, "Too many watches"),
    (KeyTakenError, 409, "Key name taken"),
    (KeyInUseError, 409, "Key in use"),
    (KeyRefusedError, 422, "Key refused"),
    (FeedError, 422, "Feed refused"),
    (FetchError, 422, "Feed refused"),
    (IndexNotReadyError, 503, "Index not ready"),
    (IndexStoreError, 503, "Index unavailable"),
    (QueueFullError, 503, "Ingest queue full"),
    (RagError, 500, "Service error"),
]


def to_problem(exc: Exception) -> ProblemDetailsException:
    for kind, status, title in _STATUS:
        if isinstance(exc, kind):
            headers = {"Retry-After": "5"} if status == 503 else None
            # Store errors name files and folders: the server log has them, the client gets no paths.
            detail = (
                "the index is unavailable; the server log says why"
                if (isinstance(exc, IndexStoreError) and not isinstance(exc, IndexNotReadyError))
                else str(exc)
            )
            return ProblemDetailsException(status_code=status, title=title, detail=detail, headers=headers)
    raise AssertionError("RagError is the last row")


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    problem = ProblemDetailsException(
        status_code=500, title="Internal error", detail="the server failed; the error is logged"
    )
    return problem.to_response(request)
