"""API keys: who may ask, who may write, from which web pages, how often.

Keys live in the service's own SQLite file (``service.sqlite`` beside the index's folder, table
``api_keys``), stored as SHA-256 hashes of random 256-bit tokens, so a copied database reveals no usable
key; the token is shown once, when it is created. The first key writes ``keys.marker`` beside the file:
a folder whose keys were lost with it refuses to open rather than serve without keys.
Daily usage is kept in ``api_key_usage`` so a restart does not reset a daily cap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlsplit

from api.errors import KeyTakenError
from api.store.sqlite import connect, immediate
from index.errors import ConfigError, IndexCorruptError, NotFoundError
from index.store.markers import KEYS_MARKER, mark, marked, refuse_lost

SCOPES = ("ask", "watch", "admin")
_COVERS = {"ask": {"ask"}, "watch": {"ask", "watch"}}
TOKEN_PREFIX = "nqa_"  # noqa: S105 - a marker that makes leaked keys easy to search for, not a secret
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, scope TEXT NOT NULL, origins TEXT NOT NULL,
    per_minute INTEGER, per_day INTEGER, created_at TEXT NOT NULL, revoked_at TEXT, prefix TEXT NOT NULL,
    keeps_watches INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS api_key_usage (
    name TEXT NOT NULL, day TEXT NOT NULL, used INTEGER NOT NULL, PRIMARY KEY (name, day)
);
"""
_COLUMNS = "name, hash, scope, origins, per_minute, per_day, created_at, revoked_at, prefix"
STOPPED_OWNER = (
    "EXISTS (SELECT 1 FROM api_keys k WHERE k.name = {owner} AND k.revoked_at IS NOT NULL "
    "AND k.keeps_watches = 0)"
)
"""SQL that is true when ``{owner}`` names a key revoked without ``keep_watches``: what it owns stops
(api/store/watches.py reads it beside its own tables)."""


def create_key_tables(db: sqlite3.Connection) -> None:
    """The key tables in ``db`` (made before revocation could keep watches: the column added)."""
    db.executescript(_SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(api_keys)")}
    if "keeps_watches" not in columns:
        with contextlib.suppress(sqlite3.OperationalError):  # another process added it meanwhile
            db.execute("ALTER TABLE api_keys ADD COLUMN keeps_watches INTEGER NOT NULL DEFAULT 0")


@dataclass(frozen=True)
class ApiKey:
    """One key as stored (never the token itself)."""

    name: str
    scope: str
    """``ask``: questions, search, reading articles. ``watch``: that, and standing questions (its own).
    ``admin``: all of that, every key's watches, and adding and deleting."""
    origins: tuple[str, ...]
    """Web pages (``scheme://host[:port]``) allowed to use the key from a browser; empty: none."""
    per_minute: int | None
    per_day: int | None
    created_at: str
    revoked_at: str | None
    prefix: str
    """The token's first characters, to tell keys apart in listings."""

    def allows(self, scope: str) -> bool:
        return self.scope == "admin" or scope in _COVERS.get(self.scope, ())


def normalize_origin(value: str) -> str:
    """``https://Intranet.example.com:443/page`` -> ``https://intranet.example.com``; raises ConfigError
    (an unclosed ``[`` or a port past 65535 included)."""
    unusable = f"origin {value[:200]!r} is not an http(s) address such as https://intranet.example.com"
    try:
        parts = urlsplit(value.strip())
        given_port = parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise ConfigError(f"{unusable} ({exc})") from None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        raise ConfigError(unusable)
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[scheme]
    port = f":{given_port}" if given_port and given_port != default else ""
    return f"{scheme}://{host}{port}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A new random 256-bit token with the key prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def checked_key(
    name: str, scope: str, origins: Sequence[str], per_minute: int | None, per_day: int | None
) -> list[str]:
    """A new key's settings checked as every backend checks them (ConfigError with the reason); its
    origins normalised and sorted."""
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
        raise ConfigError("a key name is 1-64 letters, digits, '.', '_' or '-'")
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}")
    for limit in (per_minute, per_day):
        if limit is not None and limit < 1:
            raise ConfigError("limits must be at least 1 request")
    return sorted({normalize_origin(o) for o in origins})


