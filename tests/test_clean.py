"""Cleaning keeps every sentence of the article and drops the page furniture."""

from __future__ import annotations

from index.clean import clean_body, strip_html
from index.load import load_file
from index.records import Article
from tests.conftest import SEED_FILE

SEED_DROPPED = [
    "Putin-Aliyev meeting in Sochi. 2022",
    "Leave a review",
    "İran Prezidentinin həlak olduğu hadisə Azərbaycan- İran münasibətlərinə təsir edə bilərmi? – Nəsimi "
    "Məmmədli Çətin sualda",
    "Follow us on social networks",
    "News Line",
]


def _seed() -> Article:
    (article,) = load_file(SEED_FILE)
    assert isinstance(article, Article)
    return article


def test_seed_keeps_exactly_the_article_paragraphs() -> None:
    raw_lines = [line.strip() for line in SEED_FILE.read_text().splitlines() if line.strip()]
    article_lines = [line for line in raw_lines if line not in SEED_DROPPED]
    assert len(article_lines) == 6
    assert _seed().body.split("\n\n") == article_lines


def test_seed_drops_title_repeat_and_furniture() -> None:
    article = _seed()
    assert article.title == "Putin-Aliyev meeting in Sochi. 2022"
    for line in SEED_DROPPED:
        assert line not in article.body
    assert "Azərbaycan" not in article.body


def test_seed_keeps_the_withdrawal_sentence() -> None:
    assert "the early withdrawal of Russian peacekeepers from Karabakh" in _seed().body


def test_inline_html_becomes_text() -> None:
    body = 'The <a href="https://x.test/a">"funga" kingdom</a> &amp; flora.<br>Second line.'
    assert strip_html(body) == 'The "funga" kingdom & flora.\nSecond line.'
    assert clean_body(body) == 'The "funga" kingdom & flora.\n\nSecond line.'


def test_dateline_and_mid_article_furniture_are_dropped_but_headings_kept() -> None:
    body = "CNN —\n\nFirst sentence here.\n\nAdvertisement\n\nA subheading\n\nLast sentence here."
    assert clean_body(body) == "First sentence here.\n\nA subheading\n\nLast sentence here."


def test_a_single_unpunctuated_paragraph_is_kept() -> None:
    assert clean_body("Markets rallied on Friday") == "Markets rallied on Friday"
