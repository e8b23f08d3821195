"""Reading the period a question is about, relative to the day it is asked."""

from __future__ import annotations

from datetime import date

import pytest

from rag.when import Period, read_period

FRIDAY = date(2024, 5, 10)


@pytest.mark.parametrize(
    ("question", "start", "end"),
    [
        ("What happened this week?", date(2024, 5, 3), FRIDAY),
        ("Who won yesterday?", date(2024, 5, 9), FRIDAY),
        ("What did she say last week?", date(2024, 4, 26), FRIDAY),
        ("What did Congress pass this month?", date(2024, 4, 28), FRIDAY),
        ("Which prices rose in 2023?", date(2023, 1, 1), date(2024, 1, 3)),
        ("What happened in March 2023?", date(2023, 3, 1), date(2023, 4, 3)),
        ("What happened on June 5, 2023?", date(2023, 6, 4), date(2023, 6, 8)),
        ("What happened on 5 June 2023?", date(2023, 6, 4), date(2023, 6, 8)),
        ("What was decided on 2023-06-05?", date(2023, 6, 4), date(2023, 6, 8)),
        ("Who resigned on Monday?", date(2024, 5, 6), date(2024, 5, 9)),
    ],
)
def test_periods(question: str, start: date, end: date) -> None:
    period = read_period(question, FRIDAY)
    assert (period.start, period.end) == (start, end)
    assert period.explicit


def test_windows_never_end_after_the_day_asked() -> None:
    assert read_period("What happened yesterday?", date(2024, 5, 10)).end == date(2024, 5, 10)


def test_recency_words_without_a_period() -> None:
    assert read_period("What is the latest on the strike?", FRIDAY) == Period(recent=True)
    assert read_period("Who is the president of Azerbaijan?", FRIDAY) == Period()
