"""The conversation script the strict fake upstreams answer by (OpenAI and Gemini alike).

A user turn containing `[[call NAME {json}]]` is answered with that tool call, when a tool named
NAME is offered; a turn with tool results (since the last assistant turn) with `Tool said: <results>`; anything else with
`Hello from the fake.`; a request for structured output with a JSON object. The directive is looked for in the last user turn only, so a conversation
moves on once the tool has answered.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Reply", "reply_for"]

_CALL = re.compile(r"\[\[call (\S+) (\{.*?\})\]\]", re.S)


@dataclass(frozen=True)
class Reply:
    text: str
    call: tuple[str, dict[str, Any]] | None = None


def reply_for(turns: list[tuple[str, str]], offered: set[str], schema: Any = None) -> Reply:
    """The answer to a conversation of (kind, text) turns, kind `user`, `tool` or `assistant`; with
    a JSON `schema` (structured output asked for), a JSON object with each string property filled."""
    if isinstance(schema, dict):
        props = schema.get("properties") or {}
        return Reply(json.dumps({k: f"Fake {k}" for k, v in props.items() if v.get("type") == "string"}))
    last_assistant = max((i for i, (kind, _) in enumerate(turns) if kind == "assistant"), default=-1)
    results = [text for kind, text in turns[last_assistant + 1 :] if kind == "tool"]
    if results:
        return Reply("Tool said: " + " | ".join(results))
    last = next((text for kind, text in reversed(turns) if kind == "user"), "")
    match = _CALL.search(last)
    if match and match.group(1) in offered:
        return Reply("", (match.group(1), json.loads(match.group(2))))
    return Reply("Hello from the fake.")
