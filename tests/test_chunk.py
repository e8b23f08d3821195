"""Chunks fit the model's window, end at sentence boundaries, overlap, and point back into the article."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from index import Chunker
from index.records import Article
from index.sentences import split_sentences
from index.tokens import encoding

LONG_BODY = " ".join(
    f"Sentence number {i} reports that the committee met again on day {i} to discuss the budget."
    for i in range(80)
)


@pytest.fixture
def chunker(tiktoken_dir: Path) -> Chunker:
    return Chunker(encoding(tiktoken_dir), max_tokens=120, overlap_tokens=30)


def test_chunks_respect_the_token_budget_and_sentence_boundaries(chunker: Chunker) -> None:
    article = Article(id="a", title="T", body=LONG_BODY)
    drafts = chunker.chunk(article)
    assert len(drafts) > 5
    boundaries = {s.start for s in split_sentences(LONG_BODY)}
    ends = {s.end for s in split_sentences(LONG_BODY)}
    for draft in drafts:
        assert draft.n_tokens <= 120
        assert draft.text == LONG_BODY[draft.span.start : draft.span.end]
        assert draft.span.start in boundaries
        assert draft.span.end in ends
    assert drafts[0].span.start == 0
    assert drafts[-1].span.end == len(LONG_BODY)


def test_consecutive_chunks_overlap_and_cover_everything(chunker: Chunker) -> None:
    drafts = chunker.chunk(Article(id="a", title="T", body=LONG_BODY))
    for before, after in itertools.pairwise(drafts):
        assert after.span.start < before.span.end  # overlap
        assert after.span.start > before.span.start  # progress


def test_an_over_long_sentence_is_cut_at_words(chunker: Chunker) -> None:
    body = " ".join(["word"] * 500) + "."
    drafts = chunker.chunk(Article(id="a", title="T", body=body))
    assert len(drafts) >= 4
    assert all(d.n_tokens <= 120 for d in drafts)
    assert all(not d.text.startswith(" ") and not d.text.endswith(" ") for d in drafts)


def test_default_chunks_fit_the_models_256_word_piece_window(tiktoken_dir: Path) -> None:
    from tokenizers import Tokenizer

    from index.chunk import passage_text
    from index.config import DEFAULT_CHUNK_OVERLAP_TOKENS, DEFAULT_CHUNK_TOKENS
    from index.onnx import max_seq_length, model_folder

    tokenizer = Tokenizer.from_file(str(model_folder() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    chunker = Chunker(encoding(tiktoken_dir), DEFAULT_CHUNK_TOKENS, DEFAULT_CHUNK_OVERLAP_TOKENS)
    body = LONG_BODY + " Zelenskyy's counteroffensive near Bakhmut, Kherson and Zaporizhzhia continued."
    article = Article(id="a", title="A headline of some length", body=body)
    for draft in chunker.chunk(article):
        pieces = tokenizer.encode(passage_text(article, draft.text)).ids
        assert len(pieces) <= max_seq_length(model_folder()) == 256
