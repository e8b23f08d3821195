"""Token-bounded chunks of whole sentences, with overlap, each knowing its article and character span."""

from __future__ import annotations

from dataclasses import dataclass

import tiktoken

from index.records import Article, Span, url_topic
from index.sentences import split_sentences


def passage_text(article: Article, chunk_text: str) -> str:
    """What is indexed for a chunk: the headline (or, without one, the words of the URL) gives the chunk
    its topic when the text alone does not. A headline-only article's one chunk is its headline, the
    address's words, the outlet and the date."""
    if article.headline_only:
        return headline_text(article)
    topic = article.title or url_topic(article.url)
    return f"{topic}\n{chunk_text}" if topic else chunk_text


def headline_text(article: Article) -> str:
    """All a headline-only article is known by: "Headline\nurl words\noutlet, September 7, 2022"."""
    lines = [article.title] if article.title else []
    words = url_topic(article.url)
    if words and words.casefold() not in article.title.casefold():
        lines.append(words)
    when = f"{day:%B} {day.day}, {day.year}" if (day := article.published_at) else ""
    byline = ", ".join(part for part in (article.source or "", when) if part)
    if byline:
        lines.append(byline)
    return "\n".join(lines)


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
        """The article's chunks; a headline-only article has one, empty (its indexed text is its headline:
        ``passage_text``)."""
        text = article.body
        if article.headline_only:
            return [ChunkDraft(0, Span(0, 0), "", 0)]
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
