"""What one client request may receive besides its answer: the messages its upstream sends on the
request's own event stream (Streamable HTTP), relayed to the client's own event stream.

- Notifications: `notifications/progress` for the client's own `progressToken`, and
  `notifications/message` (logging) at or above the client's level; others are dropped.
- Requests the server makes of the client (`sampling/createMessage`, `elicitation/create`,
  `roots/list`; session era): relayed under an id of the gateway's own, when the client declared
  the capability they need; the client's answer, POSTed to the gateway, is routed back by that id
  (`Pending`). Otherwise the gateway answers the server itself (`ping`: `{}`; anything else: an
  error), as it does when the client cannot take an event stream.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sidegate.runtime.mcp.protocol import METHOD_NOT_FOUND

__all__ = ["LOG_LEVELS", "Exchange", "Pending", "Reply"]

Reply = Callable[[dict[str, Any]], Awaitable[None]]
"""Deliver a JSON-RPC response to the upstream that asked."""
Emit = Callable[[dict[str, Any]], Awaitable[None]]
"""Send one message to the client on its event stream."""

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_CAPABILITY = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}
_MAX_OPEN = 64
"""Server requests awaiting the client's answer, per client request (more are refused)."""


@dataclass(slots=True)
class _Asked:
    session: str
    upstream_id: Any
    reply: Reply


@dataclass
class Pending:
    """Server requests relayed to clients and not answered yet, by the gateway's id (per process)."""

    asked: dict[str, _Asked] = field(default_factory=dict)
    _prefix: str = field(default_factory=lambda: "sg-" + secrets.token_hex(6) + "-")
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def add(self, session: str, upstream_id: Any, reply: Reply) -> str:
        gid = f"{self._prefix}{next(self._ids)}"
        self.asked[gid] = _Asked(session, upstream_id, reply)
        return gid

    async def answer(self, session: str, message: dict[str, Any]) -> bool:
        """Route a client's response to the upstream that asked; False when nobody asked it that
        (unknown id, or another session's)."""
        rid = message.get("id")
        if not isinstance(rid, str) or rid not in self.asked or self.asked[rid].session != session:
            return False
        asked = self.asked.pop(rid)
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": asked.upstream_id}
        if isinstance(message.get("error"), dict):
            out["error"] = message["error"]
        else:
            out["result"] = message.get("result") if isinstance(message.get("result"), dict) else {}
        await asked.reply(out)
        return True


class Exchange:
    """The side channel of one client request (see the module's docstring)."""

    def __init__(self, *, emit: Emit | None, legacy: bool, session: str, capabilities: Any, level: str | None,
                 progress_token: Any, pending: Pending) -> None:
        self.emit = emit
        """None when the client takes only a JSON answer: nothing can be relayed."""
        self.legacy = legacy
        """A session-era client (server requests can be relayed to it)."""
        self.session = session
        self.capabilities = capabilities if isinstance(capabilities, dict) else {}
        self.level = level
        self.progress_token = progress_token
        self.pending = pending
        self._mine: list[str] = []

    async def notify(self, message: dict[str, Any]) -> None:
        """A notification the upstream sent on this request's stream."""
        if self.emit is None:
            return
        method, params = message.get("method"), message.get("params")
        if not isinstance(params, dict):
            return
        if method == "notifications/progress":
            if self.progress_token is None or params.get("progressToken") != self.progress_token:
                return
        elif method == "notifications/message":
            if not self._loud_enough(params.get("level")):
                return
        else:
            return
        await self.emit({"jsonrpc": "2.0", "method": method, "params": params})

    def _loud_enough(self, level: Any) -> bool:
        if level not in LOG_LEVELS:
            return False
        return self.level is None or LOG_LEVELS.index(level) >= LOG_LEVELS.index(self.level)

    async def ask(self, message: dict[str, Any], reply: Reply) -> None:
        """A request the upstream made of the client on this request's stream."""
        method, rid = message.get("method"), message.get("id")
        if method == "ping":
            await reply({"jsonrpc": "2.0", "id": rid, "result": {}})
            return
        needed = _CAPABILITY.get(method) if isinstance(method, str) else None
        if self.emit is None or not self.legacy or needed is None or needed not in self.capabilities:
            why = ("the client did not declare the capability" if needed is not None and self.emit is not None
                   else "not relayed by the gateway for this client")
            await reply({"jsonrpc": "2.0", "id": rid, "error": {"code": METHOD_NOT_FOUND, "message": why}})
            return
        if len(self._mine) >= _MAX_OPEN:
            await reply({"jsonrpc": "2.0", "id": rid, "error": {"code": METHOD_NOT_FOUND,
                                                               "message": "too many open requests to the client"}})
            return
        gid = self.pending.add(self.session, rid, reply)
        self._mine.append(gid)
        relayed: dict[str, Any] = {"jsonrpc": "2.0", "id": gid, "method": method}
        if "params" in message:
            relayed["params"] = message["params"]
        await self.emit(relayed)

    def close(self) -> None:
        """The request is over: forget what its upstream asked and the client never answered."""
        for gid in self._mine:
            self.pending.asked.pop(gid, None)
        self._mine.clear()
