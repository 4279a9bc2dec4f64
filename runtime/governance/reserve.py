"""What a request may cost at most, computed at admission: the worst case that budgets and tpm
windows reserve until the request ends (then the real usage replaces it).

Per model group, precomputed once per plan (`bases`): the highest input and output prices and the
largest output limit among every deployment that may serve it (its own targets and those of its
fallback groups), and whether one of them has no price. Per request (`estimate`): the prompt
estimate (about 4 bytes a token, no tokenizer on the hot path) plus `max_completion_tokens` / `max_output_tokens` /
`max_tokens` (else the largest output limit, else the group's `reserve_output_tokens`), priced
at those highest prices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from sidegate.runtime.plan import ModelGroup, Plan, Target

__all__ = ["Basis", "bases", "estimate"]


@dataclass(frozen=True, slots=True)
class Basis:
    """A group's worst-case prices and output length."""

    input: float
    """The highest input price per token among the deployments that may serve the group."""
    output: float
    """The highest output price per token."""
    output_limit: int | None
    """The largest output limit, or None when a deployment's limit is unknown."""
    default_output: int
    """Output tokens reserved for a request without max_tokens (the largest known limit, or the
    group's `reserve_output_tokens` when one is unknown)."""
    unpriced: bool
    """A deployment that may serve the group has no price."""
    per_image: float = 0.0
    """The highest price per image (the media prices below likewise: 0 where none is set)."""
    per_character: float = 0.0
    per_search_unit: float = 0.0


def _serving(group: ModelGroup, groups: Mapping[str, ModelGroup]) -> list[Target]:
    names = (group.name, *group.fallbacks, *group.context_window_fallbacks, *group.content_policy_fallbacks)
    return [t for n in dict.fromkeys(names) if n in groups for t in groups[n].targets]


def bases(plan: Plan) -> dict[str, Basis]:
    """Group name -> its worst-case basis."""
    groups = {g.name: g for g in plan.models}
    out: dict[str, Basis] = {}
    for g in plan.models:
        targets = _serving(g, groups)
        priced = [t.price for t in targets if t.price is not None]
        limits = [t.max_output_tokens for t in targets]
        known = [n for n in limits if n is not None]
        limit = max(known) if known and len(known) == len(limits) else None
        out[g.name] = Basis(
            input=max((p.input for p in priced), default=0.0),
            output=max((p.output for p in priced), default=0.0),
            output_limit=limit,
            default_output=limit if limit is not None else max([g.reserve_output_tokens, *known]),
            unpriced=len(priced) < len(targets),
            per_image=max((x for p in priced for x in (p.per_image or 0.0, *p.per_image_by.values())), default=0.0),
            per_character=max((p.per_character or 0.0 for p in priced), default=0.0),
            per_search_unit=max((p.per_search_unit or 0.0 for p in priced), default=0.0),
        )
    return out


def _prompt_bytes(data: Mapping[str, Any]) -> int:
    size = len(orjson.dumps(data.get("messages", data.get("prompt", data.get("input", "")))))
    system = data.get("system")
    return size + (len(orjson.dumps(system)) if system is not None else 0)


def _rerank_bytes(data: Mapping[str, Any]) -> int:
    """A rerank's text as token-billing rerankers count it (Voyage: the query once per document, and
    each document)."""
    docs = data.get("documents")
    docs = docs if isinstance(docs, list) else []
    texts = [d.get("text", d) if isinstance(d, dict) else d for d in docs]
    return len(str(data.get("query", "")).encode()) * len(docs) + sum(len(orjson.dumps(t)) for t in texts)


_MEDIA = frozenset({"images", "image_edits", "speech", "transcriptions", "translations", "moderations", "rerank"})


def _media_worst(basis: Basis, data: Mapping[str, Any], op: str) -> float:
    """USD of a media request's units at the highest prices: its images (`n`), its speech input's
    characters, its rerank search units (a query over up to 100 documents each). A transcript's
    seconds are known only from its answer (nothing is reserved for them)."""
    if op in ("images", "image_edits"):
        n = data.get("n", 1)
        try:
            count = max(1, int(n))
        except (TypeError, ValueError):
            count = 1
        return min(count, 10) * basis.per_image
    if op == "speech":
        return len(str(data.get("input", ""))) * basis.per_character
    if op == "rerank":
        docs = data.get("documents")
        return (1 + (len(docs) - 1) // 100 if isinstance(docs, list) and docs else 1) * basis.per_search_unit
    return 0.0


def estimate(basis: Basis, data: Mapping[str, Any], op: str) -> tuple[int, float, bool]:
    """(tokens, USD, unpriced): what a request may use at most, at the priced deployments' highest
    prices, and whether a deployment that may serve it has no price."""
    prompt = (_rerank_bytes(data) if op == "rerank" else _prompt_bytes(data)) // 4
    if op in _MEDIA:  # no output tokens; the units the answer is priced by, where the request tells them
        return prompt, prompt * basis.input + _media_worst(basis, data, op), basis.unpriced
    if op == "embeddings":
        output = 0
    else:
        asked = data.get("max_completion_tokens", data.get("max_tokens", data.get("max_output_tokens")))
        if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
            output = asked if basis.output_limit is None else min(asked, basis.output_limit)
        else:
            output = basis.default_output
    return prompt + output, prompt * basis.input + output * basis.output, basis.unpriced