class KeyRing:
    """The service's keys. Lookups hit SQLite every time, so a revocation takes effect at once."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the key table in the SQLite file ``path``; refuse one whose keys were lost."""
        folder = path.parent
        folder.mkdir(parents=True, exist_ok=True)
        if not path.exists() and marked(folder, KEYS_MARKER):
            raise IndexCorruptError(
                f"the service's key file {path} is missing, but {folder / KEYS_MARKER} says keys were "
                "created: restore it from a backup, or delete the marker and create the keys again"
            )
        self._folder = folder
        try:
            self._db = connect(path)
            create_key_tables(self._db)
            (stored,) = self._db.execute("SELECT count(*) FROM api_keys").fetchone()
            # Lookups run on the server's event loop: a connection of their own, which a writer waiting
            # for SQLite's write lock (an ingest in another process) never holds up.
            self._reader = connect(path, read_only=True)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"the key table cannot be opened ({exc})") from exc
        if not stored and marked(folder, KEYS_MARKER):
            self._db.close()
            self._reader.close()
            refuse_lost(folder, KEYS_MARKER, "API keys", path.name)
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()

    @staticmethod
    def adopt(path: Path, keys: Sequence[Sequence[object]], usage: Sequence[Sequence[object]]) -> None:
        """Store key and usage rows copied from an older layout's file (api/store/layout.py); idempotent."""
        with contextlib.closing(connect(path)) as db:
            create_key_tables(db)
            with immediate(db):
                db.executemany(  # the first layout's nine columns (a revocation there kept no watches)
                    f"INSERT OR IGNORE INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [tuple(row[:9]) for row in keys],
                )
                db.executemany("INSERT OR IGNORE INTO api_key_usage VALUES (?, ?, ?)", usage)
        if keys:
            mark(path.parent, KEYS_MARKER)

    def add(
        self,
        name: str,
        scope: str,
        origins: Sequence[str] = (),
        per_minute: int | None = None,
        per_day: int | None = None,
    ) -> str:
        """Create a key and return its token (shown this once; only its hash is kept)."""
        normalized = checked_key(name, scope, origins, per_minute, per_day)
        token = new_token()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._writing():
            if self._db.execute("SELECT 1 FROM api_keys WHERE name = ?", (name,)).fetchone():
                raise KeyTakenError(f"a key named {name!r} exists; revoke it or choose another name")
            self._db.execute(
                f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                (name, hash_token(token), scope, json.dumps(normalized), per_minute, per_day, now, token[:8]),
            )
        mark(self._folder, KEYS_MARKER)
        return token

    def revoke(self, name: str, keep_watches: bool = False) -> None:
        """Revoke the key at once, for every process. What it owns stops with it (its watches no longer
        match, deliver or serve their feed: api/store/watches.py) unless ``keep_watches``."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._writing():
            changed = self._db.execute(
                "UPDATE api_keys SET revoked_at = ?, keeps_watches = ? WHERE name = ? AND revoked_at IS NULL",
                (now, int(keep_watches), name),
            ).rowcount
        if not changed:
            raise NotFoundError(f"no active key named {name!r}")

    def keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT name, scope, origins, per_minute, per_day, created_at, revoked_at, prefix "
                "FROM api_keys ORDER BY created_at, name"
            ).fetchall()
        return [key_of_row(row) for row in rows]

    def lookup(self, token: str) -> ApiKey | None:
        """The active key with this token, or None."""
        with self._read_lock:
            row = self._reader.execute(
                "SELECT name, scope, origins, per_minute, per_day, created_at, revoked_at, prefix "
                "FROM api_keys WHERE hash = ? AND revoked_at IS NULL",
                (hash_token(token),),
            ).fetchone()
        return None if row is None else key_of_row(row)

    def active(self) -> list[ApiKey]:
        return [key for key in self.keys() if key.revoked_at is None]

    def usage(self, day: date) -> dict[str, int]:
        """Requests counted per key on ``day`` (UTC)."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT name, used FROM api_key_usage WHERE day = ?", (day.isoformat(),)
            )
            return {name: int(used) for name, used in rows}

    def save_usage(self, day: date, used: dict[str, int]) -> None:
        if not used:
            return
        with self._writing():
            self._db.execute("DELETE FROM api_key_usage WHERE day < ?", (day.isoformat(),))
            self._db.executemany(
                "INSERT INTO api_key_usage VALUES (?, ?, ?) ON CONFLICT (name, day) "
                "DO UPDATE SET used = max(used, excluded.used)",
                [(name, day.isoformat(), count) for name, count in used.items()],
            )

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock, immediate(self._db):
            yield


def key_of_row(row: Sequence[object]) -> ApiKey:
    """A key from its columns: name, scope, origins, per_minute, per_day, created_at, revoked_at,
    prefix."""
    name, scope, origins, per_minute, per_day, created, revoked, prefix = row
    return ApiKey(
        name=str(name),
        scope=str(scope),
        origins=tuple(json.loads(str(origins))),
        per_minute=None if per_minute is None else int(str(per_minute)),
        per_day=None if per_day is None else int(str(per_day)),
        created_at=str(created),
        revoked_at=None if revoked is None else str(revoked),
        prefix=str(prefix),
    )
