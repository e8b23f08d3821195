"""Standing questions over HTTP: ``/watches`` to make, list, read and remove them (the ``watch`` scope;
a key sees its own, an admin key every one), their alerts newest first and paged, a stream of
server-sent events for the widget, and an Atom feed behind a secret token in its address (``feedgen``
writes it), which ``DELETE /watches/{id}/feed`` revokes and ``POST /watches/{id}/feed`` replaces."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, JSONBody, Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_204_NO_CONTENT
from litestar.types import ControllerRouterHandler

from api.errors import WatchNotFoundError, WebhookRefusedError
from api.service import Service, Startup
from api.store.keys import ApiKey
from api.store.records import Alert, Made, Watch
from api.store.standing import WatchTables
from api.store.watches import DEFAULT_MIN_CONFIDENCE, MAX_WATCH_SOURCES
from api.web.atom import atom
from api.web.context import service_of, startup_of
from api.web.doors import WATCH, guarded
from api.web.problems import problems
from api.web.schemas import Text
from index.fetch import FetchError
from index.urls import MAX_URL_CHARS

_PAGE = 20
FOLLOW_SECONDS = 1.0
_LAST = 2**62
"""Above any alert's number (SQLite's integers end at 2**63)."""
WatchId = Annotated[str, Parameter(pattern=r"^w_[0-9a-f]{16}$", description="a watch id")]
Outlet = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Address = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL_CHARS, pattern="^https?://")]


class WatchIn(msgspec.Struct, forbid_unknown_fields=True):
    question: Text
    """The standing question, in plain language (as for /ask)."""
    sources: Annotated[list[Outlet], msgspec.Meta(max_length=MAX_WATCH_SOURCES)] | None = None
    """Only articles from these outlets answer it (any outlet when absent)."""
    webhook: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL_CHARS, pattern="^https?://")] | None
    ) = None
    """An http(s) address each alert is POSTed to, signed (Standard Webhooks); the feed fetcher's rules
    apply: public addresses only, unless the operator allows a network."""
    min_confidence: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = DEFAULT_MIN_CONFIDENCE
    """The reader's probability that a new article answers, at which the watch fires."""


class DeliveriesOut(msgspec.Struct):
    delivered: int
    pending: int
    given_up: int


class WatchOut(msgspec.Struct):
    id: str
    question: str
    sources: list[str]
    webhook: str | None
    min_confidence: float
    owner: str | None
    """The key that made it (null when made while the service had no keys)."""
    created_at: str
    alerts: int
    """Alerts so far (the last one's sequence number)."""
    failing: str | None
    """Why its webhook stopped being tried; null while deliveries work."""
    feed: bool
    """Whether its Atom feed has an address (false once revoked)."""
    active: bool
    """False once the key that made it is revoked: it no longer matches, delivers or serves its feed."""
    deliveries: DeliveriesOut | None = None
    feed_url: str | None = None
    """The Atom feed's address, with its secret token: shown when made or replaced, never again."""
    webhook_secret: str | None = None
    """The webhook's signing secret (``whsec_...``): shown when the watch is made, never again."""


class AlertsOut(msgspec.Struct):
    alerts: list[dict[str, Any]]
    """Newest first: each the cited answer as /ask gives it, with ``id`` (receivers dedupe by it),
    ``watch_id``, ``seq``, ``created_at``, ``article_id`` and ``confidence``."""
    next: str | None
    """The next (older) page, when there is one."""


class FeedOut(msgspec.Struct):
    feed_url: str


def _caller(request: Request[Any, Any, Any]) -> tuple[str | None, bool]:
    """The key's name and whether it sees every watch (admin, or a service without keys)."""
    key: ApiKey | None = request.state.get("api_key")
    if key is None:
        return None, True
    return key.name, key.scope == "admin"


def _store(request: Request[Any, Any, Any]) -> WatchTables:
    return service_of(request).watches


def _out(
    watch: Watch, store: WatchTables | None = None, made: Made | None = None, feed_url: str | None = None
) -> WatchOut:
    out = msgspec.convert(watch.as_json(), WatchOut)
    if store is not None:
        out.deliveries = DeliveriesOut(**store.outbox.deliveries(watch.id))
    if made is not None:
        out.webhook_secret = made.webhook_secret
    out.feed_url = feed_url
    return out


