"""Log lines that say what happened and cannot be forged: every line carries its request's id, and
everything a request brings (its path, headers, ids) has its control characters escaped, so a
``%0a`` in a path cannot start a line of its own."""

from __future__ import annotations

import contextvars
import logging
import re

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` with each control character (and line or paragraph separator) written as ``\\xNN`` or
    ``\\uNNNN``."""
    return _CONTROL.sub(lambda m: _escaped(m.group(0)), text)


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every log record (``%(request_id)s``; ``-`` outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class SafeFormatter(logging.Formatter):
    """A formatter whose messages are one line each: control characters in the message are escaped.
    (A traceback, added after the message, keeps its own line breaks.)"""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's own name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)
