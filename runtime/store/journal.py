"""The local spend journal: spend rows the store could not take, kept on disk until it can.

Rows go here when the database is unreachable at shutdown, and when an outage outlasts the
memory buffer (instead of being dropped). Each append is one write of whole lines (one JSON array
a row) followed by fsync, under an exclusive `flock` (several worker processes may share the
file). `replay_values` writes journaled rows into the store exactly once: in one transaction,
skipping rows already there (same request id and timestamp), so a crash between the commit and
the truncation replays nothing twice. A torn last line (a kill during a write) is skipped: it was
never fsync'd, so never counted as journaled.

Every function here blocks: call it in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Any

import orjson

from sidegate.runtime.store.models import SpendLog
from sidegate.runtime.store.orm import peewee

__all__ = ["Journal", "journal_path", "replay_values"]

Values = tuple[Any, ...]


def journal_path(configured: str | None, db: peewee.Database) -> str | None:
    """The journal for a store: `store.journal`, else `<sqlite file>-spend.journal`, else
    `sidegate-spend.journal` in the working directory for PostgreSQL; None for an in-memory store."""
    if configured:
        return configured
    if isinstance(db, peewee.SqliteDatabase):
        return None if db.database == ":memory:" else f"{db.database}-spend.journal"
    return "sidegate-spend.journal"


class Journal:
    """An append-only file of spend rows."""

    def __init__(self, path: str) -> None:
        self.path = path

    @contextlib.contextmanager
    def _locked(self, flags: int) -> Iterator[int]:
        fd = os.open(self.path, flags | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def append(self, rows: list[Values]) -> None:
        """Append rows and fsync them (blocking)."""
        if not rows:
            return
        data = b"".join(orjson.dumps(list(r)) + b"\n" for r in rows)
        new = not os.path.exists(self.path)
        with self._locked(os.O_WRONLY | os.O_APPEND) as fd:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        if new:  # the file's directory entry must survive a crash too
            directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def count(self) -> int:
        """Rows in the journal (0 when there is none)."""
        if not os.path.exists(self.path):
            return 0
        with open(self.path, "rb") as f:
            return sum(1 for line in f if line.endswith(b"\n"))

    def drain(self, write: Any) -> int:
        """Under the lock: read every row, `write(rows)` (which returns how many it stored), then
        empty the file; returns what `write` returned. The file is kept when `write` raises."""
        if not os.path.exists(self.path):
            return 0
        with self._locked(os.O_RDWR) as fd:
            with os.fdopen(os.dup(fd), "rb") as f:
                rows = [_row(line) for line in f]
            stored = int(write([r for r in rows if r is not None])) if rows else 0
            os.ftruncate(fd, 0)
            os.fsync(fd)
        return stored


def _row(line: bytes) -> Values | None:
    if not line.endswith(b"\n"):
        return None  # torn by a kill mid-write: never fsync'd
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return tuple(value) if isinstance(value, list) else None


def replay_values(rows: list[Values], write: Any, request_index: int, created_index: int) -> int:
    """Store the rows not already in the spend log (by request id and timestamp), in one
    transaction with `write`; returns how many were stored."""
    db = SpendLog._meta.database
    fresh: list[Values] = []
    with db.atomic():
        for start in range(0, len(rows), 500):
            chunk = rows[start:start + 500]
            ids = list({r[request_index] for r in chunk})
            query = SpendLog.select(SpendLog.request_id, SpendLog.created_at).where(SpendLog.request_id.in_(ids))
            found: Any = query.tuples()
            seen: set[tuple[Any, Any]] = {(row[0], row[1]) for row in found}
            for r in chunk:
                key = (r[request_index], r[created_index])
                if key not in seen:
                    seen.add(key)
                    fresh.append(r)
        if fresh:
            write(fresh)
    return len(fresh)
