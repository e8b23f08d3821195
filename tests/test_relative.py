"""Relative days in quotes, shown with the date they mean (rag/relative.py); an answer carrying them
is tested in tests/test_conversation.py."""

from __future__ import annotations

from datetime import date

import pytest

from rag.relative import annotate, plain

THURSDAY = date(2024, 4, 18)


@pytest.mark.parametrize(
    ("weekday", "meant"),
    [
        ("Monday", "15 April 2024"),
        ("Tuesday", "16 April 2024"),
        ("Wednesday", "17 April 2024"),
        ("Thursday", "18 April 2024"),  # the day it was published
        ("Friday", "12 April 2024"),
        ("Saturday", "13 April 2024"),
        ("Sunday", "14 April 2024"),
    ],
)
def test_a_weekday_is_the_latest_such_day_on_or_before_publication(weekday: str, meant: str) -> None:
    assert annotate(f"The council met on {weekday}.", THURSDAY) == f"The council met on {weekday} [{meant}]."


@pytest.mark.parametrize(
    ("sentence", "published", "shown"),
    [
        (
            "Officials said yesterday it was done.",
            THURSDAY,
            "Officials said yesterday [17 April 2024] it was done.",
        ),
        ("It happened last week.", THURSDAY, "It happened last week [8–14 April 2024]."),
        ("Talks will resume on Monday.", THURSDAY, "Talks will resume on Monday [22 April 2024]."),  # future
        ("It rained last Thursday.", THURSDAY, "It rained last Thursday [11 April 2024]."),
        ("The vote is next Tuesday.", THURSDAY, "The vote is next Tuesday [23 April 2024]."),
        ("Sales fell last month.", THURSDAY, "Sales fell last month [March 2024]."),
        # across a month and a year boundary
        ("He resigned yesterday.", date(2024, 3, 1), "He resigned yesterday [29 February 2024]."),
        ("They met on Friday.", date(2024, 5, 1), "They met on Friday [26 April 2024]."),
        (
            "It opened last week.",
            date(2025, 1, 8),
            "It opened last week [30 December 2024 – 5 January 2025].",
        ),
        ("Prices rose last month.", date(2024, 1, 15), "Prices rose last month [December 2023]."),
        ("It closed on Monday.", date(2024, 1, 1), "It closed on Monday [1 January 2024]."),
        ("It was cold on Sunday.", date(2024, 1, 2), "It was cold on Sunday [31 December 2023]."),
        # left alone: years (a bracketed year reads as a citation mark), named days, an undated article
        ("Sales rose last year.", THURSDAY, "Sales rose last year."),
        ("Black Friday sales rose.", THURSDAY, "Black Friday sales rose."),
        ("The council met on Wednesday.", None, "The council met on Wednesday."),
    ],
)
def test_relative_days_are_read_against_the_publication_date(
    sentence: str, published: date | None, shown: str
) -> None:
    assert annotate(sentence, published) == shown
    assert plain(shown) == sentence
    assert annotate(shown, published) == shown  # once only
