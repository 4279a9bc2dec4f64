"""`GET /v1/models` and `/v1/models/{id}` in Anthropic's shape (https://docs.anthropic.com/en/api/models-list),
for clients that send `anthropic-version` or `x-api-key` (the anthropic SDKs, Claude Code)."""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.runtime.plan import ModelGroup, Plan

__all__ = ["anthropic_model", "anthropic_models_body", "wants_anthropic"]

_EPOCH = "1970-01-01T00:00:00Z"
"""Anthropic's answer for a release date it does not know; sidegate's groups have none."""


def wants_anthropic(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request comes from an Anthropic client (it sends `anthropic-version` or `x-api-key`)."""
    return any(k in (b"anthropic-version", b"x-api-key") for k, _ in headers)


def _smallest(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known and len(known) == len(values) else None


def anthropic_model(name: str, group: ModelGroup) -> dict[str, Any]:
    """One `ModelInfo`: `max_input_tokens` / `max_tokens` are the smallest limits among the group's
    targets, when the price table knows them all."""
    info: dict[str, Any] = {"type": "model", "id": name, "display_name": name, "created_at": _EPOCH,
                            "lifecycle": "active"}
    window = _smallest([t.max_input_tokens for t in group.targets])
    output = _smallest([t.max_output_tokens for t in group.targets])
    if window is not None:
        info["max_input_tokens"] = window
    if output is not None:
        info["max_tokens"] = output
    return info


def anthropic_models_body(plan: Plan, names: list[str]) -> bytes:
    """The whole list, one page: group names and aliases (wildcards and globs are patterns)."""
    groups = {g.name: g for g in plan.models}
    groups.update({a: g for g in plan.models for a in g.aliases})
    data = [anthropic_model(n, groups[n]) for n in names]
    return orjson.dumps({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None})
