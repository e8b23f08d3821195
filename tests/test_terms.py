"""index.terms.tokenize gives exactly the tokens bm25s.tokenize gives (it replaces it on the query path)."""

from __future__ import annotations

import json

import bm25s

from index.terms import _STEMMER, tokenize
from tests.conftest import ROOT

DATASETS = ROOT / "evals" / "datasets"


def test_tokens_are_bm25s_tokens() -> None:
    corpus = (DATASETS / "realtimeqa-articles" / "corpus.jsonl").read_text().splitlines()
    questions = (DATASETS / "realtimeqa-briefs" / "questions.jsonl").read_text().splitlines()
    texts = [json.loads(line)["body"] for line in corpus] + [
        json.loads(line)["question"] for line in questions
    ]
    texts += ["", "a", "I", "The the THE", "İstanbul ÉCOLE naïve café’s x2 3d 1,000 U.S. e-mail", "日本語 ok"]
    expected = bm25s.tokenize(texts, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False)
    assert tokenize(texts) == expected
    assert tokenize(["Peacekeepers leaving Karabakh"]) == [["peacekeep", "leav", "karabakh"]]
