"""`rag feeds add | list | remove | poll`: the feeds the service follows (api/work/poll.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from urllib.parse import urlsplit

from api.config import Settings
from api.store.feeds import FeedRegistry, PollReport
from api.work.outbound import feed_fetcher as fetcher
from api.work.poll import Poller, detect, every_seconds


def add_feeds_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    feeds = commands.add_parser("feeds", help="follow RSS and Atom feeds and sitemaps")
    actions = feeds.add_subparsers(required=True, metavar="ACTION")
    add = actions.add_parser("add", help="follow a feed or sitemap; prints its id")
    add.add_argument("url")
    add.add_argument("--name", help="the outlet's name (default: the feed's title)")
    add.add_argument("--every", default="15m", help="how often to poll it: 90s, 15m, 2h, 1d (default 15m)")
    add.set_defaults(run=_add)
    listing = actions.add_parser("list", help="the feeds followed, with their last poll")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_list)
    remove = actions.add_parser("remove", help="stop following a feed (its articles stay)")
    remove.add_argument("feed", metavar="ID|URL")
    remove.set_defaults(run=_remove)
    poll = actions.add_parser("poll", help="poll the feeds that are due now, or the ones named")
    poll.add_argument("feeds", nargs="*", metavar="ID|URL")
    poll.set_defaults(run=_poll)


def _add(settings: Settings, args: argparse.Namespace) -> int:
    interval = every_seconds(args.every)
    door = fetcher(settings)
    try:
        parsed = detect(door, args.url)
    finally:
        door.close()
    registry = FeedRegistry(settings.service.state_path)
    feed = registry.add(
        args.url, args.name or parsed.title or urlsplit(args.url).netloc, parsed.kind, interval
    )
    registry.close()
    print(feed.id)
    print(f"rag feeds: following {feed.name!r} ({parsed.kind}, every {args.every})", file=sys.stderr)
    return 0


def _list(settings: Settings, args: argparse.Namespace) -> int:
    registry = FeedRegistry(settings.service.state_path)
    feeds = registry.feeds()
    registry.close()
    if args.json:
        print(json.dumps([f.as_json() for f in feeds], indent=2))
        return 0
    if not feeds:
        print("no feeds: `rag feeds add URL` follows one")
        return 0
    for f in feeds:
        state = "paused after failures" if f.paused else (f.last_status or "not polled yet")
        error = f" ({f.last_error})" if f.last_error else ""
        print(f"{f.id:>4}  {f.kind:<13} {f.name[:30]:<30} {state}{error}; {f.added} articles; {f.url}")
    return 0


def _remove(settings: Settings, args: argparse.Namespace) -> int:
    registry = FeedRegistry(settings.service.state_path)
    feed = registry.remove(args.feed)
    registry.close()
    print(f"removed feed {feed.id} ({feed.url}); its articles stay in the index")
    return 0


def _poll(settings: Settings, args: argparse.Namespace) -> int:
    from api.service import prepare_data_folder
    from index import make_ingestor, open_index, packaged_embedder
    from index.embed import core_count

    registry = FeedRegistry(settings.service.state_path)
    chosen = [registry.get(ref) for ref in args.feeds] if args.feeds else registry.due(time.time())
    if not chosen:
        print("no feed is due")
        registry.close()
        return 0
    prepare_data_folder(settings)
    embedder = packaged_embedder(settings.index, core_count())
    store = open_index(settings.index, embedder)
    door = fetcher(settings)
    poller = Poller(registry, door, make_ingestor(settings.index, store, embedder))
    failed = False
    try:
        for feed in chosen:
            report = poller.poll(feed)
            failed = failed or report.status == "failed"
            _print(report)
    finally:
        door.close()
        store.close()
        registry.close()
    return 1 if failed else 0


def _print(report: PollReport) -> None:
    feed = report.feed
    if report.status == "failed":
        print(f"feed {feed.id} ({feed.url}): failed: {report.error}", file=sys.stderr)
        return
    if report.status == "busy":
        print(f"feed {feed.id} ({feed.url}): another process is polling it; left to that one")
        return
    print(
        f"feed {feed.id} ({feed.url}): {report.status}; {len(report.added)} added, {len(report.replaced)} "
        f"replaced, {report.unchanged} unchanged, {len(report.skipped)} skipped; {report.requests} requests"
    )
    if report.error:
        print(f"  warning: {report.error}")
    for reason in report.skipped:
        print(f"  skipped {reason}")
