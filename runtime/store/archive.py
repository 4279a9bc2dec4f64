"""The spend archive: every closed period of spend rows written once to S3-compatible storage
(`store.archive`), then, `keep_days` later, deleted from the database.

A period (`every` long, aligned to the UTC epoch) is closed `grace` after its end. A pass walks the
closed periods that hold rows, from the end of the last one archived, and for each:

1. claims it: inserts its row in `ArchivedPeriod`, whose unique `period_start` lets only one of the
   sidecars sharing a store win (the others stop their pass there); a claim older than `LEASE`
   that never finished (its sidecar died) is taken over;
2. encodes its rows (read in chunks through the store's seam) and uploads the object, named for
   the period's start (`<prefix>/spend/YYYY/MM/DD/HH.jsonl.gz`): a second upload of a period (after
   a crash between upload and marker) replaces the object with the same bytes;
3. marks it done with the row count and the object's sha256.

A failure (the bucket unreachable, credentials refused) releases the claim and ends the pass: the
rows stay, and the next pass (next period) tries again from there. Pruning deletes the rows of a
period only once it is archived and `keep_days` past, and only when the database holds no more rows
for it than the object does: rows that landed after it was archived (a journal replayed late) make
it written again, whole, under its name first.

Blocking work (peewee, encoding, botocore) runs in worker threads: the database only through
`Store.run`, the rest through `trio.to_thread.run_sync`."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import trio

from sidegate.runtime.plan.archive import Archive
from sidegate.runtime.plan.secrets import resolve
from sidegate.runtime.store.archive_encode import CONTENT_TYPES, EXTENSIONS, Encoder, parquet_available
from sidegate.runtime.store.bucket_error import BucketError
from sidegate.runtime.store.database import STORE_ERRORS, Store, StoreUnavailable
from sidegate.runtime.store.models import ArchivedPeriod, SpendLog
from sidegate.runtime.store.orm import peewee

if TYPE_CHECKING:
    from sidegate.runtime.store.bucket import Bucket

__all__ = ["CHUNK", "LEASE", "ArchiveUnavailable", "Archiver", "Log", "PassResult", "object_key"]

LEASE = 600.0
"""Seconds a claim on a period holds before another archiver may take it over."""
CHUNK = 5000
"""Spend rows read from the database per call."""


class Log(Protocol):
    """Where the archive's lines go (the server's `Logger`; the CLI's own)."""

    def info(self, event: str, **fields: object) -> None: ...
    def warning(self, event: str, **fields: object) -> None: ...
    def error(self, event: str, **fields: object) -> None: ...


_FAILURES: tuple[type[Exception], ...] = (BucketError, *STORE_ERRORS)


class ArchiveUnavailable(StoreUnavailable):
    """The archive cannot start (its format needs pyarrow, which is not installed)."""


def object_key(config: Archive, start: int) -> str:
    """The object name of the period starting at `start` (epoch seconds, UTC)."""
    t = time.gmtime(start)
    name = f"{t.tm_hour:02d}" if int(config.every) % 3600 == 0 else f"{t.tm_hour:02d}{t.tm_min:02d}"
    path = f"spend/{t.tm_year:04d}/{t.tm_mon:02d}/{t.tm_mday:02d}/{name}.{EXTENSIONS[config.format]}"
    return f"{config.prefix}/{path}" if config.prefix else path


@dataclass
class PassResult:
    """What one pass did."""

    archived: list[tuple[int, str, int]] = field(default_factory=list)
    """(period start, object key, rows) of each period written."""
    pruned: int = 0
    """Spend rows deleted."""
    error: str | None = None
    """Why the pass stopped early (logged too)."""


