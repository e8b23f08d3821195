"""`rag`: the command line. ingest, delete, ask, serve, keys, model, feeds, watch; other packages add
commands of their own through the ``newsrag.commands`` entry points (evals/ adds `rag eval`), so the
service never imports them."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import date
from importlib.metadata import entry_points
from pathlib import Path

from api.cli.feeds import add_feeds_command
from api.cli.options import model_options, with_cluster, with_model
from api.cli.serve import add_serve_command
from api.cli.watches import add_watch_command
from api.config import Settings
from api.logs import SafeFormatter
from api.store.keys import SCOPES
from index.config import DEFAULT_SHARDS
from index.errors import RagError

PLUGIN_GROUP = "newsrag.commands"
"""Entry points that add a subcommand: each names a function taking the subparsers (pyproject.toml)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rag` console script; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    # A plug-in command (the evaluation harness, with matplotlib and scikit-learn) is loaded only when run.
    parser = _parser(plugin=arguments[0] if arguments else None)
    args = parser.parse_args(arguments)
    args.argv = arguments  # `rag serve --workers N` starts its workers with the same arguments
    settings = Settings.from_env()
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        status: int = args.run(settings, args)
    except RagError as exc:
        print(f"rag: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


def _parser(plugin: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Question answering over news, with citations.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    ingest = commands.add_parser("ingest", help="add or update articles from files and folders")
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    _cluster_options(ingest)
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
    model_options(ask)
    ask.set_defaults(run=_ask)

    tools = commands.add_parser(
        "mcp",
        help="serve the MCP tools over stdio (for a desktop client that starts this command)",
        description="The MCP server (search_news, answer_question, get_article) over stdin and stdout. "
        "`rag serve` serves the same tools over Streamable HTTP at /mcp.",
    )
    model_options(tools)
    tools.set_defaults(run=_mcp)

    add_serve_command(commands)
    _keys_command(commands)
    _model_command(commands)
    add_feeds_command(commands)
    add_watch_command(commands)
    for command in entry_points(group=PLUGIN_GROUP):
        if command.name == plugin:
            command.load()(commands)
        else:
            commands.add_parser(command.name, help=f"`rag {command.name} --help` (from {command.module})")
    return parser


def _keys_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    add = key_commands.add_parser("add", help="create a key and print it (only this once)")
    add.add_argument("name")
    add.add_argument("--scope", choices=SCOPES, required=True, help="ask: questions; admin: also writes")
    add.add_argument("--origin", action="append", default=[], help="a web page origin allowed (repeatable)")
    add.add_argument("--per-minute", type=int, metavar="N", help="requests a minute for this key")
    add.add_argument("--per-day", type=int, metavar="N", help="requests a day (UTC) for this key")
    add.set_defaults(run=_keys_add)
    listing = key_commands.add_parser("list", help="list keys (never their tokens)")
    listing.set_defaults(run=_keys_list)
    revoke = key_commands.add_parser("revoke", help="revoke a key at once, and stop its watches")
    revoke.add_argument("name")
    revoke.add_argument(
        "--keep-watches",
        action="store_true",
        help="its watches go on matching, delivering and serving their feeds (admin keys manage them)",
    )
    revoke.set_defaults(run=_keys_revoke)


def _model_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    model = commands.add_parser("model", help="the packaged model's ONNX export (made at install)")
    model_commands = model.add_subparsers(required=True, metavar="ACTION")
    export = model_commands.add_parser("export", help="make the export if it is missing or damaged")
    export.add_argument("--int8", action="store_true", help="also the int8 variant (RAG_EMBEDDER=onnx-int8)")
    export.add_argument("--force", action="store_true", help="make it again even when it checks out")
    export.set_defaults(run=_model_export)


def _cluster_options(ingest: argparse.ArgumentParser) -> None:
    ingest.add_argument("--cluster", metavar="ADDRESS", help="ingest into the index on this Ray cluster")
    ingest.add_argument(
        "--shards", type=int, default=DEFAULT_SHARDS, help="shards, when the cluster has no index yet"
    )
    ingest.add_argument("--replicas", type=int, default=1, help="copies of each shard, on different nodes")
    ingest.add_argument(
        "--cluster-dir",
        default=None,
        help="folder for the shards on each node (default: RAG_DATA_DIR/cluster)",
    )
    ingest.add_argument(
        "--embed-workers",
        "--workers",  # the first spelling; `rag serve --workers` means server processes
        dest="embed_workers",
        type=int,
        default=1,
        metavar="W",
        help="embedding workers on the cluster (Ray Data actors, one CPU each)",
    )


def _ingest(settings: Settings, args: argparse.Namespace) -> int:
    from api.service import prepare_data_folder
    from index import load_paths, make_ingestor, open_index, packaged_embedder
    from index.embed import core_count

    settings = with_cluster(settings, args)
    prepare_data_folder(settings)
    embedder = packaged_embedder(settings.index, core_count())
    store = open_index(settings.index, embedder)
    progress = False if args.quiet else None
    report = make_ingestor(settings.index, store, embedder).ingest(load_paths(args.paths), progress)
    for message in report.failed:
        print(f"rag ingest: skipped {message}", file=sys.stderr)
    print(
        f"{len(report.added)} added, {len(report.replaced)} replaced, {len(report.unchanged)} unchanged, "
        f"{len(report.failed)} failed; "
        f"the index holds {store.reader().article_count} articles in {store.reader().size} chunks"
    )
    return 1 if report.failed else 0


def _delete(settings: Settings, args: argparse.Namespace) -> int:
    from api.service import prepare_data_folder
    from index import open_index, packaged_embedder

    prepare_data_folder(settings)
    store = open_index(settings.index, packaged_embedder(settings.index))
    for article_id in args.ids:
        store.delete(article_id)
        print(f"deleted {article_id}")
    return 0


def _model_export(settings: Settings, args: argparse.Namespace) -> int:
    from index.onnx import ensure_export

    for variant in ("fp32", "int8") if args.int8 else ("fp32",):
        made = ensure_export(variant, settings.index.model_cache, force=args.force)
        print(f"{variant}: {made.path} (sha256 {made.sha256[:16]}..., checked)")
    return 0


def _ask(settings: Settings, args: argparse.Namespace) -> int:
    import msgspec

    from api.service import build_answerer
    from api.web.schemas import answer_out
    from rag import Filters

    answerer = build_answerer(with_model(settings, args))
    filters = Filters(tuple(args.source), args.after, args.before)
    answer = answerer.ask(
        answerer.question(args.question, as_of=args.as_of, top_k=args.top_k, filters=filters)
    )
    if args.json:
        print(json.dumps(msgspec.to_builtins(answer_out(answer)), indent=2, ensure_ascii=False))
        return 0
    print(answer.text)
    if answer.fallback:
        print(f"(quoted instead of generated: {answer.fallback})")
    for c in answer.citations:
        when = c.published_at.isoformat() if c.published_at else "undated"
        marked = " (headline only: no text to quote)" if c.headline_only else ""
        print(f"[{c.n}] {c.title} ({c.source or 'unknown outlet'}, {when}) {c.url or c.article_id}{marked}")
    return 0


def _mcp(settings: Settings, args: argparse.Namespace) -> int:
    from api.service import build_answerer
    from api.web.mcp_server import run_stdio

    answerer = build_answerer(with_model(settings, args))  # before the first message: ready when asked
    answerer.index.follow()  # articles another process writes are found while this one runs
    run_stdio(answerer)
    return 0


def _keys_add(settings: Settings, args: argparse.Namespace) -> int:
    from api.service import open_keys

    keys = open_keys(settings)
    token = keys.add(args.name, args.scope, args.origin, args.per_minute, args.per_day)
    keys.close()
    print(token)
    print(f"rag keys: created {args.scope} key {args.name!r}; the key is shown only now", file=sys.stderr)
    return 0


def _keys_list(settings: Settings, args: argparse.Namespace) -> int:
    from api.service import open_keys

    del args
    keys = open_keys(settings)
    rows = keys.keys()
    keys.close()
    if not rows:
        print("no keys: the service answers without one, on a loopback address only")
        return 0
    print(f"{'name':<20} {'scope':<6} {'prefix':<9} {'per min':>7} {'per day':>8}  {'state':<28} origins")
    for key in rows:
        state = f"revoked {key.revoked_at}" if key.revoked_at else f"active since {key.created_at[:10]}"
        print(
            f"{key.name:<20} {key.scope:<6} {key.prefix:<9} {key.per_minute or '-':>7} "
            f"{key.per_day or '-':>8}  {state:<28} {' '.join(key.origins) or '-'}"
        )
    return 0


def _keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from api.service import open_keys

    keys = open_keys(settings)
    keys.revoke(args.name, keep_watches=args.keep_watches)
    keys.close()
    kept = "its watches go on (--keep-watches)" if args.keep_watches else "its watches stop with it"
    print(f"revoked {args.name}; {kept}")
    return 0
