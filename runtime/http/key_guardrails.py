"""A virtual key's own guardrails (`guardrails: [names]` on `/key/generate` and `/key/update`):
names of the plan's declared guardrails, checked when they are set (an unknown one is a 400)."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any

import orjson

from sidegate.runtime.errors import BadRequest

__all__ = ["key_guardrails"]


def key_guardrails(body: Mapping[str, Any], declared: Collection[str]) -> str:
    """The `guardrails` column for `body` (a JSON list, in the order given, each name once)."""
    value = body.get("guardrails", [])
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise BadRequest("'guardrails' must be a list of guardrail names", param="guardrails")
    for name in value:
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else "" if declared else " (the plan declares none)"
            raise BadRequest(f"guardrail '{name[:100]}' is not declared by this gateway's plan{hint}",
                             param="guardrails", code="unknown_guardrail")
    return orjson.dumps(list(dict.fromkeys(value))).decode()