def _feed_url(request: Request[Any, Any, Any], watch_id: str, token: str) -> str:
    return str(request.url_for("watch_feed", watch_id=watch_id).rstrip("/")) + f"?token={token}"


@post(
    "/watches",
    sync_to_thread=True,
    status_code=201,
    responses=problems(400, 413, 415, 422),
    summary="Watch a question: be told when a new article answers it",
    description="422 when the question cannot be asked, the webhook cannot be used, or the key keeps as many "
    "watches as it may (RAG_WATCHES_PER_KEY).",
)
def add_watch(request: Request[Any, Any, Any], data: JSONBody[WatchIn]) -> WatchOut:
    service = service_of(request)
    store = service.watches
    service.answerer.question(data.question)  # the /ask rules: 422 for a question that cannot be asked
    if data.webhook is not None:
        try:
            service.alerts.poster.check_address(data.webhook)
        except FetchError as exc:
            raise WebhookRefusedError(f"the webhook cannot be used: {exc}") from None
    owner, _ = _caller(request)
    limit = service.settings.service.watches_per_key
    made = store.watches.add(
        data.question, owner, data.sources or (), data.webhook, data.min_confidence, limit
    )
    return _out(made.watch, store, made, _feed_url(request, made.watch.id, made.feed_token))


@get(
    "/watches",
    sync_to_thread=True,
    responses=problems(400),
    summary="The caller's watches (an admin key: every watch)",
)
def list_watches(request: Request[Any, Any, Any]) -> list[WatchOut]:
    store = _store(request)
    owner, everyone = _caller(request)
    return [_out(w) for w in store.watches.watches(owner, everyone)]


@get(
    "/watches/{watch_id:str}",
    sync_to_thread=True,
    responses=problems(400, 404),
    summary="One watch, with how its webhook deliveries stand",
)
def get_watch(request: Request[Any, Any, Any], watch_id: WatchId) -> WatchOut:
    store = _store(request)
    return _out(store.watches.get(watch_id, *_caller(request)), store)


@delete(
    "/watches/{watch_id:str}",
    sync_to_thread=True,
    status_code=HTTP_204_NO_CONTENT,
    responses=problems(400, 404),
    summary="Stop watching (its alerts and undelivered webhooks go with it)",
)
def remove_watch(request: Request[Any, Any, Any], watch_id: WatchId) -> None:
    store = _store(request)
    store.watches.remove(watch_id, *_caller(request))


@get(
    "/watches/{watch_id:str}/alerts",
    name="watch_alerts",
    sync_to_thread=True,
    responses=problems(400, 404),
    summary="A watch's alerts, newest first, a page at a time",
)
def watch_alerts(
    request: Request[Any, Any, Any],
    watch_id: WatchId,
    before: Annotated[int | None, Parameter(ge=1, description="alerts numbered below this")] = None,
    limit: Annotated[int, Parameter(ge=1, le=100, description="alerts on a page")] = _PAGE,
) -> AlertsOut:
    store = _store(request)
    store.watches.get(watch_id, *_caller(request))
    alerts = store.alerts.alerts(
        watch_id, before_seq=None if before is None else min(before, _LAST), limit=limit
    )
    older = alerts[-1].seq if len(alerts) == limit and alerts[-1].seq > 1 else None
    path = request.url_for("watch_alerts", watch_id=watch_id)
    return AlertsOut([a.body for a in alerts], f"{path}?before={older}&limit={limit}" if older else None)


@post(
    "/watches/{watch_id:str}/feed",
    sync_to_thread=True,
    status_code=200,
    opt={"body": False},
    responses=problems(400, 404),
    summary="A new address for the watch's Atom feed (the old one stops working)",
)
def renew_feed(request: Request[Any, Any, Any], watch_id: WatchId) -> FeedOut:
    store = _store(request)
    token = store.watches.new_feed_token(watch_id, *_caller(request))
    return FeedOut(_feed_url(request, watch_id, token))


@delete(
    "/watches/{watch_id:str}/feed",
    sync_to_thread=True,
    status_code=HTTP_204_NO_CONTENT,
    responses=problems(400, 404),
    summary="Revoke the watch's Atom feed address",
)
def revoke_feed(request: Request[Any, Any, Any], watch_id: WatchId) -> None:
    store = _store(request)
    store.watches.revoke_feed(watch_id, *_caller(request))