class Archiver:
    """The archive of one store. `clock` is the wall clock (tests set their own)."""

    def __init__(self, store: Store, config: Archive, logger: Log, bucket: Bucket, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = config
        self.logger = logger
        self.bucket = bucket
        self.clock = clock
        self.owner = uuid.uuid4().hex
        self.every = int(config.every)

    @classmethod
    async def open(cls, store: Store, config: Archive, logger: Log, *,
                   clock: Callable[[], float] = time.time) -> Archiver:
        """Resolve the credentials and make the bucket's client (in a worker thread). Raises
        `ArchiveUnavailable` for the parquet format without pyarrow, `SecretError` for a reference
        that does not resolve."""
        if config.format.value == "parquet" and not await trio.to_thread.run_sync(parquet_available):
            raise ArchiveUnavailable("store.archive.format parquet needs pyarrow: pip install 'sidegate[parquet]'")

        def make() -> Bucket:
            from sidegate.runtime.store.bucket import Bucket  # botocore only for a spec that archives

            credentials = None
            if config.access_key_id is not None and config.secret_access_key is not None:
                credentials = (resolve(config.access_key_id), resolve(config.secret_access_key))
            return Bucket(config, credentials)

        return cls(store, config, logger, await trio.to_thread.run_sync(make), clock=clock)

    async def run(self) -> None:
        """Archive (and prune) once per period, `grace` after each period's end, until cancelled."""
        try:
            while True:
                try:
                    await self.run_once()
                except Exception as exc:  # a bug here must not stop the sidecar: logged, tried next period
                    self.logger.error("archive_failed", error=f"{type(exc).__name__}: {exc}", retry="next period")
                now = self.clock()
                due = (now - self.config.grace) // self.every * self.every + self.every + self.config.grace
                await trio.sleep(max(1.0, due - now))
        finally:
            with trio.CancelScope(shield=True):
                await self.aclose()

    async def run_once(self) -> PassResult:
        """One pass: archive every closed period not yet archived, then prune. Never raises for a
        failure of the bucket or the database: it is logged, and the next pass tries again."""
        result = PassResult()
        now = self.clock()
        try:
            await self._archive(now, result)
        except _FAILURES as exc:
            result.error = str(exc) if isinstance(exc, BucketError) else f"{type(exc).__name__}: {exc}"
            self.logger.error("archive_failed", error=result.error, archived=len(result.archived),
                              retry="next period")
        if self.config.keep_days is not None and result.error is None:
            try:
                await self._prune(now, result)
            except _FAILURES as exc:
                result.error = str(exc) if isinstance(exc, BucketError) else f"{type(exc).__name__}: {exc}"
                self.logger.error("archive_prune_failed", error=result.error, retry="next period")
        return result

    async def _archive(self, now: float, result: PassResult) -> None:
        every = self.every
        closed_end = int((now - self.config.grace) // every * every)
        cursor = await self.store.run(_watermark)
        while True:
            first = await self.store.run(partial(_first_row, cursor, closed_end))
            if first is None:
                return
            start = int(first // every * every)
            key = object_key(self.config, start)
            state = await self.store.run(partial(_claim, start, every, key, self.owner, now))
            if state == "busy":  # another sidecar is archiving it: it goes on from there
                return
            if state == "claimed":
                rows = await self._write(start, key)
                result.archived.append((start, key, rows))
            cursor = start + every

    async def _upload(self, start: int, seconds: int, key: str) -> tuple[int, str]:
        """Encode a period's rows (read in chunks) and write its object; returns (rows, sha256)."""
        encoder = await trio.to_thread.run_sync(Encoder, self.config.format)
        try:
            last = 0
            while True:
                chunk = await self.store.run(partial(_rows, start, start + seconds, last))
                if not chunk:
                    break
                await trio.to_thread.run_sync(encoder.write, chunk)
                last = chunk[-1]["id"]
            digest = await trio.to_thread.run_sync(encoder.finish)
            await trio.to_thread.run_sync(partial(self.bucket.put, key, encoder.file, sha256=digest,
                                                  rows=encoder.rows, content_type=CONTENT_TYPES[self.config.format]))
        finally:
            await trio.to_thread.run_sync(encoder.close)
        return encoder.rows, digest

    async def _write(self, start: int, key: str) -> int:
        """Write one claimed period, then mark it done; on failure the claim is released."""
        try:
            rows, digest = await self._upload(start, self.every, key)
        except BaseException:
            # the claim is released (or, when the database fails too, goes stale after LEASE)
            with trio.CancelScope(shield=True), trio.move_on_after(10), contextlib.suppress(*STORE_ERRORS):
                await self.store.run(partial(_release, start, self.owner))
            raise
        done = await self.store.run(partial(_done, start, self.owner, rows, digest, self.clock()))
        if done:
            self.logger.info("archived", period=_iso(start), object=f"s3://{self.bucket.name}/{key}",
                             rows=rows, sha256=digest)
        else:  # our claim went stale and another archiver took it over: it records the period
            self.logger.warning("archive_claim_lost", period=_iso(start), object=key)
        return rows

    async def _prune(self, now: float, result: PassResult) -> None:
        assert self.config.keep_days is not None
        cutoff = now - self.config.keep_days * 86400
        due = await self.store.run(partial(_prunable, cutoff))
        for start, seconds, archived, key in due:
            n = await self.store.run(partial(_prune_period, start, seconds, archived, now))
            if n < 0:  # rows landed after it was archived (a journal replayed late): the object is
                # written again, whole, under its name, before any row of the period is deleted
                self.logger.warning("archive_late_rows", period=_iso(start), archived=archived, rows=-n)
                rows, digest = await self._upload(start, seconds, key)
                if not await self.store.run(partial(_rearchived, start, archived, rows, digest, self.clock())):
                    continue  # another sidecar did it meanwhile: the next pass prunes it
                result.archived.append((start, key, rows))
                self.logger.info("archived", period=_iso(start), object=f"s3://{self.bucket.name}/{key}",
                                 rows=rows, sha256=digest, again=True)
                n = await self.store.run(partial(_prune_period, start, seconds, rows, now))
            result.pruned += max(n, 0)
        if result.pruned:
            self.logger.info("archive_pruned", rows=result.pruned, before=_iso(int(cutoff)))

    async def aclose(self) -> None:
        """Close the bucket's connections."""
        await trio.to_thread.run_sync(self.bucket.close)


def _iso(start: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))


# The functions below run in the store's worker thread (`Store.run`).

def _watermark() -> int:
    """The end of the latest period archived (0 when none is)."""
    end = (ArchivedPeriod.select(peewee.fn.MAX(ArchivedPeriod.period_start + ArchivedPeriod.seconds))
           .where(ArchivedPeriod.done == True).scalar())  # noqa: E712 - peewee builds SQL from ==
    return int(end or 0)


def _first_row(since: int, before: int) -> float | None:
    """The time of the earliest spend row in [since, before)."""
    value = (SpendLog.select(peewee.fn.MIN(SpendLog.created_at))
             .where((SpendLog.created_at >= since) & (SpendLog.created_at < before)).scalar())
    return None if value is None else float(value)


def _claim(start: int, seconds: int, key: str, owner: str, now: float) -> str:
    """Claim a period: `claimed` (ours now), `done` (archived already) or `busy` (another's claim)."""
    db = ArchivedPeriod._meta.database
    with db.atomic():
        try:
            with db.atomic():
                ArchivedPeriod.insert(period_start=start, seconds=seconds, object_key=key, owner=owner,
                                      claimed_at=now).execute()
            return "claimed"
        except peewee.IntegrityError:
            pass
        row = ArchivedPeriod.get(ArchivedPeriod.period_start == start)
        if row.done:
            return "done"
        if row.claimed_at > now - LEASE:
            return "busy"
        taken = (ArchivedPeriod.update(owner=owner, claimed_at=now, object_key=key, seconds=seconds)
                 .where((ArchivedPeriod.period_start == start) & (ArchivedPeriod.owner == row.owner)
                        & (ArchivedPeriod.claimed_at == row.claimed_at) & (ArchivedPeriod.done == False))  # noqa: E712
                 .execute())
        return "claimed" if taken == 1 else "busy"


def _rows(start: int, end: int, after: int) -> list[dict[str, Any]]:
    """The next chunk of a period's rows, by id."""
    ident = SpendLog._meta.primary_key
    query = (SpendLog.select().where((SpendLog.created_at >= start) & (SpendLog.created_at < end)
                                     & (ident > after)).order_by(ident).limit(CHUNK))
    rows: Any = query.dicts()
    return list(rows)


def _release(start: int, owner: str) -> None:
    ArchivedPeriod.delete().where((ArchivedPeriod.period_start == start) & (ArchivedPeriod.owner == owner)
                                  & (ArchivedPeriod.done == False)).execute()  # noqa: E712


def _done(start: int, owner: str, rows: int, digest: str, now: float) -> bool:
    updated = (ArchivedPeriod.update(done=True, rows=rows, sha256=digest, archived_at=now)
               .where((ArchivedPeriod.period_start == start) & (ArchivedPeriod.owner == owner)
                      & (ArchivedPeriod.done == False)).execute())  # noqa: E712
    return bool(updated == 1)


def _prunable(cutoff: float) -> list[tuple[int, int, int, str]]:
    """(start, seconds, rows archived, object key) of the archived periods that ended before
    `cutoff` and still have their rows."""
    query = (ArchivedPeriod.select(ArchivedPeriod.period_start, ArchivedPeriod.seconds, ArchivedPeriod.rows,
                                   ArchivedPeriod.object_key)
             .where((ArchivedPeriod.done == True) & ArchivedPeriod.pruned_at.is_null()  # noqa: E712
                    & (ArchivedPeriod.period_start + ArchivedPeriod.seconds <= cutoff))
             .order_by(ArchivedPeriod.period_start))
    rows: Any = query.tuples()
    return [(int(s), int(n), int(r), str(k)) for s, n, r, k in rows]


def _rearchived(start: int, was: int, rows: int, digest: str, now: float) -> bool:
    """Record a period written again (if no other archiver recorded it first)."""
    updated = (ArchivedPeriod.update(rows=rows, sha256=digest, archived_at=now)
               .where((ArchivedPeriod.period_start == start) & (ArchivedPeriod.rows == was)).execute())
    return bool(updated == 1)


def _prune_period(start: int, seconds: int, archived: int, now: float) -> int:
    """Delete a period's rows (how many); minus the count, untouched, when it has more than were archived."""
    db = SpendLog._meta.database
    where = (SpendLog.created_at >= start) & (SpendLog.created_at < start + seconds)
    with db.atomic():
        present = SpendLog.select().where(where).count()
        if present > archived:
            return -present
        deleted = int(SpendLog.delete().where(where).execute())
        ArchivedPeriod.update(pruned_at=now).where(ArchivedPeriod.period_start == start).execute()
    return deleted
