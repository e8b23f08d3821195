"""Dates: the forms an article's date may take and the ones refused, and dates at the edges of the
calendar in questions, ``as_of`` and filters."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from index.dates import read_date


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("2024-01-19", "2024-01-19"),
        ("2024-01-19T23:30:00-05:00", "2024-01-19"),
        ("2024/01/19", "2024-01-19"),
        ("January 19, 2024", "2024-01-19"),
        ("19 Jan 2024", "2024-01-19"),
        ("Fri, 19 Jan 2024 10:00:00 GMT", "2024-01-19"),
        ("sept 3rd 2023", "2023-09-03"),
    ],
)
def test_dates_in_the_accepted_forms(text: str, day: str) -> None:
    assert read_date(text).isoformat() == day


@pytest.mark.parametrize("text", ["10", "someday", "19/01/2024", "2024-01-19\n", "2023-02-30", "Friday"])
def test_other_dates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a date|no day"):
        read_date(text)


@pytest.mark.parametrize(
    "request_body",
    [
        {"question": "What happened on December 31, 9999?"},
        {"question": "What happened in March 0000?"},
        {"question": "What happened on 9999-12-31?"},
        {"question": "What happened last year?", "as_of": "0001-01-01"},
        {"question": "What happened yesterday?", "as_of": "0001-01-01"},
        {"question": "What happened yesterday?", "as_of": "9999-12-31"},
        {"question": "Who won the marathon last week?", "as_of": "9999-12-31"},
        {"question": "news", "filters": {"published_after": "0001-01-01", "published_before": "9999-12-31"}},
    ],
)
def test_dates_at_the_edges_of_the_calendar(
    client: TestClient[Litestar], request_body: dict[str, Any]
) -> None:
    response = client.post("/ask", json=request_body)
    assert response.status_code == 200, response.text


def test_search_with_the_earliest_as_of(client: TestClient[Litestar]) -> None:
    response = client.get("/search", params={"q": "harvest", "as_of": "0001-01-01"})
    assert response.status_code == 200
    assert all(p["published_at"] is None for p in response.json()["passages"])  # only undated articles