@get(
    "/watches/{watch_id:str}/feed.xml",
    name="watch_feed",
    sync_to_thread=True,
    opt={"limited": True},  # no key (the token is the key), but the per-address limit of every route
    media_type="application/atom+xml",
    responses=problems(400, 404),
    summary="The watch's alerts as an Atom feed (the secret token in the address is the key)",
)
def watch_feed(
    request: Request[Any, Any, Any],
    watch_id: FromPath[str],
    token: Annotated[str, Parameter(min_length=1, max_length=200, description="the feed's secret token")],
) -> Response[bytes]:
    store = _store(request)
    watch = store.watches.feed_watch(watch_id, token)
    alerts = store.alerts.alerts(watch.id, limit=_PAGE)
    self_url = _feed_url(request, watch.id, token)
    return Response(
        atom(watch, alerts, self_url),
        media_type="application/atom+xml; charset=utf-8",
        headers={"Cache-Control": "private, max-age=60"},
    )


"""What XML 1.0 cannot carry, escaped or not (lxml refuses it, and the feed would be a 500)."""


@get(
    "/watches/{watch_id:str}/events",
    media_type="text/event-stream",
    responses=problems(400, 404),
    summary="A watch's alerts as server-sent events, as they come",
    description=(
        "One `alert` event per alert (its `id` is the alert's sequence number; a client that reconnects "
        "with `Last-Event-ID` or `?after=` gets those it missed), oldest first; `: keepalive` comments "
        "while nothing happens."
    ),
)
async def watch_events(
    request: Request[Any, Any, Any],
    watch_id: WatchId,
    after: Annotated[int | None, Parameter(description="send alerts numbered above this")] = None,
) -> ServerSentEvent:
    service = service_of(request)
    store = service.watches
    owner, everyone = _caller(request)
    await anyio.to_thread.run_sync(lambda: store.watches.get(watch_id, owner, everyone))
    last = None if after is None else max(0, min(after, _LAST))
    if last is None:
        given = request.headers.get("last-event-id", "")
        last = min(int(given), _LAST) if given.isascii() and given.isdigit() else 0
    key: ApiKey | None = request.state.get("api_key")
    return ServerSentEvent(_events(startup_of(request), service, watch_id, last, key.name if key else None))


async def _events(
    startup: Startup, service: Service, watch_id: str, last: int, key: str | None
) -> AsyncIterator[ServerSentEventMessage]:
    """The watch's alerts after ``last``, oldest first, then each as it comes; the stream ends when the
    watch is removed or the key that opened it is revoked."""
    store, bell = service.watches, service.alerts.bell
    rung = bell.listen()
    heartbeat = startup.heartbeat_seconds
    quiet = 0.0
    try:
        while not startup.draining.is_set():  # a stopping worker ends its streams; clients resume elsewhere
            rung.clear()
            fresh = await anyio.to_thread.run_sync(_newer, store, watch_id, last)
            for alert in fresh:
                yield ServerSentEventMessage(event="alert", id=str(alert.seq), data=json.dumps(alert.body))
                last = alert.seq
            if fresh:
                quiet = 0.0
                continue
            # Woken by this process's alerts when it matches them; where another worker does, the
            # store is looked at every FOLLOW_SECONDS.
            wait = heartbeat if service.writing else FOLLOW_SECONDS
            wait = min(wait, heartbeat - quiet)
            try:
                await asyncio.wait_for(rung.wait(), timeout=wait)
            except TimeoutError:
                quiet += wait
                if quiet < heartbeat:
                    continue
                quiet = 0.0
                if not await anyio.to_thread.run_sync(_still_open, service, store, watch_id, key):
                    return
                yield ServerSentEventMessage(comment="keepalive", data=None)
    finally:
        bell.leave(rung)


def _still_open(service: Service, store: WatchTables, watch_id: str, key: str | None) -> bool:
    """Whether the watch is still there and the key that opened its stream still active."""
    try:
        store.watches.get(watch_id)
    except WatchNotFoundError:
        return False
    return key is None or any(k.name == key for k in service.door.keys.active())


def _newer(store: WatchTables, watch_id: str, last: int) -> list[Alert]:
    return store.alerts.alerts(watch_id, after_seq=last, limit=100, oldest_first=True)


ROUTES: list[ControllerRouterHandler] = [
    guarded(
        WATCH,
        add_watch,
        list_watches,
        get_watch,
        remove_watch,
        watch_alerts,
        renew_feed,
        revoke_feed,
        watch_events,
    ),
    watch_feed,
]
