"""The composition root: the service's parts built from typed settings, in one place. The index backend
is chosen by ``index.open_index`` (this machine, or a Ray cluster when ``settings.index.cluster`` is set);
everything else takes what is built here."""

from __future__ import annotations

from api.config import Settings
from api.store.keys import KeyRing
from api.store.layout import migrate
from index import Embedder, Ingestor, make_ingestor, open_index, packaged_embedder
from index.embed import BatchingEmbedder
from index.tokens import encoding
from rag import Answerer
from rag.answer import make_composer, make_condenser


def prepare_data_folder(settings: Settings) -> None:
    """Move a data folder of the first layout (index files and keys together) to the current one."""
    if settings.index.cluster is None:
        migrate(settings.service.data_dir, settings.service.state_path)


def open_keys(settings: Settings) -> KeyRing:
    """The service's API keys (``service.sqlite``)."""
    prepare_data_folder(settings)
    return KeyRing(settings.service.state_path)


def build_answerer(
    settings: Settings, embedder: Embedder | None = None, batching: bool = False, threads: int = 1
) -> Answerer:
    """An Answerer over the index the settings name; its answers are generated (and checked) when a
    language model is configured (which then also rewrites follow-ups), quoted otherwise.
    ``batching``: concurrent questions share model calls (the server); ``threads``: the model's
    threads (`rag serve --threads`)."""
    prepare_data_folder(settings)
    model: Embedder = embedder or packaged_embedder(settings.index, threads)
    if batching:
        model = BatchingEmbedder(model)
    store = open_index(settings.index, model)
    tokens = encoding(settings.index.tiktoken_cache_dir)
    composer = make_composer(settings.answers, model, tokens)
    condenser = make_condenser(settings.answers)
    return Answerer(store, model, settings.answers, composer=composer, condenser=condenser)


def build_ingestor(settings: Settings, answerer: Answerer) -> Ingestor:
    """The ingest path over the Answerer's own index and model."""
    return make_ingestor(settings.index, answerer.index, answerer.embedder)
