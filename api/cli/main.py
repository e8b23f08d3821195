"""`rag`: the command line. ingest, delete, ask, serve, keys, model, feeds, watch (and eval, from evals/)."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import logging
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from api.cli.feeds import add_feeds_command
from api.cli.watches import add_watch_command
from api.config import DEFAULT_RATE_PER_ADDRESS, Settings
from api.logs import SafeFormatter
from api.state.keys import SCOPES
from index.config import DEFAULT_SHARDS, ClusterSettings
from index.errors import RagError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rag` console script; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    # The evaluation harness (matplotlib, scikit-learn) is loaded only for `rag eval`.
    parser = _parser(with_eval=arguments[:1] == ["eval"])
    args = parser.parse_args(arguments)
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


def _parser(with_eval: bool = False) -> argparse.ArgumentParser:
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
    _model_options(ask)
    ask.set_defaults(run=_ask)

    tools = commands.add_parser(
        "mcp",
        help="serve the MCP tools over stdio (for a desktop client that starts this command)",
        description="The MCP server (search_news, answer_question, get_article) over stdin and stdout. "
        "`rag serve` serves the same tools over Streamable HTTP at /mcp.",
    )
    _model_options(tools)
    tools.set_defaults(run=_mcp)

    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host while no API key exists (anyone who can reach it can write)",
    )
    serve.add_argument(
        "--rate-per-address",
        type=int,
        metavar="N",
        help=f"requests a minute per client address (default {DEFAULT_RATE_PER_ADDRESS}; 0: no limit)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="CPU threads one request's vector search and numpy may use (default 1: concurrent requests "
        "run side by side, one per core, instead of fighting over the same cores)",
    )
    serve.add_argument(
        "--model-threads",
        type=int,
        default=None,
        metavar="N",
        help="threads of the embedding model's calls (default: the machine's cores; one call runs at a "
        "time, with the questions waiting batched into it)",
    )
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        default=None,
        metavar="CIDR",
        help="a reverse proxy whose X-Forwarded-For is believed (repeatable; default: none)",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a Host name answered while no API key exists, beside 127.0.0.1, [::1] and localhost "
        "(repeatable; env RAG_ALLOWED_HOSTS)",
    )
    serve.add_argument("--cluster", metavar="ADDRESS", help="answer from the index on this Ray cluster")
    _model_options(serve)
    serve.set_defaults(run=_serve)

    _keys_command(commands)
    _model_command(commands)
    add_feeds_command(commands)
    add_watch_command(commands)
    if with_eval:
        from evals.cli import add_eval_command

        add_eval_command(commands)
    else:
        commands.add_parser("eval", help="score retrieval and answers on a dataset (`rag eval --help`)")
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
    revoke = key_commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("name")
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
    ingest.add_argument("--workers", type=int, default=1, help="embedding workers on the cluster")


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--llm-base-url",
        metavar="URL",
        help="an OpenAI-compatible API that writes the answers, each sentence checked "
        "(env RAG_LLM_BASE_URL); without one, answers are quoted sentences",
    )
    parser.add_argument("--llm-model", metavar="NAME", help="the model to ask for (env RAG_LLM_MODEL)")
    parser.add_argument(
        "--llm-api-key", metavar="KEY", help="its API key, if it needs one (env RAG_LLM_API_KEY)"
    )


def _with_model(settings: Settings, args: argparse.Namespace) -> Settings:
    answers = dataclasses.replace(
        settings.answers,
        llm_base_url=args.llm_base_url or settings.answers.llm_base_url,
        llm_model=args.llm_model or settings.answers.llm_model,
        llm_api_key=args.llm_api_key or settings.answers.llm_api_key,
    )
    return dataclasses.replace(settings, answers=answers)


def _with_cluster(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings with the index on the Ray cluster `--cluster` names (when it names one)."""
    if not getattr(args, "cluster", None):
        return settings
    cluster = ClusterSettings(
        address=args.cluster,
        base_dir=getattr(args, "cluster_dir", None) or str(settings.service.data_dir / "cluster"),
        shards=getattr(args, "shards", DEFAULT_SHARDS),
        replicas=getattr(args, "replicas", 1),
        workers=getattr(args, "workers", 1),
    )
    return dataclasses.replace(settings, index=dataclasses.replace(settings.index, cluster=cluster))


def _ingest(settings: Settings, args: argparse.Namespace) -> int:
    from api.root import prepare_data_folder
    from index import load_paths, make_ingestor, open_index, packaged_embedder
    from index.embed import core_count

    settings = _with_cluster(settings, args)
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
    from api.root import prepare_data_folder
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

    from api.root import build_answerer
    from api.web.schemas import answer_out
    from rag import Filters

    answerer = build_answerer(_with_model(settings, args))
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
    from api.root import build_answerer
    from api.web.mcp_server import run_stdio

    answerer = build_answerer(_with_model(settings, args))  # before the first message: ready when asked
    answerer.index.watch()  # articles another process writes are found while this one runs
    run_stdio(answerer)
    return 0


def _keys_add(settings: Settings, args: argparse.Namespace) -> int:
    from api.root import open_keys

    keys = open_keys(settings)
    token = keys.add(args.name, args.scope, args.origin, args.per_minute, args.per_day)
    keys.close()
    print(token)
    print(f"rag keys: created {args.scope} key {args.name!r}; the key is shown only now", file=sys.stderr)
    return 0


def _keys_list(settings: Settings, args: argparse.Namespace) -> int:
    from api.root import open_keys

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
    from api.root import open_keys

    keys = open_keys(settings)
    keys.revoke(args.name)
    keys.close()
    print(f"revoked {args.name}")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api.root import build_answerer, open_keys
    from api.web.app import create_app
    from index.embed import core_count, set_threads
    from rag import Answerer

    set_threads(args.threads)
    settings = _with_cluster(_with_model(settings, args), args)
    service = settings.service
    if args.rate_per_address is not None:
        service = dataclasses.replace(service, rate_per_address=args.rate_per_address)
    if args.trusted_proxy is not None:
        service = dataclasses.replace(service, trusted_proxies=tuple(args.trusted_proxy))
    if args.allowed_host is not None:
        service = dataclasses.replace(service, allowed_hosts=tuple(args.allowed_host))
    settings = dataclasses.replace(settings, service=service)
    loopback = _is_loopback(args.host)
    if not loopback and not args.insecure:
        keys = open_keys(settings)
        active = keys.active()
        keys.close()
        if not active:
            print(
                f"rag serve: refusing to serve on {args.host} without API keys: anyone who can reach it "
                "could add and delete articles. Create keys with `rag keys add NAME --scope admin|ask`, "
                "serve on 127.0.0.1, or pass --insecure.",
                file=sys.stderr,
            )
            return 2
    server: uvicorn.Server | None = None

    def stop(reason: str) -> None:
        del reason  # reported below, once the server has shut down
        if server is not None:
            server.should_exit = True

    def opener(s: Settings) -> Answerer:  # concurrent questions share model calls
        return build_answerer(s, batching=True, threads=args.model_threads or core_count())

    app = create_app(settings, opener=opener, on_load_error=stop, open_without_keys=loopback or args.insecure)
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1 and rewrite the
    # client address the per-address limit counts; only --trusted-proxy decides that (api/state/limits.py).
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=False,
        log_config=None,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    server.run()
    app_service = app.state.service
    if app_service.error:
        print(f"rag serve: the index could not be loaded: {app_service.error}", file=sys.stderr)
        return 2
    return 0
