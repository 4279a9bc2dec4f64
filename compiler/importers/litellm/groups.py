"""LiteLLM config -> sidegate spec, part three: the deployments of one model group, as a whole.

LiteLLM decides among a group's deployments in two steps, and each becomes something explicit:
- `order` (lowest first; deployments without one come last) -> priority tiers, when the schema has
  them, else only the first tier is kept and the others are reported;
- `simple-shuffle` (the default strategy) weighs by `weight` when the first deployment has one,
  else by `rpm`, else by `tpm` (a missing value counts 0) -> explicit weights.
The same deployment listed twice, and deployments LiteLLM would never pick (weight 0), are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidegate.compiler.importers.litellm.settings import Draft, duration

__all__ = ["Deployment", "ProviderKey", "settle_group"]


@dataclass(frozen=True, slots=True)
class ProviderKey:
    """What makes two deployments share a sidegate provider."""

    type: str
    base_url: str | None
    api_key: str | None
    api_version: str | None
    headers: tuple[tuple[str, str], ...]
    native: tuple[tuple[str, Any], ...] = ()
    """Fields of the native types (region, project, credentials, aws_profile), in spec order."""


@dataclass
class Deployment:
    """One translated `model_list` entry."""

    index: int
    pointer: str
    group: str
    provider: ProviderKey
    model: str
    params: Mapping[str, Any]
    """litellm_params, with the credential's values merged in."""
    target: dict[str, Any] = field(default_factory=dict)
    """The target's own fields (rpm, tpm, max_parallel, extra_body, then weight and tier)."""
    key_note: str | None = None
    notes: list[str] = field(default_factory=list)


def _seconds(text: str) -> float:
    return float(text[:-2]) / 1000 if text.endswith("ms") else float(text[:-1])


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return 0.0
    return float(value)


def _tiers(draft: Draft, name: str, deployments: list[Deployment], *, shuffle: bool) -> list[Deployment]:
    orders = [d.params.get("order") for d in deployments]
    ranks = sorted({o for o in orders if isinstance(o, int) and not isinstance(o, bool)})
    tiers = [ranks.index(o) if o in ranks else len(ranks) for o in orders]
    if len(set(tiers)) < 2:
        return deployments
    f = draft.features
    if "target.tier" in f and "group.strategy" in f and "priority" in f.strategies:
        if not shuffle:
            first = next(d for d in deployments if d.params.get("order") is not None)
            message = f"'{name}' picks by order (priority tiers), then by weight within a tier, not by routing_strategy"
            draft.skip(f"{first.pointer}/litellm_params/order", message, "litellm.assumed")
        draft.groups[name]["strategy"] = "priority"
        draft.note(("models", name, "strategy"), "from litellm_params.order: the lowest order is tried first")
        for d, tier in zip(deployments, tiers, strict=True):
            d.target["tier"] = tier
        return deployments
    for d, tier in zip(deployments, tiers, strict=True):
        if tier:
            message = f"a backup deployment of '{name}' (a higher order) needs priority tiers, which sidegate lacks"
            draft.skip(f"{d.pointer}/litellm_params", message + "; left out")
    return [d for d, tier in zip(deployments, tiers, strict=True) if tier == 0]


def _weights(draft: Draft, name: str, deployments: list[Deployment]) -> list[Deployment]:
    by_tier: dict[int, list[Deployment]] = {}
    for d in deployments:
        by_tier.setdefault(d.target.get("tier", 0), []).append(d)
    dropped: list[Deployment] = []
    for members in by_tier.values():
        key = next((k for k in ("weight", "rpm", "tpm") if members[0].params.get(k) is not None), None)
        if key is None:
            continue
        values = [_number(d.params.get(key)) for d in members]
        for d, value in zip(members, values, strict=True):
            if value <= 0:
                message = f"this deployment of '{name}' has no {key} while the others have one: LiteLLM never picks it"
                draft.skip(f"{d.pointer}/litellm_params", message + "; left out", "litellm.invalid")
                dropped.append(d)
            elif len(set(values)) > 1:
                d.target["weight"] = int(value) if value.is_integer() else value
                if key != "weight":
                    d.notes.append(
                        f"weight = its {key}: LiteLLM's simple-shuffle weighs by {key} when no weight is set"
                    )
    return [d for d in deployments if d not in dropped]


def settle_group(draft: Draft, name: str, deployments: list[Deployment], *, shuffle: bool) -> list[Deployment]:
    """Tiers, weights (for ``shuffle``, LiteLLM's default strategy), timeout and duplicates of one
    group; returns the deployments kept, in their order."""
    draft.groups.setdefault(name, {})
    kept: list[Deployment] = []
    seen: set[tuple[ProviderKey, str]] = set()
    for d in deployments:
        if (d.provider, d.model) in seen:
            draft.skip(d.pointer, f"the same deployment is already in '{name}'; left out", "litellm.invalid")
        else:
            seen.add((d.provider, d.model))
            kept.append(d)
    kept = _tiers(draft, name, kept, shuffle=shuffle)
    if shuffle:
        kept = _weights(draft, name, kept)
    timeouts = sorted({t for d in kept if (t := duration(d.params.get("timeout"))) is not None}, key=_seconds)
    if timeouts:
        draft.groups[name]["timeout"] = timeouts[-1]
        longest = " (the longest of its deployments)" if len(timeouts) > 1 else ""
        draft.note(("models", name, "timeout"), f"from litellm_params.timeout{longest}; it covers retries too")
    return kept
