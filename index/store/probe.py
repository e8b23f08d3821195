"""Everything one question will read, asked of a shard at once.

A retriever tells its reader what the question will search (``Probe``: the query vector and tokens, the
dense searches' windows, the lexical one's) before it searches. One machine's reader has nothing to
gain and ignores it; a cluster's reader sends it to every shard in one round, and each shard answers
with everything the question will then read (``ShardAnswer``): its dense hits, its lexical nominees (by
its own statistics), and for every candidate chunk its vector, its counts of the query's tokens and its
length (so the driver scores BM25 with the whole cluster's statistics), its passage and the vectors of
its sentences. The question's later reads are answered from that, without another round.

What travels is kept small, since moving it is most of a round's cost: the candidates' similarity to the
query rather than their vectors, and sentence vectors in the int8 form they are stored in (rows.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from index.embed import Vectors
from index.records import Article, Chunk
from index.store.protocols import Statistics
from index.store.window import Hits, Ids, Window

if TYPE_CHECKING:
    from index.store.local import LocalReader


@dataclass(frozen=True)
class Probe:
    """What one question will search."""

    vector: Vectors
    tokens: tuple[str, ...]
    dense: tuple[tuple[Window, int], ...]
    """(window, k) of each dense search."""
    lexical: tuple[Window, int] | None
    """(window, k) of the lexical search, if there is one."""


SentenceKey = tuple[str, int, int]
"""(article id, start, end) of a sentence."""


@dataclass(frozen=True)
class ShardAnswer:
    """One shard's answer to a probe, in its own chunk ids."""

    statistics: Statistics
    dense: list[Hits]
    lexical: Hits
    """Its best lexical candidates by its own statistics (the driver rescores them)."""
    ids: Ids
    """Every candidate chunk, ascending."""
    similarities: npt.NDArray[np.float32]
    """Each candidate's inner product with the query vector."""
    tf: npt.NDArray[np.float32]
    lengths: npt.NDArray[np.float32]
    passages: list[tuple[Chunk, Article]]
    sentences: dict[SentenceKey, bytes]
    """The stored vectors of the sentences inside the candidates' passages, quantized as stored
    (``rows.dequantize`` reads them)."""


def answer_probe(reader: LocalReader, probe: Probe) -> ShardAnswer:
    """What ``probe`` reads from this shard (run on the shard, with windows in its own chunk ids)."""
    dense = [reader.dense(probe.vector, k, window) for window, k in probe.dense]
    lexical = reader.lexical(probe.tokens).top(probe.lexical[1], probe.lexical[0]) if probe.lexical else []
    ids = np.array(sorted({i for hits in [*dense, lexical] for i, _ in hits}), dtype=np.int64)
    tf, lengths = reader.lexical_reader.term_frequencies(ids, probe.tokens)
    passages = reader.passages(ids.tolist())
    sentences = reader.sentence_blobs([(c.article_id, c.span.start, c.span.end) for c, _ in passages])
    return ShardAnswer(
        statistics=reader.statistics(probe.tokens),
        dense=dense,
        lexical=lexical,
        ids=ids,
        similarities=reader.similarities(probe.vector, ids),
        tf=tf,
        lengths=lengths,
        passages=passages,
        sentences=sentences,
    )
