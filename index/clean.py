"""Reduce an article body to the article: no markup, no page furniture, every sentence kept.

Rules, each one cheap to check by eye:
- inline HTML is reduced to its text: entities are decoded first, then scripts, styles, comments and
  tags (an unterminated one too) are dropped and block tags become line breaks, so no markup survives,
  not even markup that arrived escaped (``&lt;script&gt;``);
- lines equal to the title are dropped (pages often repeat the headline above the text);
- known page furniture ("Leave a review", "Follow us on social networks", "Advertisement", newsletter
  promotions, an ad-feedback widget, ...) is dropped wherever it stands;
- a bare dateline such as "CNN —" at the top is dropped;
- the tail is trimmed: after the last line that ends like a sentence, short lines that do not
  (related-article links, section names, sharing prompts, in any language) are dropped.
Nothing else is touched, so every sentence of the article survives.

Control characters (NUL, the C0 and C1 sets, DEL) never reach the index: vertical tabs, form feeds and
line separators become line breaks, the rest are removed, in bodies and one-line fields alike. One-line
fields also lose the bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069),
which can make a headline read differently from what it says, and are held to the lengths the HTTP
schema allows (``clip``), whichever door they came in by.
"""

from __future__ import annotations

import html
import re
import unicodedata

_FURNITURE = re.compile(
    r"^(leave a (review|comment|reply)|follow us( on [\w\s]+)?|news ?line|advertisement"
    r"|share( this)?( article| story)?|read more|related( articles?| news| stories)?|subscribe( now)?"
    r"|sign up( for [\w\s]+)?"
    r"|comments?|print|email|tags?:.*|ad feedback"
    # CNN's ad-feedback widget, captured instead of the text on video pages:
    r"|\d+\. how relevant is this ad to you\?|video player was slow to load content.*"
    # newsletter promotions:
    r"|(get|sign up for) .{0,60}newsletter.*)\W*$",
    re.IGNORECASE,
)
_DATELINE = re.compile(r"^[A-Z][\w .,&'-]{0,40}\s[—–-]+$")
_SENTENCE_END = re.compile(r"""[.!?…:;]["'”’)\]]*$""")
# A tag starts with "<" and a letter, "/", "!" or "?"; it runs to ">" or, unterminated, to the next "<"
# or the end. A "<" followed by anything else ("rose <5%", "x < y") is text and stays.
_TAG = re.compile(r"<[A-Za-z/!?][^<>]*(?:>|(?=<)|$)")
_HIDDEN = re.compile(r"<(script|style|noscript|template|iframe|object)\b.*?(?:</\1\s*>|$)", re.I | re.S)
_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.S)
_BLOCK_TAG = re.compile(r"</?(p|div|br|li|ul|ol|h[1-6]|blockquote|tr|table|section|article)\b[^<>]*>", re.I)
_SPACES = re.compile(r"[ \t\u00a0\u2009\u202f]+")
_TAIL_MAX_WORDS = 40
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
MAX_TITLE_CHARS = 1000
MAX_NAME_CHARS = 200
"""An outlet's or an author's name."""
MAX_AUTHORS = 50
_BREAKS = re.compile(r"[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# Control characters, and what XML 1.0 cannot carry at all (lone surrogates, U+FFFE, U+FFFF): text the
# service keeps may end up in an Atom feed.
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ufeff\ud800-\udfff\ufffe\uffff]")
# What is blank, said the same way in Python and in the ECMA-262 regexes of JSON Schema (whose ``\s``
# and Python's differ: Python counts \x1c-\x1f and \x85 as spaces, ECMA counts \ufeff): control
# characters and every space either counts. ``VISIBLE`` matches one character that is neither.
_BLANK_CLASS = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
VISIBLE = f"[^{_BLANK_CLASS}]"
"""A regex (valid in Python and in JSON Schema) for one character that is not blank."""
_VISIBLE = re.compile(VISIBLE)


def remove_controls(text: str) -> str:
    """``text`` without control characters (nor U+FFFE, U+FFFF and lone surrogates): line-like ones
    become line breaks, the rest go."""
    return _CONTROLS.sub("", _BREAKS.sub("\n", text))


def is_blank(text: str) -> bool:
    """Nothing but spaces and control characters (the rule the HTTP schema states with ``VISIBLE``)."""
    return _VISIBLE.search(text) is None


def strip_html(text: str) -> str:
    """Text of an HTML fragment: entities decode, then hidden elements, comments and tags vanish and
    block tags become line breaks. What comes out holds no markup."""
    if "<" not in text and "&" not in text:
        return text
    text = html.unescape(text)
    text = _HIDDEN.sub("", text)
    text = _COMMENT.sub("", text)
    text = _BLOCK_TAG.sub("\n", text)
    return _TAG.sub("", text)


def plain_line(text: str) -> str:
    """A one-line field (title, outlet, author) as plain text: markup removed, spaces collapsed."""
    return " ".join(_BIDI.sub("", remove_controls(unicodedata.normalize("NFC", strip_html(text)))).split())


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, an ellipsis showing the cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def normalize(text: str) -> str:
    """NFC, unified line endings, single spaces inside lines, single blank lines between paragraphs."""
    text = remove_controls(unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n"))
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def clean_body(body: str, title: str = "") -> str:
    """The article text of ``body`` as paragraphs separated by blank lines."""
    paragraphs = [p for p in normalize(strip_html(body)).split("\n") if p]
    title_key = _key(title)
    kept = [p for p in paragraphs if not (title_key and _key(p) == title_key) and not _FURNITURE.match(p)]
    if kept and _DATELINE.match(kept[0]):
        kept = kept[1:]
    while kept and _is_tail_furniture(kept[-1]) and any(_SENTENCE_END.search(p) for p in kept[:-1]):
        kept.pop()
    return "\n\n".join(kept)


def _key(line: str) -> str:
    return " ".join(line.casefold().split())


def _is_tail_furniture(line: str) -> bool:
    return not _SENTENCE_END.search(line) and len(line.split()) <= _TAIL_MAX_WORDS
