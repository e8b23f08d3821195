"""Reduce an article body to the article: no markup, no page furniture, every sentence kept.

Rules, each one cheap to check by eye:
- inline HTML is reduced to its text (entities decoded, tags dropped, block tags become line breaks);
- lines equal to the title are dropped (pages often repeat the headline above the text);
- known page furniture ("Leave a review", "Follow us on social networks", "Advertisement", newsletter
  promotions, an ad-feedback widget, ...) is dropped wherever it stands;
- a bare dateline such as "CNN —" at the top is dropped;
- the tail is trimmed: after the last line that ends like a sentence, short lines that do not
  (related-article links, section names, sharing prompts, in any language) are dropped.
Nothing else is touched, so every sentence of the article survives.
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
_TAG = re.compile(r"<[^>]+>")
_BLOCK_TAG = re.compile(r"</?(p|div|br|li|ul|ol|h[1-6]|blockquote|tr|table|section|article)\b[^>]*>", re.I)
_SPACES = re.compile(r"[ \t\u00a0\u2009\u202f]+")
_TAIL_MAX_WORDS = 40


def strip_html(text: str) -> str:
    """Text of an HTML fragment: block tags become line breaks, other tags vanish, entities decode."""
    if "<" not in text and "&" not in text:
        return text
    text = _BLOCK_TAG.sub("\n", text)
    text = _TAG.sub("", text)
    return html.unescape(text)


def normalize(text: str) -> str:
    """NFC, unified line endings, single spaces inside lines, single blank lines between paragraphs."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
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
