"""`rag watch add | list | remove | check`: standing questions on the command line (api/store/watches.py).
`check` matches what was committed since the last check (by `rag ingest`, say, while no server runs),
stores the alerts and tries their webhooks once; `rag serve` does the same by itself after every commit."""

from __future__ import annotations

import argparse
import json
import time
from datetime import date

from api.config import Settings
from api.store.standing import WatchTables
from api.store.watches import DEFAULT_MIN_CONFIDENCE


def add_watch_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    watch = commands.add_parser("watch", help="standing questions: be told when the news answers them")
    actions = watch.add_subparsers(required=True, metavar="ACTION")
    add = actions.add_parser("add", help="watch a question; prints its id, feed address and webhook secret")
    add.add_argument("question")
    add.add_argument("--source", action="append", default=[], help="only this outlet (repeatable)")
    add.add_argument("--webhook", help="POST each alert here, signed (Standard Webhooks)")
    add.add_argument(
        "--min-confidence",
        type=float,
        default=DEFAULT_MIN_CONFIDENCE,
        help=f"the reader's probability at which it fires (default {DEFAULT_MIN_CONFIDENCE})",
    )
    add.add_argument("--owner", help="the API key it belongs to (default: none; admin keys see it)")
    add.set_defaults(run=_add)
    listing = actions.add_parser("list", help="every watch, with its alerts so far")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_list)
    remove = actions.add_parser("remove", help="stop watching (its alerts go with it)")
    remove.add_argument("watch", metavar="ID")
    remove.set_defaults(run=_remove)
    check = actions.add_parser(
        "check", help="match what was committed since the last check; print the alerts"
    )
    check.add_argument("--as-of", type=date.fromisoformat, help="ask the questions as on this day")
    check.add_argument(
        "--from-now",
        action="store_true",
        help="match nothing: news begins after what the index holds now (after rebuilding it from nothing)",
    )
    check.set_defaults(run=_check)


def _add(settings: Settings, args: argparse.Namespace) -> int:
    from api.errors import WebhookRefusedError
    from api.work.outbound import feed_fetcher as fetcher
    from index.fetch import FetchError

    if args.webhook:
        door = fetcher(settings)
        try:
            door.check_address(args.webhook)
        except FetchError as exc:
            raise WebhookRefusedError(f"the webhook cannot be used: {exc}") from None
        finally:
            door.close()
    store = WatchTables.open(settings.service.state_path)
    try:
        made = store.watches.add(
            " ".join(args.question.split()), args.owner, args.source, args.webhook, args.min_confidence
        )
    finally:
        store.close()
    print(made.watch.id)
    print(f"feed: /watches/{made.watch.id}/feed.xml?token={made.feed_token}")
    if made.webhook_secret:
        print(f"webhook secret (shown once): {made.webhook_secret}")
    return 0


def _list(settings: Settings, args: argparse.Namespace) -> int:
    store = WatchTables.open(settings.service.state_path)
    try:
        watches = store.watches.watches(everyone=True)
    finally:
        store.close()
    if args.json:
        print(json.dumps([w.as_json() for w in watches], indent=2, ensure_ascii=False))
        return 0
    for w in watches:
        failing = f"  FAILING: {w.failing}" if w.failing else ""
        print(f"{w.id}  {w.alerts} alert(s)  owner={w.owner or '-'}  {w.question}{failing}")
    return 0


def _remove(settings: Settings, args: argparse.Namespace) -> int:
    store = WatchTables.open(settings.service.state_path)
    try:
        store.watches.remove(args.watch)
    finally:
        store.close()
    return 0


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from api.service import build_answerer
    from api.web.schemas import render_answer
    from api.work.matching import WatchMatcher
    from api.work.outbound import webhook_poster
    from api.work.webhooks import deliver_due

    answerer = build_answerer(settings)
    store = WatchTables.open(settings.service.state_path)
    hooks = webhook_poster(settings)
    try:
        if args.from_now:
            ids = answerer.index.reader().chunk_ids()
            store.alerts.restart(int(ids.max()) if ids.size else 0)
            print("news begins now for every watch")
            return 0
        matcher = WatchMatcher(store, answerer, render_answer, settings.service.watch_near)
        alerts = matcher.check(as_of=args.as_of)
        for alert in alerts:
            short = (alert.body.get("short_answer") or {}).get("text")
            print(f"{alert.watch_id} #{alert.seq}: {short or '-'}\n  {alert.body['answer']}")
        service = settings.service
        delivered = deliver_due(
            store, hooks, service.webhook_retry_seconds, service.webhook_tries, time.time()
        )
        print(f"{len(alerts)} new alert(s); {delivered} webhook(s) delivered")
    finally:
        hooks.close()
        store.close()
        answerer.index.close()
    return 0
