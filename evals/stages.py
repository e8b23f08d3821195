"""Retrieval stages, from the plain dense search of the first version to the full news retriever.

Each stage is the production code with fewer parts switched on (``RetrievalConfig``, a ranker), so the
ablation measures what each part adds. ``full`` is what the API serves.
"""

from __future__ import annotations

from collections.abc import Callable

from rag import Answerer
from rag.rank import FusionRanker, LinearRanker
from rag.retrieve import DenseRetriever, NewsRetriever, RetrievalConfig, Retriever

FULL = RetrievalConfig()
STAGES: dict[str, Callable[[Answerer], Retriever]] = {
    "dense": lambda a: DenseRetriever(),
    "hybrid": lambda a: NewsRetriever(FusionRanker(), RetrievalConfig(time=False, collapse_stories=False)),
    "full": lambda a: NewsRetriever(LinearRanker.load(), FULL),
}
"""Stages that need no training: `rag eval --stage NAME`."""


def with_retriever(answerer: Answerer, retriever: Retriever) -> Answerer:
    """The same index, model and composer, answering through ``retriever``."""
    return Answerer(
        answerer.index,
        answerer.embedder,
        answerer.settings,
        retriever=retriever,
        composer=answerer.composer if answerer.composer is not answerer.quotes else None,
        abstain_below=answerer.abstain_below,
        abstainer=answerer.abstainer,
    )


def staged(answerer: Answerer, stage: str) -> Answerer:
    return with_retriever(answerer, STAGES[stage](answerer))
