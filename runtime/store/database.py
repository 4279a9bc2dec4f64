"""The state store: peewee on sqlite (WAL) or PostgreSQL. Every database call goes through
:meth:`Store.run`, the one worker-thread seam, serialised by a capacity limiter so the event loop
never waits on I/O. The seam holds one connection; after a failure that leaves it unusable (the
server restarted, the network dropped) it is closed, and the next call opens a fresh one."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import trio

from sidegate.runtime.store.models import MIGRATIONS, TABLES, Meta, migrate
from sidegate.runtime.store.orm import peewee, with_psycopg2

__all__ = ["CONNECT_TIMEOUT", "OPEN_WAIT", "SCHEMA_VERSION", "STORE_ERRORS", "Store", "StoreUnavailable",
           "connect_database", "open_database", "redact"]

STORE_ERRORS: tuple[type[Exception], ...] = (peewee.PeeweeException, OSError)
"""What a store call raises when the database cannot answer (callers map it to a 503)."""

SCHEMA_VERSION = len(MIGRATIONS)
CONNECT_TIMEOUT = 5
"""Seconds a PostgreSQL connection attempt may take before the call fails (and is retried later)."""
OPEN_WAIT = 30.0
"""Seconds `Store.open` keeps trying to reach a PostgreSQL server that refuses connections (a sidecar
may start before its database is reachable) before giving up."""
T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store could not be opened (the message names the database without its password)."""


def redact(url: str) -> str:
    """The URL without its password, fit for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def connect_database(url: str) -> peewee.Database:
    """The (unopened) database a `sqlite://` or `postgresql://` URL names."""
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        path = ":memory:" if rest == ":memory:" else rest[1:] if rest.startswith("/./") else rest
        return peewee.SqliteDatabase(
            path,
            pragmas={"journal_mode": "wal", "synchronous": "normal", "busy_timeout": 5000},
            check_same_thread=False,
            thread_safe=False,
        )
    if url.startswith(("postgresql://", "postgres://")):
        dsn = "postgresql://" + url.split("://", 1)[1]
        with_psycopg2()
        # One connection shared by the seam's threads (thread_safe=False); the limiter serialises it.
        # TCP keepalives notice a vanished server on an idle connection instead of waiting forever.
        return peewee.PostgresqlDatabase(
            dsn, thread_safe=False, autoconnect=True, connect_timeout=CONNECT_TIMEOUT,
            keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
            application_name="sidegate",
        )
    raise ValueError("store.database must be a sqlite:// or postgresql:// URL")


def open_database(url: str) -> peewee.Database:
    """Open the database a URL names and bring its schema up to date (blocking).

    Sidecar workers start together: on an sqlite file, connecting (which switches it to WAL) and
    migrating happen under an exclusive lock on a file beside it, as PostgreSQL's advisory lock does
    there; two processes migrating a new sqlite file at once would get "database is locked"."""
    db = connect_database(url)
    with _sqlite_file_lock(db):
        db.connect()
        migrate(db)
    db.bind(TABLES)  # the tables are module-level: one process holds one store (tests run a second as a process)
    return db


@contextlib.contextmanager
def _sqlite_file_lock(db: peewee.Database) -> Iterator[None]:
    path = db.database if isinstance(db, peewee.SqliteDatabase) else ":memory:"
    if path == ":memory:" or not isinstance(path, str):
        yield
        return
    fd = os.open(f"{path}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _drop_if_broken(db: peewee.Database) -> None:
    """Close the connection when a failure left it unusable, so the next call reconnects."""
    if db.is_closed() or db.in_transaction() or db.is_connection_usable():
        return
    with contextlib.suppress(Exception):  # a dead connection may fail to close; its state is reset anyway
        db.close()


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Store:
    """An open database and the seam through which every call to it runs."""

    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self._limiter = trio.CapacityLimiter(1)

    @property
    def backend(self) -> str:
        """`sqlite` or `postgresql`."""
        return "postgresql" if isinstance(self.db, peewee.PostgresqlDatabase) else "sqlite"

    @classmethod
    async def open(cls, url: str, *, wait: float = OPEN_WAIT) -> Store:
        """Open (and migrate) the database in a worker thread. A PostgreSQL server that cannot be
        reached is retried (backoff 0.5 s doubling to 5 s) for up to `wait` seconds; then, or on
        any other failure, `StoreUnavailable`."""
        deadline = trio.current_time() + wait
        delay = 0.5
        while True:
            try:
                db = await trio.to_thread.run_sync(open_database, url)
                return cls(db)
            except peewee.OperationalError as exc:
                if not url.startswith("postgres") or trio.current_time() + delay > deadline:
                    raise StoreUnavailable(f"cannot open the store {redact(url)}: {_first_line(exc)}") from None
            except (peewee.PeeweeException, ValueError) as exc:
                raise StoreUnavailable(f"cannot open the store {redact(url)}: {_first_line(exc)}") from None
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run one blocking database function in the worker thread (reconnecting first if an earlier
        failure dropped the connection)."""
        db = self.db

        def call() -> T:
            if db.is_closed():
                db.connect()
            try:
                return fn()
            except (peewee.OperationalError, peewee.InterfaceError):
                _drop_if_broken(db)
                raise

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def schema_version(self) -> int:
        """The schema version recorded in the database."""

        def read() -> int:
            return int(Meta.get(Meta.key == "schema_version").value)

        return await self.run(read)

    async def aclose(self) -> None:
        """Close the connection."""

        def close() -> None:
            if not self.db.is_closed():
                self.db.close()

        await trio.to_thread.run_sync(close, limiter=self._limiter)
