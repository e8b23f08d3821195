"""Feeds inside `rag serve`: one background worker that polls what is due (never inside a request), and
the admin routes that manage feeds (``GET /feeds``, ``POST /feeds``, ``DELETE /feeds/{id}``,
``POST /feeds/{id}/poll``)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from api.store.feeds import Feed
from api.web.context import service_of
from api.web.doors import ADMIN, guarded
from api.web.problems import problems
from api.work.feeds import FeedWorker
from api.work.poll import detect, every_seconds
from index.urls import MAX_URL_CHARS


class FeedIn(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL_CHARS)]
    """An RSS or Atom feed, a news sitemap, a sitemap or a sitemap index (http or https)."""
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    """The outlet's name; default: the feed's title."""
    every: Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]{0,6}[smhd]?$")] = "15m"
    """How often to poll it: 90s, 15m, 2h, 1d."""


class FeedOut(msgspec.Struct):
    id: int
    url: str
    name: str
    kind: str
    every_seconds: int
    last_poll: str | None
    last_status: str | None
    last_error: str | None
    failures: int
    paused: bool
    next_poll: str | None
    articles_added: int


def feed_out(feed: Feed) -> FeedOut:
    return msgspec.convert(feed.as_json(), FeedOut)


def _worker(request: Request[Any, Any, Any]) -> FeedWorker:
    return service_of(request).feeds


@get(
    "/feeds",
    sync_to_thread=True,
    responses=problems(400),
    summary="The feeds followed, with their last poll",
)
def list_feeds(request: Request[Any, Any, Any]) -> list[FeedOut]:
    return [feed_out(f) for f in _worker(request).poller.registry.feeds()]


@post(
    "/feeds",
    sync_to_thread=True,
    status_code=201,
    responses=problems(400, 413, 415, 422),
    summary="Follow a feed or sitemap (read once now to know its kind; refused with the reason)",
)
def add_feed(request: Request[Any, Any, Any], data: JSONBody[FeedIn]) -> FeedOut:
    worker = _worker(request)
    interval = every_seconds(data.every)
    parsed = detect(worker.poller.fetcher, data.url)
    name = data.name or parsed.title or urlsplit(data.url).netloc
    feed = worker.poller.registry.add(data.url, name, parsed.kind, interval)
    worker.ask(feed)
    return feed_out(feed)


@delete(
    "/feeds/{feed_id:int}",
    sync_to_thread=True,
    status_code=HTTP_204_NO_CONTENT,
    responses=problems(400, 404),
    summary="Stop following a feed (its articles stay)",
)
def remove_feed(request: Request[Any, Any, Any], feed_id: FromPath[int]) -> None:
    _worker(request).poller.registry.remove(str(feed_id))


@post(
    "/feeds/{feed_id:int}/poll",
    sync_to_thread=True,
    status_code=202,
    opt={"body": False},
    responses=problems(400, 404),
    summary="Poll a feed soon, due or not (the background worker does it; GET /feeds shows the result)",
)
def poll_feed(request: Request[Any, Any, Any], feed_id: FromPath[int]) -> Response[FeedOut]:
    worker = _worker(request)
    feed = worker.poller.registry.get(str(feed_id))
    worker.ask(feed)
    return Response(feed_out(feed), status_code=202)


ROUTES = [guarded(ADMIN, list_feeds, add_feed, remove_feed, poll_feed)]
