"""Publication dates as articles state them: one rule, written once as a regex that the HTTP schema
publishes and the loader reads with, so that what the schema admits the server accepts.

Accepted: ISO 8601 dates and date-times (``2024-01-19``, ``2024-01-19T10:00:00Z``, ``2024/01/19``),
written dates (``January 19, 2024``, ``19 Jan 2024``, ``Fri, 19 Jan 2024 10:00:00 GMT`` as feeds write
them), with an optional weekday, time and zone, in any letter case. The day is the one the text names, in
its own zone. Refused: everything else, ``19/01/2024`` included (day or month first is a guess), and days
that do not exist (``2023-02-30``).

Written by hand rather than with dateutil: dateutil reads an open-ended set of texts (``"10"`` is the
10th of the current month) that no schema can state, and a date-aware news index is better off refusing
a date than guessing one.
"""

from __future__ import annotations

import re
from datetime import date

END = r"(?![\s\S])"
"""The end of the text, in Python and ECMA-262 alike (Python's ``$`` also matches before a final line
break, which would let ``"2024-01-19\n"`` or an id ending in a line break through)."""

_MONTHS = [
    ("jan", "uary"), ("feb", "ruary"), ("mar", "ch"), ("apr", "il"), ("may", ""), ("jun", "e"),
    ("jul", "y"), ("aug", "ust"), ("sep", "tember"), ("oct", "ober"), ("nov", "ember"), ("dec", "ember"),
]  # fmt: skip
_WEEKDAYS = [("mon", "day"), ("tue", "sday"), ("wed", "nesday"), ("thu", "rsday"), ("fri", "day"),
             ("sat", "urday"), ("sun", "day")]  # fmt: skip


def _anycase(word: str) -> str:
    """``jan`` -> ``[Jj][Aa][Nn]``: JSON Schema patterns have no case-insensitive flag."""
    return "".join(f"[{c.upper()}{c}]" if c.isalpha() else re.escape(c) for c in word)


def _word(short: str, rest: str) -> str:
    """A month or weekday, short or in full (``Sept`` too)."""
    tail = f"(?:{_anycase(rest)})?" if rest else ""
    if short == "sep":
        tail = f"(?:{_anycase('t')}(?:{_anycase('ember')})?)?"
    return _anycase(short) + tail


_MONTH = "(?:" + "|".join(_word(s, r) for s, r in _MONTHS) + r")\.?"
_WEEKDAY = "(?:(?:" + "|".join(_word(s, r) for s, r in _WEEKDAYS) + r")\.?,? +)?"
_DAY = "(?:0?[1-9]|[12][0-9]|3[01])(?:st|nd|rd|th)?"
_YEAR = "[0-9]{4}"
_ZONE = "(?: ?(?:Z|[Uu][Tt][Cc]|[Gg][Mm][Tt]|[+-][0-9]{2}(?::?[0-9]{2})?|[A-Z]{3,4}))?"
_CLOCK = "[0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?(?: ?[AaPp]\\.?[Mm]\\.?)?" + _ZONE
_MM, _DD = "(?:0[1-9]|1[0-2])", "(?:0[1-9]|[12][0-9]|3[01])"
_ISO = f"{_YEAR}(?:-{_MM}-{_DD}|/{_MM}/{_DD})(?:[T ]{_CLOCK})?"
_WRITTEN_MONTH_FIRST = f"{_WEEKDAY}{_MONTH} +{_DAY},? +{_YEAR}(?:,? +{_CLOCK})?"
_WRITTEN_DAY_FIRST = f"{_WEEKDAY}{_DAY} +{_MONTH},? +{_YEAR}(?:,? +{_CLOCK})?"
DATE_PATTERN = f"^ *(?:{_ISO}|{_WRITTEN_MONTH_FIRST}|{_WRITTEN_DAY_FIRST}) *{END}"
"""Every accepted form of a publication date (Python and JSON Schema read it alike)."""

_FORM = re.compile(DATE_PATTERN)
_NUMBERS = re.compile(r"[0-9]+")
_MONTH_WORD = re.compile(_MONTH)


def read_date(text: str) -> date:
    """The day ``text`` names; raises ValueError (with the reason) for any other text."""
    if not _FORM.match(text):
        raise ValueError("not a date such as 2024-01-19, 2024-01-19T10:00:00Z or January 19, 2024")
    body = text.strip()
    iso = re.match(f"^{_ISO}$", body)
    if iso:
        year, month, day = (int(n) for n in _NUMBERS.findall(body)[:3])
    else:
        # The month's name is the first word that is one (weekdays come before it and are not months);
        # the day is the first number, the year the first four-digit number.
        found = next(m for m in _MONTH_WORD.finditer(body) if _is_month(m.group(0)))
        month = [s for s, _ in _MONTHS].index(found.group(0)[:3].lower()) + 1
        numbers = _NUMBERS.findall(body)
        day = int(next(n for n in numbers if len(n) <= 2))
        year = int(next(n for n in numbers if len(n) == 4))
    try:
        return date(year, month, day)
    except ValueError:
        raise ValueError(f"there is no day {year:04d}-{month:02d}-{day:02d}") from None


def _is_month(word: str) -> bool:
    start = word.rstrip(".").lower()
    return any(start.startswith(short) for short, _ in _MONTHS)
