"""Guardrails on MCP tool calls (`tools/call` through the MCP gateway): the key's and its team's
guardrails (a tool call has no model group) check the call's arguments (`pre_call`: every string
value, masked in place before they go upstream) and the tool's result (`post_call` and
`during_call`: its text content, embedded resources' text and structured content). A block is a
JSON-RPC error `GUARDRAIL_BLOCKED` naming the guardrail, never the text; an external check failing
closed is `GUARDRAIL_UNAVAILABLE`."""

from __future__ import annotations

import uuid
from typing import Any

from sidegate.runtime.errors import GuardrailBlocked, Unavailable
from sidegate.runtime.governance.keys import Grant
from sidegate.runtime.guardrails.service import Applied, Guardian
from sidegate.runtime.mcp.protocol import GUARDRAIL_BLOCKED, GUARDRAIL_UNAVAILABLE, McpError

__all__ = ["ToolGuard"]


def _refusal(err: GuardrailBlocked | Unavailable, what: str) -> McpError:
    if isinstance(err, GuardrailBlocked):
        return McpError(GUARDRAIL_BLOCKED, f"the tool call's {what} was blocked by guardrail '{err.guardrail}'",
                        data={"code": err.code, "guardrail": err.guardrail})
    return McpError(GUARDRAIL_UNAVAILABLE, err.message, data={"code": err.code})


class ToolGuard:
    """One tool call's guardrails; `extra` collects their decisions for the `mcp_call` log line."""

    def __init__(self, guards: Guardian | None, grant: Grant | None) -> None:
        self.guards = guards
        self.grant = grant
        self.rid = uuid.uuid4().hex
        self.applied: Applied | None = None
        self.extra: dict[str, Any] = {}

    async def arguments(self, forward: dict[str, Any]) -> None:
        """pre_call on the arguments about to go upstream (masked in `forward`), or raises."""
        g = self.grant
        if self.guards is None or g is None:
            return
        data: dict[str, Any] = {"arguments": forward["arguments"]} if "arguments" in forward else {}
        try:
            self.applied = await self.guards.start(None, g.name, g.team, "tools/call", data, self.rid, self.extra,
                                                   g.guardrails)
        except (GuardrailBlocked, Unavailable) as err:
            raise _refusal(err, "arguments") from None
        if "arguments" in data:
            forward["arguments"] = data["arguments"]

    async def result(self, result: dict[str, Any]) -> None:
        """post_call on the tool's result (masked in place), or raises."""
        if self.guards is None or self.applied is None:
            return
        try:
            await self.guards.after(self.applied, "tools/call", result, self.rid)
        except (GuardrailBlocked, Unavailable) as err:
            raise _refusal(err, "result") from None
