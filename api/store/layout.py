"""The data folder, and the move from its first layout.

Now: ``RAG_DATA_DIR/index/`` holds the index (``meta.sqlite``, segment files, ``index.marker``) and
``RAG_DATA_DIR/service.sqlite`` the service's own state (API keys, daily counts; ``keys.marker`` beside
it), so deleting ``index/`` and ingesting again keeps every key.

Before: the index's files sat in ``RAG_DATA_DIR`` itself and the keys in its ``meta.sqlite``. A folder in
that layout is moved on first start (``migrate``): the keys are copied into ``service.sqlite``, the
database is checkpointed, the index's files are moved into a staging folder that is renamed to
``index/`` once complete, and the key tables are dropped from the index. Each step can be run again, so
a crash part-way is finished by the next start.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path

from api.store.keys import KeyRing
from index.config import INDEX_FOLDER
from index.errors import IndexCorruptError
from index.store.markers import DB_NAME, INDEX_MARKER, RECOVER

log = logging.getLogger("api.store.layout")
_STAGING = ".index-moving"
_INDEX_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", INDEX_MARKER)


def migrate(data_dir: Path, state_path: Path) -> bool:
    """Move a data folder of the first layout to the current one; True when something was moved."""
    old_db = data_dir / DB_NAME
    staging = data_dir / _STAGING
    if not old_db.exists() and not staging.exists():
        return False
    index_dir = data_dir / INDEX_FOLDER
    if index_dir.exists():
        return False  # both layouts: leave it to the operator rather than guess
    if old_db.exists():
        try:
            _copy_keys(old_db, state_path)
            with closing(sqlite3.connect(old_db)) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(
                f"the index metadata {old_db} is unreadable ({exc}); {RECOVER.format(dir=data_dir)}"
            ) from exc
    staging.mkdir(exist_ok=True)
    moving = [data_dir / name for name in _INDEX_FILES] + sorted(data_dir.glob("seg-*"))
    for path in moving:
        if path.exists():
            path.replace(staging / path.name)
    _drop_keys(staging / DB_NAME)
    staging.replace(index_dir)
    log.info("moved the index into %s and its API keys into %s", index_dir, state_path)
    return True


def _copy_keys(old_db: Path, state_path: Path) -> None:
    with closing(sqlite3.connect(old_db)) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        keys = db.execute("SELECT * FROM api_keys").fetchall() if "api_keys" in tables else []
        usage = db.execute("SELECT * FROM api_key_usage").fetchall() if "api_key_usage" in tables else []
    if keys or usage:
        KeyRing.adopt(state_path, keys, usage)


def _drop_keys(db_path: Path) -> None:
    if not db_path.exists():
        return
    with closing(sqlite3.connect(db_path)) as db:
        db.execute("DROP TABLE IF EXISTS api_keys")
        db.execute("DROP TABLE IF EXISTS api_key_usage")
        db.commit()
