"""The Responses API's HTTP surface: `POST /v1/responses` is prepared here (its stored conversation
loaded, the finished response kept before its last bytes go out) and served by the routing loop
through :class:`runtime.responses.dialect.ResponsesDialect`; `GET /v1/responses/{id}`,
`DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items` read the store."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from sidegate.runtime.asgi import Scope
from sidegate.runtime.errors import BadRequest, NotFound
from sidegate.runtime.governance.keys import Grant
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.responses import records
from sidegate.runtime.responses.dialect import ResponsesDialect
from sidegate.runtime.responses.request import parse_responses
from sidegate.runtime.store.database import Store

__all__ = ["owner_of", "prepare", "stored"]


def owner_of(grant: Grant | None) -> str:
    """Whose stored responses a caller sees: its key's (hash); everyone's alike without auth."""
    return grant.hash if grant is not None else ""


async def prepare(body: bytes, grant: Grant | None, store: Store | None, retention: float,
                  logger: Logger) -> tuple[dict[str, Any], ResponsesDialect]:
    """The request's body and its dialect, with the conversation of `previous_response_id` loaded and
    the store written once the answer is whole (`store: true`, the default)."""
    data, items = parse_responses(body)
    owner = owner_of(grant)
    previous = data.get("previous_response_id")
    history: list[dict[str, Any]] = []
    holder = None
    if previous is not None:
        if store is None:
            raise BadRequest("previous_response_id needs the store, which is not open yet",
                             param="previous_response_id")
        conversation = await records.load_conversation(store, owner, previous, retention)
        history, holder = conversation.items, conversation.provider
    dialect = ResponsesDialect(data, items, history, holder)
    if data.get("store", True) is not False and store is not None:
        async def keep() -> None:
            final = dialect.finished()
            if final is None or final.get("status") == "failed":
                return
            try:
                await records.save(store, owner, final, items, provider=dialect.provider or "",
                                   passthrough=dialect.passthrough, previous_id=previous, retention=retention)
            except Exception as exc:  # the answer is good; only its later retrieval is lost
                logger.warning("response_not_stored", response_id=str(final.get("id")), error=repr(exc))

        dialect.on_complete = keep
    return data, dialect


async def stored(method: str, path: str, scope: Scope, grant: Grant | None, store: Store | None,
                 retention: float) -> dict[str, Any]:
    """The answer of a stored-response route (`path` without `/v1`)."""
    parts = path.strip("/").split("/")
    if store is None:
        raise NotFound("stored responses are not available until the store is open")
    owner = owner_of(grant)
    if len(parts) == 2 and method == "GET":
        return await records.get(store, owner, parts[1], retention)
    if len(parts) == 2 and method == "DELETE":
        return await records.delete(store, owner, parts[1], retention)
    if len(parts) == 3 and parts[2] == "input_items" and method == "GET":
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            raise BadRequest("'limit' must be an integer", param="limit") from None
        if not 1 <= limit <= 100:
            raise BadRequest("'limit' must be between 1 and 100", param="limit")
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise BadRequest("'order' must be asc or desc", param="order")
        return await records.input_page(store, owner, parts[1], retention, limit=limit, order=order,
                                        after=query.get("after"))
    if len(parts) == 3 and parts[2] == "cancel" and method == "POST":
        raise BadRequest("only background responses can be cancelled, and this gateway runs none", param="response_id")
    raise NotFound(f"no route for {method} /v1{path}")

