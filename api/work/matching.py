"""The service's side of standing questions. After a commit, the chunks above the stored cursor are the
news: their articles (new, or changed: an unchanged re-ingest writes no chunk) are scored against the
watches by rag/standing.py, each answer rendered as ``/ask`` gives it (the one projection, handed in by
the web side), and the strongest per watch stored as alerts with the cursor, in one transaction
(api/store/alerts.py keeps one alert per watch and story)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from api.store.records import Alert, Found
from api.store.standing import WatchTables
from index.store.protocols import IndexReader
from rag import Answerer
from rag.records import Answer
from rag.standing import DEFAULT_BATCH, DEFAULT_NEAR, DEFAULT_OVERLAP, Shortlist, StandingMatcher, strongest

Render = Callable[[Answer], dict[str, Any]]


class WatchMatcher:
    """Checks committed articles against the watches; one per process that checks (thread-safe enough
    for one checking thread: `rag serve`'s alert worker, or `rag watch check`)."""

    def __init__(
        self,
        store: WatchTables,
        answerer: Answerer,
        render: Render,
        near: float = DEFAULT_NEAR,
        overlap: float = DEFAULT_OVERLAP,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self.store = store
        self.answerer = answerer
        self.render = render
        self.scorer = StandingMatcher(answerer, near, overlap, batch)
        self._shortlist: tuple[tuple[int, int], Shortlist] | None = None

    def check(self, as_of: date | None = None) -> list[Alert]:
        """Check what was committed since the last check, store the alerts it earns (and the cursor) and
        return them. The first check only sets the cursor: watches are told of news, not of the past.
        ``as_of``: the day the watches' questions are asked on (default today, UTC)."""
        day = as_of or datetime.now(UTC).date()
        for _ in range(3):  # another process may move the cursor first: then check what it left
            reader = self.answerer.index.reader()
            start = self.store.alerts.cursor()
            ids = reader.chunk_ids()
            top = int(ids.max()) if ids.size else 0
            if start is None:
                self.store.alerts.advance(None, top, [])
                return []
            if top <= start:  # nothing new; or a snapshot behind another process's (it catches up)
                return []
            found = self.match(reader, ids[ids > start], day)
            told = self.store.alerts.told([(f.watch_id, f.story) for f in found])
            fresh = [f for f in found if (f.watch_id, f.story) not in told]
            stored = self.store.alerts.advance(start, top, strongest(fresh, _watch_of))
            if stored is not None:
                return stored
        return []

    def match(self, reader: IndexReader, chunk_ids: npt.NDArray[np.int64], as_of: date | None) -> list[Found]:
        """What the articles of ``chunk_ids`` answer, watch by watch, rendered as ``/ask`` renders."""
        matches = self.scorer.match(self._current(), reader, chunk_ids, as_of)
        return [
            Found(
                m.question_id, m.story, m.article_id, self.render(m.answer), m.confidence, m.near, m.overlap
            )
            for m in matches
        ]

    def _current(self) -> Shortlist:
        """The watches, read again when one was added or removed (in any process)."""
        version = self.store.watches.version()
        if self._shortlist is not None and self._shortlist[0] == version:
            return self._shortlist[1]
        shortlist = self.scorer.shortlist(self.store.watches.questions())
        if shortlist.embedded:
            self.store.watches.save_vectors(shortlist.embedded)
        self._shortlist = (version, shortlist)
        return shortlist


def _watch_of(found: Found) -> str:
    return found.watch_id
