"""Who owns which upstream file and batch (`/v1/files`, `/v1/batches`): records kept through the
store's worker-thread seam. Every read is scoped to an owner, so another key's id reads as unknown;
a batch's metering is claimed once with a conditional update (safe across sidecars sharing a
PostgreSQL store)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from sidegate.runtime.store.database import Store
from sidegate.runtime.store.models import StoredBatch, StoredFile
from sidegate.runtime.store.orm import peewee

__all__ = ["Owner", "claim_metering", "delete_file", "get_batch", "get_file", "page", "save_batch", "save_file",
           "set_batch_cost", "update_batch", "update_file"]


@dataclass(frozen=True, slots=True)
class Owner:
    """The caller a record belongs to: its key's hash (empty without auth) and team."""

    key: str
    team: str | None


async def save_file(store: Store, owner: Owner, obj: dict[str, Any], *, group: str, deployment: str,
                    batch_id: str | None = None) -> None:
    """Remember an upstream file object as `owner`'s (a batch's output keeps a known record as it is)."""
    row = {"id": str(obj["id"]), "owner": owner.key, "team": owner.team, "group": group, "deployment": deployment,
           "purpose": str(obj.get("purpose") or ""), "batch_id": batch_id, "created_at": time.time(),
           "status": str(obj.get("status") or "uploaded"), "object": orjson.dumps(obj).decode()}

    def write() -> None:
        StoredFile.insert(**row).on_conflict_ignore().execute()

    await store.run(write)


async def get_file(store: Store, owner: str, file_id: str) -> StoredFile | None:
    """`owner`'s file `file_id`, or None (unknown, or another key's)."""
    return await store.run(lambda: StoredFile.get_or_none((StoredFile.id == file_id) & (StoredFile.owner == owner)))


async def update_file(store: Store, owner: str, obj: dict[str, Any]) -> None:
    """Keep the upstream's latest description of a file."""
    await store.run(lambda: StoredFile.update(object=orjson.dumps(obj).decode(),
                                              status=str(obj.get("status") or "uploaded"))
                    .where((StoredFile.id == str(obj.get("id"))) & (StoredFile.owner == owner)).execute())


async def delete_file(store: Store, owner: str, file_id: str) -> None:
    """Forget `owner`'s file."""
    await store.run(lambda: StoredFile.delete().where((StoredFile.id == file_id) & (StoredFile.owner == owner))
                    .execute())


async def save_batch(store: Store, owner: Owner, obj: dict[str, Any], *, group: str, deployment: str) -> None:
    """Remember a batch the upstream created for `owner`."""
    row = {"id": str(obj["id"]), "owner": owner.key, "team": owner.team, "group": group, "deployment": deployment,
           "input_file_id": str(obj.get("input_file_id") or ""), "created_at": time.time(),
           "status": str(obj.get("status") or ""), "object": orjson.dumps(obj).decode()}
    await store.run(lambda: StoredBatch.insert(**row).on_conflict_ignore().execute())


async def get_batch(store: Store, owner: str, batch_id: str) -> StoredBatch | None:
    """`owner`'s batch `batch_id`, or None."""
    return await store.run(lambda: StoredBatch.get_or_none((StoredBatch.id == batch_id) &
                                                           (StoredBatch.owner == owner)))


async def update_batch(store: Store, owner: str, obj: dict[str, Any]) -> None:
    """Keep the upstream's latest description of a batch."""
    await store.run(lambda: StoredBatch.update(object=orjson.dumps(obj).decode(), status=str(obj.get("status") or ""))
                    .where((StoredBatch.id == str(obj.get("id"))) & (StoredBatch.owner == owner)).execute())


async def claim_metering(store: Store, batch_id: str) -> bool:
    """Mark the batch metered; True only for the one caller that set the mark (exactly once)."""
    now = time.time()
    changed = await store.run(lambda: StoredBatch.update(metered_at=now)
                              .where((StoredBatch.id == batch_id) & StoredBatch.metered_at.is_null()).execute())
    return int(changed) == 1


async def set_batch_cost(store: Store, batch_id: str, cost: float) -> None:
    """Record what a metered batch cost."""
    await store.run(lambda: StoredBatch.update(cost=cost).where(StoredBatch.id == batch_id).execute())


async def page(store: Store, model: type[StoredFile] | type[StoredBatch], owner: str, *, limit: int,
               after: str | None, order: str = "desc", purpose: str | None = None) -> dict[str, Any]:
    """A list page of `owner`'s files or batches, newest first (OpenAI's cursor: `after` an id)."""

    def read() -> dict[str, Any]:
        query = model.select().where(model.owner == owner)
        if purpose is not None and model is StoredFile:
            query = query.where(StoredFile.purpose == purpose)
        newest = order == "desc"
        if after is not None:
            mark = model.get_or_none((model.id == after) & (model.owner == owner))
            if mark is None:
                return {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
            same = model.created_at == mark.created_at
            later = (model.created_at < mark.created_at) | (same & (model.id < mark.id))
            earlier = (model.created_at > mark.created_at) | (same & (model.id > mark.id))
            query = query.where(later if newest else earlier)
        keys: tuple[peewee.Ordering, ...] = ((model.created_at.desc(), model.id.desc()) if newest
                                             else (model.created_at.asc(), model.id.asc()))
        rows: list[Any] = list(query.order_by(*keys).limit(limit + 1))
        data = [orjson.loads(r.object) for r in rows[:limit]]
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": len(rows) > limit}

    return await store.run(read)
