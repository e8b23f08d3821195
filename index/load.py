"""Read articles from files and records: .txt, .md, .html, .json, .jsonl, and folders of them."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

from index.clean import MAX_AUTHORS, MAX_NAME_CHARS, MAX_TITLE_CHARS, clean_body, clip, plain_line
from index.dates import read_date
from index.errors import ArticleError
from index.records import ID_PATTERN, Article, url_topic
from index.urls import AddressError, canonical_url

SUFFIXES = frozenset({".txt", ".md", ".markdown", ".html", ".htm", ".json", ".jsonl"})
MAX_FILE_BYTES = 50_000_000
_ID = re.compile(ID_PATTERN)
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_HEADING = re.compile(r"^#{1,6}\s+", re.MULTILINE)
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)(?=\S)(.+?)(?<=\S)\1")


def load_paths(paths: Iterable[Path]) -> Iterator[Article | ArticleError]:
    """Articles from files and folders (recursively), in path order; a bad input yields its error."""
    for path in paths:
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.suffix.lower() in SUFFIXES and not hidden:
                    yield from load_file(child)
        elif not path.exists():
            yield ArticleError(str(path), "no such file or folder")
        else:
            yield from load_file(path)


def load_file(path: Path) -> Iterator[Article | ArticleError]:
    """The article(s) of one file."""
    origin = str(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        yield ArticleError(
            origin, f"unsupported file type {suffix or '(none)'}; use one of {sorted(SUFFIXES)}"
        )
        return
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            yield ArticleError(origin, f"file is larger than {MAX_FILE_BYTES} bytes")
            return
        raw = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield ArticleError(origin, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
        return
    except OSError as exc:
        yield ArticleError(origin, f"cannot read: {exc.strerror}")
        return
    if suffix == ".jsonl":
        yield from _load_jsonl(raw, origin)
    elif suffix == ".json":
        yield from _load_json(raw, origin)
    else:
        try:
            yield _load_text(raw, path, suffix)
        except ArticleError as exc:
            yield exc


def parse_record(record: Any, origin: str) -> Article:
    """An article from a JSON object with ``id``, ``title``, ``url``, ``source``, ``published_at``,
    ``authors`` and ``body`` (or ``text``); only the body is required. Title, outlet and authors are
    plain text cut to the lengths the HTTP schema allows (index/clean.py)."""
    if not isinstance(record, Mapping):
        raise ArticleError(origin, f"expected a JSON object, got {type(record).__name__}")
    body = record.get("body") or record.get("text")
    if not isinstance(body, str) or not body.strip():
        raise ArticleError(origin, "missing or empty 'body' (or 'text')")
    title = clip(plain_line(_optional_str(record, "title", origin) or ""), MAX_TITLE_CHARS)
    url = _url(_optional_str(record, "url", origin), origin)
    source = clip(plain_line(_optional_str(record, "source", origin) or ""), MAX_NAME_CHARS) or None
    authors = record.get("authors") or ()
    if isinstance(authors, str):
        authors = (authors,)
    if not isinstance(authors, list | tuple) or not all(isinstance(a, str) for a in authors):
        raise ArticleError(origin, "'authors' must be a list of strings")
    published = parse_date(record.get("published_at"), origin)
    raw_id = record.get("id")
    if raw_id is not None and (not isinstance(raw_id, str | int) or not _ID.match(str(raw_id))):
        raise ArticleError(
            origin, "'id' must be 1-200 ASCII letters, digits or . _ : - (not starting with '.')"
        )
    return _article(
        str(raw_id) if raw_id is not None else None,
        title=title,
        body=body,
        source=source,
        url=url,
        published_at=published,
        authors=tuple(name for name in (clip(plain_line(a), MAX_NAME_CHARS) for a in authors) if name)[
            :MAX_AUTHORS
        ],
        origin=origin,
    )


def _url(value: str | None, origin: str) -> str | None:
    """The canonical form of an http(s) address (index/urls.py), or None; anything else (``javascript:``,
    ``data:``, ``http://[``) is refused with the reason."""
    if value is None:
        return None
    try:
        return canonical_url(value)
    except AddressError as exc:
        raise ArticleError(origin, f"'url' is not a usable http(s) address: {exc}") from None


def parse_date(value: object, origin: str) -> date | None:
    """A publication date (the forms of index/dates.py); None when absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ArticleError(origin, f"'published_at' must be a date string, got {value!r}")
    try:
        return read_date(value)
    except ValueError as exc:
        raise ArticleError(origin, f"unreadable 'published_at' {value[:80]!r}: {exc}") from None


def _optional_str(record: Mapping[str, Any], key: str, origin: str) -> str | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ArticleError(origin, f"'{key}' must be a string")
    return value.strip() or None


def _article(raw_id: str | None, *, title: str, body: str, origin: str, **meta: Any) -> Article:
    text = clean_body(body, title)
    if not text and not (title or url_topic(meta.get("url"))):
        raise ArticleError(origin, "no article text left after cleaning, and no headline or address to index")
    url = meta.get("url")
    if raw_id:
        article_id = raw_id
    elif url:
        article_id = "url-" + hashlib.sha1(url.encode()).hexdigest()[:16]  # noqa: S324 - an id, not security
    else:
        key = "\x1f".join([title, meta.get("source") or "", text[:200]])
        article_id = "doc-" + hashlib.sha1(key.encode()).hexdigest()[:16]  # noqa: S324
    return Article(id=article_id, title=title, body=text, origin=origin, **meta)


def _load_jsonl(raw: str, origin: str) -> Iterator[Article | ArticleError]:
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{origin}:{number}"
        try:
            yield parse_record(json.loads(line), where)
        except json.JSONDecodeError as exc:
            yield ArticleError(where, f"invalid JSON ({exc.msg} at column {exc.colno})")
        except ArticleError as exc:
            yield exc


def _load_json(raw: str, origin: str) -> Iterator[Article | ArticleError]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        yield ArticleError(origin, f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})")
        return
    records = data if isinstance(data, list) else [data]
    for number, record in enumerate(records):
        try:
            yield parse_record(record, f"{origin}[{number}]" if isinstance(data, list) else origin)
        except ArticleError as exc:
            yield exc


def _load_text(raw: str, path: Path, suffix: str) -> Article:
    origin = str(path)
    folded = unicodedata.normalize("NFKD", path.stem).encode("ascii", "ignore").decode()
    stem_id = re.sub(r"[^A-Za-z0-9_.:-]+", "-", folded).strip("-.")[:200] or None
    if suffix in {".html", ".htm"}:
        return _load_html(raw, origin, stem_id)
    meta: dict[str, Any] = {}
    text = raw.replace("\r\n", "\n")
    if suffix != ".txt":
        front = _FRONT_MATTER.match(text)
        if front:
            meta = _front_matter(front.group(1))
            text = text[front.end() :]
        text = _strip_markdown(text)
    title = meta.pop("title", "")
    if not title:
        first, _, rest = text.strip().partition("\n")
        title, text = first.strip(), rest
    if not text.strip():
        raise ArticleError(origin, "no body after the title line")
    record = {"title": title, "body": text, **meta}
    record.setdefault("id", stem_id)
    return parse_record(record, origin)


def _front_matter(block: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for line in block.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in {"id", "title", "url", "source", "published_at", "date", "authors"}:
            value = value.strip().strip("'\"")
            name = "published_at" if key.strip() == "date" else key.strip()
            meta[name] = [a.strip() for a in value.split(",")] if name == "authors" else value
    return meta


def _strip_markdown(text: str) -> str:
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_HEADING.sub("", text)
    return _MD_EMPHASIS.sub(r"\2", text)


def page_text(body: bytes, charset: str | None = None) -> str:
    """An HTML page's bytes as text, decoded as a browser would (w3lib, after the HTML standard): a
    byte-order mark first, then the charset the HTTP header declares (``charset``), then the page's own
    ``<meta>`` declaration, then UTF-8 when the bytes are valid UTF-8, else the charset charset_normalizer
    reads in them. Bytes the chosen charset cannot read become U+FFFD."""
    from w3lib.encoding import html_to_unicode

    _, text = html_to_unicode(
        f"text/html; charset={charset}" if charset else None, body, auto_detect_fun=_guess_charset
    )
    return text


def _guess_charset(body: bytes) -> str | None:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(body[:200_000]).best()
        return best.encoding if best is not None else None
    return "utf-8"


def page_record(raw: str, url: str | None = None) -> dict[str, Any] | None:
    """A record (``parse_record``'s fields, no id) of the article in an HTML page: its text with the site's
    furniture (navigation, banners, related links, footers) left out by trafilatura, its title, address
    (the page's own canonical one when usable, else ``url``), outlet, date and authors; None without text."""
    import trafilatura

    doc = trafilatura.bare_extraction(
        raw, url=url, with_metadata=True, include_comments=False, include_tables=False
    )
    if doc is None or isinstance(doc, dict) or not (doc.text or "").strip():
        return None
    authors = [a.strip() for a in (doc.author or "").split(";") if a.strip()]
    try:  # a page's own claim about its address is kept only when it is a usable one
        address = canonical_url(doc.url) if doc.url else None
    except AddressError:
        address = None
    return {
        "title": doc.title or "",
        "body": doc.text,
        "url": address,
        "source": doc.sitename or doc.hostname,
        "published_at": doc.date,
        "authors": authors,
    }


def _load_html(raw: str, origin: str, stem_id: str | None) -> Article:
    record = page_record(raw)
    if record is None:
        raise ArticleError(origin, "no article text found in the HTML")
    record["id"] = stem_id
    return parse_record(record, origin)
