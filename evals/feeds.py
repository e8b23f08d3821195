"""A feed as an evaluation corpus: `rag eval --feed FEED.xml --questions QUESTIONS.jsonl`.

A saved RSS or Atom document (or news sitemap) is read by the same parser the poller uses
(index/feeds.py) and each entry becomes the article the poller would store when the page cannot be
fetched: the feed's own text as the body, its title, date, authors and outlet, and the id made from the
entry's canonical address. Nothing is fetched: an evaluation must score the same text every time, so it
scores what the feed carries. A question's ``gold_ids`` may name an entry by its link (``https://...``)
as well as by its id; links are mapped to ids here, so a dataset for a feed can be written by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from evals.data import Dataset, DatasetError, load_questions
from index.errors import RagError
from index.feeds import article_id, parse
from index.urls import AddressError, canonical_url


def feed_dataset(feed: Path, questions: Path, folder: Path) -> Dataset:
    """The dataset of ``feed``'s entries (written as a corpus JSONL under ``folder``, named by the feed's
    content hash) and ``questions``."""
    try:
        body = feed.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{feed}: cannot read the feed ({exc.strerror})") from None
    try:
        parsed = parse(body)
    except RagError as exc:
        raise DatasetError(f"{feed}: {exc}") from None
    records = []
    ids: dict[str, str] = {}
    for entry in parsed.entries:
        try:
            address = canonical_url(entry.url)
        except AddressError:
            continue  # an entry without a usable link is one the poller skips too
        if not entry.content or address in ids:
            continue
        ids[address] = article_id(address)
        records.append(
            {
                "id": ids[address],
                "url": address,
                "title": entry.title,
                "source": entry.source or parsed.title or None,
                "published_at": entry.published.isoformat() if entry.published else None,
                "authors": list(entry.authors),
                "body": entry.content,
            }
        )
    if not records:
        raise DatasetError(f"{feed}: no entry with a link and text of its own")
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / f"feed-{hashlib.sha256(body).hexdigest()[:20]}.jsonl"
    if not corpus.exists():
        temporary = corpus.with_name(corpus.name + ".tmp")
        temporary.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        temporary.replace(corpus)
    chosen = tuple(
        dataclasses.replace(q, gold_ids=tuple(_gold(g, ids, questions) for g in q.gold_ids))
        for q in load_questions(questions)
    )
    return Dataset(feed.stem, corpus, chosen)


def _gold(value: str, ids: dict[str, str], questions: Path) -> str:
    if not value.startswith(("http://", "https://")):
        return value
    try:
        address = canonical_url(value)
    except AddressError as exc:
        raise DatasetError(f"{questions}: gold link {value!r}: {exc}") from None
    if address not in ids:
        raise DatasetError(f"{questions}: gold link {value} is no entry of the feed with text of its own")
    return ids[address]
