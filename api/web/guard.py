"""What stands at the door of every request: a request id, keys and scopes, origins and CORS, the JSON
body rule, and rate limits. Handlers behind it hold no security logic.

Routes say what they need through their ``opt``: ``{"scope": "ask"}`` or ``{"scope": "admin"}``;
routes without a scope (health, metrics, the schema) are open to everyone and never limited, but for
those whose ``opt`` says ``{"limited": True}`` (a watch's Atom feed, whose secret is in its address): no
key, the per-address limit all the same. A route
with ``{"errors": "openai"}`` (the OpenAI-compatible ones, api/web/chat.py) gets its refusals in OpenAI's
error shape instead of problem details.

With no active key, the service is open, which ``rag serve`` allows only on a loopback address (or
with ``--insecure``). Open, it answers only requests addressed to a loopback name (``Host`` is
``127.0.0.1``, ``[::1]`` or ``localhost``, any port, or a host named with ``--allowed-host``), so a page
on a name that rebinds to 127.0.0.1 gets 403; and a request from a web page on another host is refused,
so a page a reader happens to open cannot use the service behind their back. Origins are compared in
normalised form (scheme, lowercased host, default port dropped).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

import msgspec
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from api.errors import LimitsUnavailableError
from api.logs import REQUEST_ID, escape_controls
from api.metrics import AUTH_REFUSED, RATE_LIMITED
from api.store.keys import ApiKey
from api.store.limits import Doorkeeper, Verdict
from api.web.origins import (
    LOOPBACK_HOSTS,
    client_address,
    host_name,
    is_loopback_origin,
    listed_origins,
    normalized_origin,
    origin_allowed,
    own_origin,
)
from api.web.problems import openai_error

log = logging.getLogger("api.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_EXPOSED = "Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, X-Request-Id"
_ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-Id, Mcp-Protocol-Version"
"""What a page may send cross-origin (an MCP client in a browser sends its protocol version)."""


class GuardReplyError(Exception):
    """A request the guard answers itself: a refusal, or the answer to a CORS preflight."""

    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.headers = headers or {}


class Guard(ASGIMiddleware):
    """The middleware. ``doorkeeper`` is looked up per request, so it can appear once loading ends."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, doorkeeper: Callable[[], Doorkeeper | None], max_body_bytes: int) -> None:
        self._doorkeeper = doorkeeper
        self._max_body = max_body_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = [0]
        extra: dict[str, str] = {"x-request-id": request_id}
        try:
            try:
                receive = await self._admit(scope, receive, headers, extra)
            except GuardReplyError as refusal:
                extra.update(refusal.headers)
                handler = scope.get("route_handler")
                styled = handler.opt.get("errors") if handler is not None else None
                await _send_problem(send, refusal, extra, status, styled == "openai")
                return

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                    response_headers = MutableScopeHeaders.from_message(message)
                    for name, value in extra.items():
                        response_headers[name] = value
                await send(message)

            await next_app(scope, receive, send_with_headers)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            path = escape_controls(str(scope.get("path", "")))
            log.info("%s %s %s %.1fms", scope.get("method"), path, status[0], elapsed)
            REQUEST_ID.reset(token)

    async def _admit(
        self, scope: Scope, receive: Receive, headers: dict[str, str], extra: dict[str, str]
    ) -> Receive:
        """Raise GuardReplyError, or return the ``receive`` the app should read the body from."""
        method = scope.get("method", "GET")
        origin = headers.get("origin")
        handler = scope.get("route_handler")
        needed = handler.opt.get("scope") if handler is not None else None
        keyless_limited = needed is None and handler is not None and bool(handler.opt.get("limited"))
        # A POST that takes no body (``opt={"body": False}``: "poll this feed now") needs no JSON one.
        reads_body = method in _BODY_METHODS and (handler is None or handler.opt.get("body", True))
        door = self._doorkeeper()
        is_open = door is not None and _open(door)
        if door is not None and is_open:
            _check_host(door, headers)
        if method == "OPTIONS" and origin and "access-control-request-method" in headers:
            self._preflight(door, is_open, scope, origin, headers, extra)
        if needed is None and not keyless_limited:
            return receive
        if door is None:
            raise GuardReplyError(
                503,
                "Index not ready",
                "the index is still loading; retry in a few seconds",
                {"retry-after": "5"},
            )
        if needed is None:
            _admit_within_limits(door, scope, headers, None, extra)
            return receive
        key = None if is_open else _authenticate(door, headers, needed)
        scope.setdefault("state", {})["api_key"] = key  # whose watches a handler shows (api/web/watches.py)
        own = own_origin(scope, headers)
        if origin:
            normalized = normalized_origin(origin)
            if not origin_allowed(key, normalized, own):
                AUTH_REFUSED.labels("origin").inc()
                raise GuardReplyError(
                    403,
                    "Origin not allowed",
                    f"requests from {origin[:200]} are not allowed"
                    + (f" with the key {key.name!r}" if key else ""),
                )
            if normalized != own:
                extra["access-control-allow-origin"] = origin
                extra["access-control-expose-headers"] = _EXPOSED
                extra["vary"] = "Origin"
        if reads_body:
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json":
                raise GuardReplyError(
                    415,
                    "Unsupported media type",
                    "send the request body as JSON with 'Content-Type: application/json'",
                )
        _admit_within_limits(door, scope, headers, key, extra)
        if reads_body:
            return await self._checked_body(receive)
        return receive

    def _preflight(
        self,
        door: Doorkeeper | None,
        is_open: bool,
        scope: Scope,
        origin: str,
        headers: dict[str, str],
        extra: dict[str, str],
    ) -> None:
        normalized = normalized_origin(origin)
        allowed = (
            door is not None
            and normalized is not None
            and (
                normalized == own_origin(scope, headers)
                or normalized in listed_origins(door)
                or (is_open and is_loopback_origin(normalized))
            )
        )
        if not allowed:
            AUTH_REFUSED.labels("origin").inc()
            raise GuardReplyError(403, "Origin not allowed", f"requests from {origin[:200]} are not allowed")
        raise GuardReplyError(
            204,
            "",
            "",
            {
                "access-control-allow-origin": origin,
                "access-control-allow-methods": "GET, POST, DELETE",
                "access-control-allow-headers": _ALLOWED_HEADERS,
                "access-control-expose-headers": _EXPOSED,
                "access-control-max-age": "600",
                "vary": "Origin",
            },
        )

    async def _checked_body(self, receive: Receive) -> Receive:
        """Read the whole body, refuse it when too large or not decodable JSON, and replay it."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise GuardReplyError(
                    413,
                    "Request body too large",
                    f"the request body is over the limit of {self._max_body} bytes",
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        _check_json(body)
        replayed = False

        async def replay() -> ReceiveMessage:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


def _check_json(body: bytes) -> None:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GuardReplyError(
            400, "Malformed JSON", f"the body is not UTF-8 text (byte {exc.start})"
        ) from None
    try:
        msgspec.json.decode(body)
    except RecursionError:
        raise GuardReplyError(400, "Malformed JSON", "the JSON is nested too deeply") from None
    except msgspec.DecodeError as exc:
        raise GuardReplyError(400, "Malformed JSON", f"the body is not valid JSON ({exc})") from None


def _authenticate(door: Doorkeeper, headers: dict[str, str], needed: str) -> ApiKey:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    challenge = {"www-authenticate": 'Bearer realm="news-qa"'}
    if scheme.lower() != "bearer" or not token.strip():
        AUTH_REFUSED.labels("missing").inc()
        raise GuardReplyError(
            401, "API key required", "send an API key as 'Authorization: Bearer KEY'", challenge
        )
    key = door.keys.lookup(token.strip())
    if key is None:
        AUTH_REFUSED.labels("unknown").inc()
        raise GuardReplyError(401, "Unknown API key", "the API key is unknown or has been revoked", challenge)
    if not key.allows(needed):
        AUTH_REFUSED.labels("scope").inc()
        raise GuardReplyError(
            403,
            "Insufficient scope",
            f"the key {key.name!r} has scope {key.scope!r}; this route needs {needed!r}",
        )
    return key


def _open(door: Doorkeeper) -> bool:
    return door.open_without_keys and not door.keys.active()


def _check_host(door: Doorkeeper, headers: dict[str, str]) -> None:
    """Open, answer only requests addressed to this machine by a loopback name (or an allowed host): a web
    page on a name that an attacker rebinds to 127.0.0.1 sends its own name as ``Host``."""
    host = headers.get("host")
    if host is None:  # HTTP/1.0 without Host: no browser sends that
        return
    name = host_name(host)
    if name in LOOPBACK_HOSTS or name in door.allowed_hosts:
        return
    AUTH_REFUSED.labels("host").inc()
    raise GuardReplyError(
        403,
        "Host not allowed",
        f"this service has no API keys, so it answers only requests addressed to 127.0.0.1, [::1] or "
        f"localhost, not to {host[:100]!r}; create a key with `rag keys add`, or name this host with "
        "`rag serve --allowed-host`",
    )


def _admit_within_limits(
    door: Doorkeeper, scope: Scope, headers: dict[str, str], key: ApiKey | None, extra: dict[str, str]
) -> None:
    """Count the request against its limits: 429 with ``Retry-After`` when one is spent, else the
    ``RateLimit-*`` headers of the tightest; 503 while the limits file is being repaired."""
    try:
        verdicts = _limit(door, scope, headers, key)
    except LimitsUnavailableError:  # logged where the damage was met; the client gets no file names
        raise GuardReplyError(
            503,
            "Limits unavailable",
            "the request limits are being repaired; retry in a few seconds",
            {"retry-after": "5"},
        ) from None
    refused = [v for v in verdicts if not v.allowed]
    if refused:
        for verdict in refused:
            RATE_LIMITED.labels(verdict.kind).inc()
        worst = max(refused, key=lambda v: v.reset_seconds)
        extra.update(_limit_headers(worst))
        extra["retry-after"] = str(worst.reset_seconds)
        raise GuardReplyError(429, "Too many requests", _limit_detail(worst), {})
    if verdicts:
        extra.update(_limit_headers(min(verdicts, key=lambda v: v.remaining)))


def _limit(door: Doorkeeper, scope: Scope, headers: dict[str, str], key: ApiKey | None) -> list[Verdict]:
    verdicts = []
    if door.per_address_per_minute > 0:
        peer = scope.get("client")
        address = client_address(
            peer[0] if peer else None, headers.get("x-forwarded-for"), door.trusted_proxies
        )
        verdicts.append(door.buckets.take(f"address:{address}", door.per_address_per_minute, "address"))
    if key is not None:
        if key.per_minute:
            verdicts.append(door.buckets.take(f"key:{key.name}", key.per_minute, "key"))
        daily = door.daily.take(key)
        if daily is not None:
            verdicts.append(daily)
    return verdicts


def _limit_headers(verdict: Verdict) -> dict[str, str]:
    return {
        "ratelimit-limit": str(verdict.limit),
        "ratelimit-remaining": str(verdict.remaining),
        "ratelimit-reset": str(verdict.reset_seconds),
    }


def _limit_detail(verdict: Verdict) -> str:
    what = {
        "address": f"{verdict.limit} requests a minute from one address",
        "key": f"{verdict.limit} requests a minute for this key",
        "daily": f"{verdict.limit} requests a day for this key",
    }[verdict.kind]
    return f"over the limit of {what}; try again in {verdict.reset_seconds} s"


async def _send_problem(
    send: Send, refusal: GuardReplyError, headers: dict[str, str], status: list[int], openai: bool = False
) -> None:
    """The refusal as problem details, or for the OpenAI-compatible routes (``opt={"errors": "openai"}``)
    in OpenAI's error shape."""
    status[0] = refusal.status
    body = b""
    if refusal.status != 204 and openai:
        body = msgspec.json.encode(openai_error(refusal.status, refusal.detail))
        headers = {**headers, "content-type": "application/json"}
    elif refusal.status != 204:
        body = msgspec.json.encode(
            {"status": refusal.status, "title": refusal.title, "detail": refusal.detail}
        )
        headers = {**headers, "content-type": "application/problem+json"}
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": refusal.status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})
