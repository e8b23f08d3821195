"""Dates a reader can place: a relative day in a quoted sentence ("on Wednesday", "yesterday", "last
week") shown with the date it means, read against the article's publication date: "on Wednesday [17
April 2024]". The citation keeps the verbatim quote; only the answer's text and sentences carry the
bracket, and ``plain`` takes it off again (the eval harness checks quotes against the article with it).

Read as news writes them: a weekday alone or after "on" is the latest such day on or before
publication, or the next one after it when the sentence speaks of the future ("will", "is expected
to", "plans to", "scheduled"); "last Monday" the latest before publication; "next Monday" the first
after. "this/last/next week" are Monday-to-Sunday weeks, "this/last/next month" calendar months. Years
are left as written: "last year [2023]" would read as a citation mark. An undated article's sentences
are left alone. By hand: dateparser reads a phrase against a base date
but does not find the phrases in running text or keep them as written.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, timedelta

_WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}
_DAY = "|".join(calendar.day_name)
_PHRASE = re.compile(
    r"(?<!Black )(?<!Cyber )(?<!Good )(?<!Super )(?<!Holy )(?<!Ash )"
    rf"\b(?:(?P<which>on|last|next|this) )?(?P<weekday>{_DAY})\b(?! ?\[)"
    r"|\b(?P<word>yesterday|today|tomorrow)\b(?! ?\[)"
    r"|\b(?P<span>last|this|next) (?P<unit>week|month)\b(?! ?\[)",
    re.IGNORECASE,
)
_FUTURE = re.compile(
    r"\b(will|won't|shall|(is|are) (expected|set|due) to|plans? to|scheduled)\b", re.IGNORECASE
)
ANNOTATION = re.compile(r" \[[0-9A-Za-z –]*\d{4}\]")
"""What ``annotate`` adds (" [17 April 2024]", " [8–14 April 2024]", " [March 2024]"): never digits
alone, which are citation marks."""


def long_date(day: date) -> str:
    """``17 April 2024``."""
    return f"{day.day} {calendar.month_name[day.month]} {day.year}"


_day = long_date


def _range(first: date, last: date) -> str:
    if first.year != last.year:
        return f"{_day(first)} – {_day(last)}"
    if first.month != last.month:
        return f"{first.day} {calendar.month_name[first.month]} – {_day(last)}"
    return f"{first.day}–{_day(last)}"


def _month(day: date, step: int) -> str:
    index = day.year * 12 + day.month - 1 + step
    return f"{calendar.month_name[index % 12 + 1]} {index // 12}"


def _weekday(published: date, weekday: int, which: str, future: bool) -> date:
    back = (published.weekday() - weekday) % 7
    ahead = (weekday - published.weekday()) % 7 or 7
    if which == "last":
        return published - timedelta(days=back or 7)
    if which == "next" or (future and which in ("", "on", "this")):
        return published + timedelta(days=ahead)
    return published - timedelta(days=back)


def _meaning(match: re.Match[str], published: date, future: bool) -> str:
    if match.group("weekday"):
        weekday = _WEEKDAYS[match.group("weekday").lower()]
        which = (match.group("which") or "").lower()
        return _day(_weekday(published, weekday, which, future))
    if match.group("word"):
        shift = {"yesterday": -1, "today": 0, "tomorrow": 1}[match.group("word").lower()]
        return _day(published + timedelta(days=shift))
    step = {"last": -1, "this": 0, "next": 1}[match.group("span").lower()]
    unit = match.group("unit").lower()
    if unit == "week":
        monday = published - timedelta(days=published.weekday()) + timedelta(weeks=step)
        return _range(monday, monday + timedelta(days=6))
    return _month(published, step)


def annotate(sentence: str, published: date | None) -> str:
    """``sentence`` with the date each relative day means after it, in brackets; unchanged without a
    publication date."""
    if published is None:
        return sentence
    future = bool(_FUTURE.search(sentence))
    return _PHRASE.sub(lambda m: f"{m.group(0)} [{_meaning(m, published, future)}]", sentence)


TIMELINE_DATE = re.compile(r"^\s*\d{1,2} [A-Z][a-z]+ \d{4}: ")
"""The date a timeline entry opens with ("17 April 2024: ..."), rag/compose.py."""


def plain(text: str) -> str:
    """``text`` without what ``annotate`` added, nor a timeline entry's date: the verbatim quote."""
    return ANNOTATION.sub("", TIMELINE_DATE.sub("", text))
