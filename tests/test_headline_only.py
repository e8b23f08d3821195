"""Headline-only articles: a record whose body is only page furniture is kept by its headline and address,
found by them, pointed to as a source, and never quoted."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from index.chunk import Chunker, passage_text
from index.errors import ArticleError
from index.load import parse_record
from index.tokens import encoding

# What CNN's video pages hold once the ad-feedback widget is gone: nothing (RealTime QA has 14 of them).
AD_WIDGET = (
    "1. How relevant is this ad to you?\n\nVideo player was slow to load content Video content never loaded "
    "Ad froze or did not finish loading Video content did not start after ad Audio on ad was too loud "
    "Other issues"
)
SPRITE = {
    "id": "cnn-sprite",
    "url": "https://www.cnn.com/2022/07/27/business/sprite-green-bottle/index.html",
    "source": "www.cnn.com",
    "published_at": "2022-07-27",
    "body": AD_WIDGET,
}
SPRITE_BODY = {
    "id": "wire-sprite",
    "title": "Soft drink maker changes its bottles",
    "source": "Example Wire",
    "published_at": "2022-07-28",
    "body": "Coca-Cola said on Wednesday that Sprite will be sold in clear plastic bottles from August 1, "
    "replacing the green bottles it has used for decades, because clear plastic is easier to recycle.",
}


def test_a_record_with_only_page_furniture_is_kept_by_its_address() -> None:
    article = parse_record(SPRITE, "feed:1")
    assert article.headline_only
    assert article.body == ""
    assert article.headline == "Sprite green bottle"
    titled = parse_record({**SPRITE, "title": "Sprite drops its green bottle"}, "feed:2")
    assert titled.headline_only
    assert titled.headline == "Sprite drops its green bottle"
    with pytest.raises(ArticleError, match="no headline or address"):
        parse_record({"body": AD_WIDGET}, "feed:3")
    with pytest.raises(ArticleError, match="no headline or address"):
        parse_record({"body": AD_WIDGET, "url": "https://example.com/video/index.html"}, "feed:4")


def test_its_one_chunk_is_indexed_by_headline_address_outlet_and_date(tiktoken_dir: Path) -> None:
    article = parse_record({**SPRITE, "title": "Sprite drops its green bottle"}, "feed:1")
    drafts = Chunker(encoding(tiktoken_dir), 180, 40).chunk(article)
    assert [(d.text, d.span.start, d.span.end) for d in drafts] == [("", 0, 0)]
    assert passage_text(article, "") == (
        "Sprite drops its green bottle\nsprite green bottle\nwww.cnn.com, July 27, 2022"
    )
    assert article.published_at == date(2022, 7, 27)


def test_found_by_its_headline_marked_and_never_quoted(client: TestClient[Litestar]) -> None:
    posted = client.post("/articles", json=[SPRITE]).json()
    assert posted["added"] == ["cnn-sprite"]
    assert posted["failed"] == []
    stored = client.get("/articles/cnn-sprite").json()
    assert stored["headline_only"] is True
    assert stored["body"] == ""

    passages = client.get("/search", params={"q": "Sprite green bottle"}).json()["passages"]
    assert passages[0]["article_id"] == "cnn-sprite"
    assert passages[0]["headline_only"] is True
    assert passages[0]["text"] == ""
    assert all(p["headline_only"] is False for p in passages[1:])

    question = {"question": "What is happening to Sprite's green bottle?", "as_of": "2022-07-30"}
    alone = client.post("/ask", json=question).json()
    assert alone["passages"][0]["article_id"] == "cnn-sprite"
    pointed = [c for c in alone["citations"] if c["headline_only"]]
    assert [c["article_id"] for c in pointed] == ["cnn-sprite"]
    assert pointed[0]["quote"] == ""
    assert pointed[0]["title"] == "Sprite green bottle"
    assert pointed[0]["url"] == SPRITE["url"]
    assert all(c["quote"] for c in alone["citations"] if not c["headline_only"])

    client.post("/articles", json=[SPRITE_BODY])
    answer = client.post("/ask", json=question).json()
    assert answer["abstained"] is False
    quoted = [c for c in answer["citations"] if not c["headline_only"]]
    assert {c["article_id"] for c in quoted} == {"wire-sprite"}
    assert "clear plastic bottles" in answer["answer"]
    for sentence in answer["sentences"]:
        for n in sentence["cites"]:
            assert answer["citations"][n - 1]["headline_only"] is False
