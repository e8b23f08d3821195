"""`rag`: the command line. ingest, delete, ask, serve (and eval, from evals/)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from index.config import Settings
from index.errors import RagError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rag` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        status: int = args.run(settings, args)
    except RagError as exc:
        print(f"rag: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Question answering over news, with citations.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    ingest = commands.add_parser("ingest", help="add or update articles from files and folders")
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(run=_ingest)

    remove = commands.add_parser("delete", help="remove articles by id")
    remove.add_argument("ids", nargs="+", metavar="ID")
    remove.set_defaults(run=_delete)

    ask = commands.add_parser("ask", help="answer a question with cited sentences")
    ask.add_argument("question")
    ask.add_argument("--as-of", type=date.fromisoformat, help="answer as on this day (YYYY-MM-DD)")
    ask.add_argument("-k", "--top-k", type=int, default=None, help="passages to retrieve")
    ask.add_argument("--source", action="append", default=[], help="only this outlet (repeatable)")
    ask.add_argument("--after", type=date.fromisoformat, help="published on or after (YYYY-MM-DD)")
    ask.add_argument("--before", type=date.fromisoformat, help="published on or before (YYYY-MM-DD)")
    ask.add_argument("--json", action="store_true", help="print the API's JSON instead of text")
    ask.set_defaults(run=_ask)

    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=_serve)

    from evals.cli import add_eval_command

    add_eval_command(commands)
    return parser


def _ingest(settings: Settings, args: argparse.Namespace) -> int:
    from index import PackagedEmbedder, load_paths, make_ingestor, open_store

    embedder = PackagedEmbedder()
    store = open_store(settings, embedder)
    report = make_ingestor(settings, store, embedder).ingest(
        load_paths(args.paths), progress=False if args.quiet else None
    )
    for message in report.failed:
        print(f"rag ingest: skipped {message}", file=sys.stderr)
    print(
        f"{len(report.added)} added, {len(report.replaced)} replaced, {len(report.unchanged)} unchanged, "
        f"{len(report.failed)} failed; "
        f"the index holds {store.article_count()} articles in {store.size} chunks"
    )
    return 1 if report.failed else 0


def _delete(settings: Settings, args: argparse.Namespace) -> int:
    from index import PackagedEmbedder, open_store

    store = open_store(settings, PackagedEmbedder())
    for article_id in args.ids:
        store.delete(article_id)
        print(f"deleted {article_id}")
    return 0


def _ask(settings: Settings, args: argparse.Namespace) -> int:
    import msgspec

    from api.schemas import answer_out
    from rag import Filters, open_answerer

    answerer = open_answerer(settings)
    filters = Filters(tuple(args.source), args.after, args.before)
    answer = answerer.ask(
        answerer.question(args.question, as_of=args.as_of, top_k=args.top_k, filters=filters)
    )
    if args.json:
        print(json.dumps(msgspec.to_builtins(answer_out(answer)), indent=2, ensure_ascii=False))
        return 0
    print(answer.text)
    for c in answer.citations:
        when = c.published_at.isoformat() if c.published_at else "undated"
        print(f"[{c.n}] {c.title} ({c.source or 'unknown outlet'}, {when}) {c.url or c.article_id}")
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    server: uvicorn.Server | None = None

    def stop(reason: str) -> None:
        del reason  # reported below, once the server has shut down
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_error=stop)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info"))
    server.run()
    service = app.state.service
    if service.error:
        print(f"rag serve: the index could not be loaded: {service.error}", file=sys.stderr)
        return 2
    return 0
