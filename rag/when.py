"""Time in questions: what period a question is about, read relative to the day it is asked (``as_of``).

Understood: "today", "yesterday", "this week", "last week", "this month", "last month", "this year",
"last year", "in 2023", "in March 2023", weekday names ("on Monday": the latest such day), explicit
dates ("June 5, 2023", "2023-06-05", "5 June 2023"), and recency words ("latest", "recent", "recently",
"new", "just", "current").
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}
_MONTH = "|".join(sorted((m for m in _MONTHS if len(m) > 2), key=len, reverse=True))
_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_MDY = re.compile(rf"\b({_MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.I)
_DMY = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({_MONTH})\.?,?\s+(\d{{4}})\b", re.I)
_MONTH_YEAR = re.compile(rf"\b(?:in\s+)?({_MONTH})\.?\s+(\d{{4}})\b", re.I)
_YEAR = re.compile(r"\b(?:in|during|of|since)\s+((?:19|20)\d{2})\b", re.I)
_WEEKDAY = re.compile(r"\bon\s+(monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b", re.I)
_RECENT = re.compile(r"\b(latest|recent|recently|new|newly|just|current|currently|now|ongoing)\b", re.I)


@dataclass(frozen=True)
class Period:
    """What a question says about time: a window of publication dates, and whether it asks for the latest."""

    start: date | None = None
    end: date | None = None
    recent: bool = False

    @property
    def explicit(self) -> bool:
        return self.start is not None or self.end is not None


def shift(day: date, days: int) -> date:
    """``day`` moved by ``days``, held inside the calendar (0001-01-01 to 9999-12-31) at its ends."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min


def read_period(question: str, as_of: date) -> Period:
    """The period ``question`` refers to, asked on ``as_of``. News about a day is published that day or
    up to a few days later, so windows end a little after the period itself (never after ``as_of``).
    A date the calendar cannot hold ("in March 0000") names no period."""
    text = question.lower()
    recent = bool(_RECENT.search(question))
    window = _window(text, question, as_of)
    if window is None:
        return Period(recent=recent)
    return Period(start=window[0], end=min(window[1], as_of), recent=recent)


def _window(text: str, question: str, as_of: date) -> tuple[date, date] | None:
    slack = 3
    if "yesterday" in text:
        day = shift(as_of, -1)
        return day, shift(day, slack)
    if "today" in text or "tonight" in text:
        return shift(as_of, -1), as_of
    if "last week" in text or "past week" in text:
        return shift(as_of, -14), as_of
    if "this week" in text:
        return shift(as_of, -7), as_of
    if "last month" in text or "past month" in text:
        first = as_of.replace(day=1)
        previous = shift(first, -1).replace(day=1)
        return previous, shift(first, slack)
    if "this month" in text:
        return shift(as_of.replace(day=1), -slack), as_of
    if "last year" in text or "past year" in text:
        return _year(as_of.year - 1, slack)
    if "this year" in text:
        return date(as_of.year, 1, 1), as_of
    for pattern, order in ((_ISO, "ymd"), (_MDY, "mdy"), (_DMY, "dmy")):
        match = pattern.search(question)
        if match:
            named = _date(match.groups(), order)
            if named:
                return shift(named, -1), shift(named, slack)
    match = _MONTH_YEAR.search(question)
    if match:
        month, year = _MONTHS[match.group(1).lower()[:3]], int(match.group(2))
        if date.min.year <= year <= date.max.year:
            last = calendar.monthrange(year, month)[1]
            return date(year, month, 1), shift(date(year, month, last), slack)
    match = _YEAR.search(question)
    if match:
        return _year(int(match.group(1)), slack)
    match = _WEEKDAY.search(question)
    if match:
        back = (as_of.weekday() - _WEEKDAYS[match.group(1).lower()]) % 7
        day = shift(as_of, -back)
        return day, shift(day, slack)
    return None


def _year(year: int, slack: int) -> tuple[date, date] | None:
    if not date.min.year <= year <= date.max.year:
        return None
    return date(year, 1, 1), shift(date(year, 12, 31), slack)


def _date(parts: tuple[str | None, ...], order: str) -> date | None:
    values = dict(zip(order, parts, strict=True))
    try:
        month = values["m"] or ""
        month_number = int(month) if month.isdigit() else _MONTHS[month.lower()[:3]]
        return date(int(values["y"] or 0), month_number, int(values["d"] or 0))
    except (ValueError, KeyError):
        return None
