"""The state store: peewee on sqlite (WAL). Every database call goes through :meth:`Store.run`, the
one worker-thread seam, serialised by a capacity limiter so the event loop never waits on I/O."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import peewee
import trio

from runtime.models import MIGRATIONS, TABLES, Meta, migrate

__all__ = ["SCHEMA_VERSION", "Store", "open_database"]

SCHEMA_VERSION = len(MIGRATIONS)
T = TypeVar("T")


def open_database(url: str) -> peewee.Database:
    """Open the database a `sqlite://` URL names and bring its schema up to date (blocking)."""
    if not url.startswith("sqlite://"):
        raise ValueError("only sqlite:// databases are supported")
    rest = url[len("sqlite://") :]
    path = ":memory:" if rest == ":memory:" else rest[1:] if rest.startswith("/./") else rest
    db = peewee.SqliteDatabase(
        path,
        pragmas={"journal_mode": "wal", "synchronous": "normal", "busy_timeout": 5000},
        check_same_thread=False,
        thread_safe=False,
    )
    db.connect()
    migrate(db)
    db.bind(TABLES)
    return db


class Store:
    """An open database and the seam through which every call to it runs."""

    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self._limiter = trio.CapacityLimiter(1)

    @classmethod
    async def open(cls, url: str) -> Store:
        """Open (and migrate) the database in a worker thread."""
        db = await trio.to_thread.run_sync(open_database, url)
        return cls(db)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run one blocking database function in the worker thread."""
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def schema_version(self) -> int:
        """The schema version recorded in the database."""

        def read() -> int:
            return int(Meta.get(Meta.key == "schema_version").value)

        return await self.run(read)

    async def aclose(self) -> None:
        """Close the connection."""
        await self.run(self.db.close)
