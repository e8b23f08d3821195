"""Token-bounded chunks of whole sentences, with overlap, each knowing its article and character span."""

from __future__ import annotations

from dataclasses import dataclass

import tiktoken

from index.records import Article, Span
from index.sentences import split_sentences

_SLUG_NOISE = frozenset(
    ["index", "html", "htm", "cnn", "intl", "spt", "vpx", "nr", "sot", "ovn", "contd", "hnk", "gbr", "trnd"]
)


def url_topic(url: str | None) -> str:
    """Words of the most descriptive path segment of a URL (``/2022/06/15/business/ford-recall/index.html``
    gives "ford recall"): many news records carry no title, but their address names the story."""
    if not url:
        return ""
    path = url.split("://", 1)[-1].split("?", 1)[0].split("#", 1)[0]
    segments = [
        s.rsplit(".", 1)[0] if s.endswith((".html", ".htm", ".cnn")) else s for s in path.split("/")[1:]
    ]
    best = max(segments, key=lambda s: s.count("-"), default="")
    words = [w for w in best.replace("_", "-").split("-") if w and w.lower() not in _SLUG_NOISE]
    return " ".join(words) if len(words) >= 2 else ""


def passage_text(title: str, chunk_text: str, url: str | None = None) -> str:
    """What is indexed for a chunk: the headline (or, without one, the words of the URL) gives the chunk
    its topic when the text alone does not."""
    topic = title or url_topic(url)
    return f"{topic}\n{chunk_text}" if topic else chunk_text


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before the store gives it an id."""

    ordinal: int
    span: Span
    text: str
    n_tokens: int


class Chunker:
    """Packs sentences into chunks of at most ``max_tokens`` cl100k tokens.

    A chunk ends at a sentence boundary; the next chunk starts with the trailing sentences of the previous
    one, up to ``overlap_tokens``. A sentence longer than ``max_tokens`` is cut at word boundaries.
    """

    def __init__(self, encoding: tiktoken.Encoding, max_tokens: int, overlap_tokens: int) -> None:
        if not 0 <= overlap_tokens < max_tokens:
            raise ValueError("overlap_tokens must be at least 0 and below max_tokens")
        self._encoding = encoding
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))

    def chunk(self, article: Article) -> list[ChunkDraft]:
        text = article.body
        pieces = [(span, self.count(text[span.start : span.end])) for span in self._pieces(text)]
        drafts: list[ChunkDraft] = []
        start = 0
        while start < len(pieces):
            end, total = start, 0
            # +1 per piece for the space that joins it to its neighbour.
            while end < len(pieces) and (end == start or total + pieces[end][1] + 1 <= self.max_tokens):
                total += pieces[end][1] + 1
                end += 1
            span = Span(pieces[start][0].start, pieces[end - 1][0].end)
            chunk_text = text[span.start : span.end]
            drafts.append(ChunkDraft(len(drafts), span, chunk_text, self.count(chunk_text)))
            if end == len(pieces):
                break
            back, overlap = end, 0
            while back - 1 > start and overlap + pieces[back - 1][1] <= self.overlap_tokens:
                back -= 1
                overlap += pieces[back][1]
            start = back
        return drafts

    def _pieces(self, text: str) -> list[Span]:
        """Sentence spans, with any sentence over the budget cut into word-bounded parts."""
        pieces: list[Span] = []
        for span in split_sentences(text):
            if self.count(text[span.start : span.end]) <= self.max_tokens - 2:
                pieces.append(span)
                continue
            part_start = span.start
            budget = 0
            position = span.start
            for word in text[span.start : span.end].split(" "):
                cost = self.count(" " + word)
                if budget and budget + cost > self.max_tokens - 2:
                    pieces.append(Span(part_start, position - 1))
                    part_start, budget = position, 0
                budget += cost
                position += len(word) + 1
            pieces.append(Span(part_start, span.end))
        return pieces
