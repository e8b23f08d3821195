"""Options and settings several `rag` commands share."""

from __future__ import annotations

import argparse
import dataclasses

from api.config import Settings
from index.config import DEFAULT_SHARDS, ClusterSettings


def model_options(parser: argparse.ArgumentParser) -> None:
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


def with_model(settings: Settings, args: argparse.Namespace) -> Settings:
    answers = dataclasses.replace(
        settings.answers,
        llm_base_url=args.llm_base_url or settings.answers.llm_base_url,
        llm_model=args.llm_model or settings.answers.llm_model,
        llm_api_key=args.llm_api_key or settings.answers.llm_api_key,
    )
    return dataclasses.replace(settings, answers=answers)


def with_cluster(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings with the index on the Ray cluster `--cluster` names (when it names one). Only `rag
    ingest` has cluster options beyond the address (``--shards``, ``--replicas``, ``--embed-workers``);
    each has a name of its own, so `rag serve --workers` (server processes) never reaches them."""
    if not getattr(args, "cluster", None):
        return settings
    cluster = ClusterSettings(
        address=args.cluster,
        base_dir=getattr(args, "cluster_dir", None) or str(settings.service.data_dir / "cluster"),
        shards=getattr(args, "shards", DEFAULT_SHARDS),
        replicas=getattr(args, "replicas", 1),
        workers=getattr(args, "embed_workers", 1),
    )
    return dataclasses.replace(settings, index=dataclasses.replace(settings.index, cluster=cluster))
