"""`sidegate diff OLD NEW`: what a change to a spec (or plan) does to routing, in words, for review.

Both sides are compared as plans (a spec is compiled first), so formatting, comments and key order
never show up: only what the sidecar would do differently. Model groups are matched by name and
their targets by id (`provider/model`); a weight change is also told as the share of requests it
moves. Everything else in the plan (providers, server, store, and whatever sections the plan grows)
is compared field by field, so no change goes unmentioned.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sidegate.runtime.plan import Plan
from sidegate.runtime.plan.canonical import digest, to_json_obj

__all__ = ["describe_changes"]

_SECONDS = frozenset(
    {"timeout", "drain_timeout", "connect_timeout", "hedge_after", "backoff", "max_backoff", "window", "duration"}
)
_SECONDS |= {"interval", "latency", "latency_per_token", "first_byte_timeout", "idle_timeout", "max_retry_after"}
_CAPS = ("rpm", "tpm", "max_parallel")


def _is_secret(value: object) -> bool:
    return isinstance(value, Mapping) and set(value) == {"parts"} and isinstance(value["parts"], list)


def _secret(value: Mapping[str, Any]) -> str:
    shown = {"env": "${{{}}}", "file": "{{file:{}}}", "text": "{}"}
    return "".join(shown.get(p.get("source"), "{}").format(p.get("value")) for p in value["parts"])


def _show(key: str, value: object) -> str:
    """A plan value in words: seconds as durations, secrets as their references, the rest as JSON."""
    if value is None:
        return "none"
    if key in _SECONDS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g}s"
    if _is_secret(value):
        assert isinstance(value, Mapping)
        return _secret(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    """Nested mappings as dotted paths (lists and secrets stay whole; headers by name)."""
    if isinstance(value, list) and value and all(isinstance(v, Mapping) and set(v) == {"name", "value"} for v in value):
        value = {v["name"]: v["value"] for v in value}
    if isinstance(value, Mapping) and not _is_secret(value) and value:
        out: dict[str, object] = {}
        for key in value:
            out.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _fields(old: object, new: object, skip: Sequence[str] = ()) -> list[str]:
    """``path: old -> new`` for every changed field of two plan values."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for path in sorted(set(a) | set(b)):
        if path.split(".", 1)[0] in skip or a.get(path) == b.get(path):
            continue
        key = path.rsplit(".", 1)[-1]
        if path not in a:
            lines.append(f"{path}: {_show(key, b[path])} (new)")
        elif path not in b:
            lines.append(f"{path}: {_show(key, a[path])} (gone)")
        else:
            lines.append(f"{path}: {_show(key, a[path])} -> {_show(key, b[path])}")
    return lines


def _shares(targets: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each target's share of its tier's requests, by weight."""
    totals: dict[object, float] = {}
    for t in targets:
        totals[t.get("tier", 0)] = totals.get(t.get("tier", 0), 0.0) + float(t["weight"])
    return {t["id"]: float(t["weight"]) / totals[t.get("tier", 0)] for t in targets}


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%".replace(".0%", "%")


def _targets(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[str]:
    before, after = {t["id"]: t for t in old}, {t["id"]: t for t in new}
    share_before, share_after = _shares(old), _shares(new)
    lines = []
    for tid, t in after.items():
        if tid not in before:
            caps = ", ".join(f"{c} {t[c]}" for c in _CAPS if t.get(c) is not None)
            caps = f", caps {caps}" if caps else ""
            lines.append(f"target {tid} added: {_pct(share_after[tid])} of requests{caps}")
    for tid in before:
        if tid not in after:
            lines.append(f"target {tid} removed (it had {_pct(share_before[tid])} of requests)")
    for tid, t in after.items():
        if tid not in before:
            continue
        was = before[tid]
        if share_before[tid] != share_after[tid] or was["weight"] != t["weight"]:
            moved = f"{_pct(share_before[tid])} -> {_pct(share_after[tid])} of requests"
            if was["weight"] == t["weight"]:
                lines.append(f"target {tid}: {moved} (same weight, other targets changed)")
            else:
                lines.append(f"target {tid}: weight {_show('', was['weight'])} -> {_show('', t['weight'])} ({moved})")
        for cap in _CAPS:
            if was.get(cap) != t.get(cap):
                old_cap, new_cap = was.get(cap), t.get(cap)
                change = f"{old_cap} -> {new_cap}" if old_cap and new_cap else f"{new_cap} (new)"
                if not new_cap:
                    change = f"removed (was {old_cap})"
                lines.append(f"target {tid}: {cap} cap {change}")
        lines += [f"target {tid}: {line}" for line in _fields(was, t, skip=("weight", "id", *_CAPS))]
    common = [tid for tid in after if tid in before]
    if [tid for tid in before if tid in after] != common:
        lines.append("targets reordered: " + ", ".join(common))
    return lines


def _groups(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[str]:
    before, after = {g["name"]: g for g in old}, {g["name"]: g for g in new}
    lines = []
    for name, g in after.items():
        if name not in before:
            served = ", ".join(t["id"] for t in g["targets"])
            aliases = f" (aliases: {', '.join(g['aliases'])})" if g.get("aliases") else ""
            lines.append(f"model {name} added{aliases}: served by {served}")
    for name in before:
        if name not in after:
            lines.append(f"model {name} removed: clients asking for it get 404 model_not_found")
    for name, g in after.items():
        if name not in before:
            continue
        was = before[name]
        changes = _targets(was["targets"], g["targets"])
        for key in ("aliases", "fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
            gone = [a for a in was.get(key) or () if a not in (g.get(key) or ())]
            added = [a for a in g.get(key) or () if a not in (was.get(key) or ())]
            if added:
                changes.append(f"{key}: {', '.join(added)} added")
            if gone:
                changes.append(f"{key}: {', '.join(gone)} removed")
            if not added and not gone and was.get(key) != g.get(key):
                changes.append(f"{key} reordered: {', '.join(g[key])}")
        skip = ("name", "targets", "aliases", "fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
        changes += _fields(was, g, skip=skip)
        if changes:
            lines.append(f"model {name}:")
            lines += [f"  {c}" for c in changes]
    return lines


def _providers(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[str]:
    before, after = {p["name"]: p for p in old}, {p["name"]: p for p in new}
    lines = [f"provider {n} added ({p['type']}, {p['base_url']})" for n, p in after.items() if n not in before]
    lines += [f"provider {n} removed" for n in before if n not in after]
    for name, p in after.items():
        if name in before:
            changes = _fields(before[name], p, skip=("name",))
            if changes:
                lines.append(f"provider {name}:")
                lines += [f"  {c}" for c in changes]
    return lines


def describe_changes(old: Plan, new: Plan) -> list[str]:
    """What changes from ``old`` to ``new``, one line per change (empty when the plans are the same)."""
    if digest(old) == digest(new):
        return []
    a, b = to_json_obj(old), to_json_obj(new)
    lines = _groups(a["models"], b["models"]) + _providers(a["providers"], b["providers"])
    for section in sorted((set(a) | set(b)) - {"models", "providers"}):
        before, after = a.get(section), b.get(section)
        if not isinstance(before, Mapping) or not isinstance(after, Mapping):
            if before != after:
                lines.append(f"{section}: {_show(section, before)} -> {_show(section, after)}")
            continue
        changes = _fields(before, after)
        if changes:
            lines.append(f"{section}:")
            lines += [f"  {c}" for c in changes]
    return lines or [f"the plans differ ({digest(old)} -> {digest(new)})"]
