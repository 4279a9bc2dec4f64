"""Stored responses: kept in the spec's store (sqlite or PostgreSQL) through its worker-thread
seam, scoped to the key that made them, dropped after the plan's retention.

A response keeps its own input items and the id of the response it continued; the conversation
behind a `previous_response_id` is that chain, read back oldest first (bounded in length).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from sidegate.runtime.errors import BadRequest, NotFound
from sidegate.runtime.responses.items import new_id
from sidegate.runtime.store.database import Store
from sidegate.runtime.store.models import StoredResponse

__all__ = ["MAX_CHAIN", "Conversation", "delete", "get", "input_page", "load_conversation", "save"]

MAX_CHAIN = 200
"""Turns a `previous_response_id` chain may have (a longer one is refused)."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """The earlier turns of a conversation as input items, and who holds its last response upstream."""

    items: list[dict[str, Any]]
    provider: str | None
    """The provider whose upstream holds the previous response (pass-through answers), else None."""


def _fresh(row: StoredResponse | None, owner: str, retention: float) -> StoredResponse | None:
    if row is None or row.owner != owner or row.created_at < time.time() - retention:
        return None
    return row


async def load_conversation(store: Store, owner: str, response_id: str, retention: float) -> Conversation:
    """The items of `response_id`'s conversation, its own output last (400 when it is unknown to
    this key, expired, or the chain is too long)."""

    def read() -> Conversation | None:
        rows: list[StoredResponse] = []
        current: str | None = response_id
        while current is not None:
            if len(rows) >= MAX_CHAIN:
                raise BadRequest(f"the conversation behind previous_response_id is longer than {MAX_CHAIN} turns",
                                 param="previous_response_id")
            row = _fresh(StoredResponse.get_or_none(StoredResponse.id == current), owner, retention)
            if row is None:
                return None if not rows else Conversation(_items(rows), _holder(rows[0]))
            rows.append(row)
            current = row.previous_id
        return Conversation(_items(rows), _holder(rows[0]))

    found = await store.run(read)
    if found is None:
        raise BadRequest(f"Previous response with id '{response_id}' not found.", param="previous_response_id")
    return found


def _holder(row: StoredResponse) -> str | None:
    return row.provider if row.passthrough else None


def _items(rows: list[StoredResponse]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in reversed(rows):
        out.extend(orjson.loads(row.input))
        output = orjson.loads(row.response).get("output") or []
        out.extend(item for item in output if isinstance(item, dict))
    return out


def _stored_item(item: dict[str, Any]) -> dict[str, Any]:
    """An input item as OpenAI lists it: with an id, a message's text as a content part."""
    out = {**item}
    out.setdefault("id", new_id("msg" if item["type"] == "message" else "item"))
    if item["type"] == "message" and isinstance(item.get("content"), str):
        kind = "output_text" if item.get("role") == "assistant" else "input_text"
        out["content"] = [{"type": kind, "text": item["content"]}]
    return out


async def save(store: Store, owner: str, response: dict[str, Any], items: list[dict[str, Any]], *,
               provider: str, passthrough: bool, previous_id: str | None, retention: float) -> None:
    """Keep a finished response (and drop this key's expired ones)."""
    own = [_stored_item(item) for item in items]
    row = {"id": str(response.get("id") or new_id("resp")), "owner": owner, "created_at": time.time(),
           "model": str(response.get("model") or ""), "provider": provider, "passthrough": passthrough,
           "previous_id": previous_id, "input": orjson.dumps(own).decode(), "response": orjson.dumps(response).decode()}

    def write() -> None:
        StoredResponse.insert(**row).on_conflict_replace().execute()
        StoredResponse.delete().where(StoredResponse.owner == owner,
                                      StoredResponse.created_at < time.time() - retention).execute()

    await store.run(write)


async def get(store: Store, owner: str, response_id: str, retention: float) -> dict[str, Any]:
    """A stored response (404 for another key's, an expired or an unknown one)."""
    row = await store.run(lambda: _fresh(StoredResponse.get_or_none(StoredResponse.id == response_id), owner,
                                         retention))
    if row is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    response: dict[str, Any] = orjson.loads(row.response)
    return response


async def delete(store: Store, owner: str, response_id: str, retention: float) -> dict[str, Any]:
    """Forget a stored response; OpenAI's deletion object."""
    await get(store, owner, response_id, retention)
    await store.run(lambda: StoredResponse.delete().where(StoredResponse.id == response_id,
                                                          StoredResponse.owner == owner).execute())
    return {"id": response_id, "object": "response", "deleted": True}


async def input_page(store: Store, owner: str, response_id: str, retention: float, *, limit: int = 20,
                     order: str = "desc", after: str | None = None) -> dict[str, Any]:
    """`GET /v1/responses/{id}/input_items`: a page of the response's own input items."""
    row = await store.run(lambda: _fresh(StoredResponse.get_or_none(StoredResponse.id == response_id), owner,
                                         retention))
    if row is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    items: list[dict[str, Any]] = orjson.loads(row.input)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [i.get("id") for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}
