"""Routing policy in the compiler: strategies, retries, cooldowns, health probes, tiers, and the
fallback graph (references, cycles at file:line:col, chains flattened for the plan)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidegate.compiler.diagnostics import Collector, did_you_mean, join_pointer
from sidegate.runtime.plan import CooldownPolicy, HealthProbe, RetryOn, RetryPolicy, Strategy

__all__ = [
    "FALLBACK_DEPTH",
    "FALLBACK_KINDS",
    "Fallback",
    "Policies",
    "check_fallbacks",
    "derive_weights",
    "flatten_fallbacks",
    "health",
    "policies",
]

FALLBACK_DEPTH = 3
"""How many levels of fallbacks-of-fallbacks a chain follows."""

FALLBACK_KINDS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")


@dataclass(frozen=True, slots=True)
class Fallback:
    """One fallback reference as written: the target group and where it stands."""

    name: str
    pointer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Policies:
    """A group's resolved routing policy (its own settings over the defaults)."""

    strategy: Strategy
    retry: RetryPolicy
    cooldown: CooldownPolicy
    hedge_after: float | None
    fallbacks: Mapping[str, tuple[Fallback, ...]]
    """Fallback kind -> references as written."""


def _retry(raw: Mapping[str, Any], base: RetryPolicy, seconds: Any) -> RetryPolicy:
    return RetryPolicy(
        attempts=raw.get("attempts", base.attempts),
        backoff=seconds(raw["backoff"]) if "backoff" in raw else base.backoff,
        max_backoff=seconds(raw["max_backoff"]) if "max_backoff" in raw else base.max_backoff,
        on=tuple(RetryOn(str(v)) for v in raw["on"]) if "on" in raw else base.on,
        max_retry_after=seconds(raw["max_retry_after"]) if "max_retry_after" in raw else base.max_retry_after,
    )


def _cooldown(raw: Mapping[str, Any], base: CooldownPolicy, seconds: Any) -> CooldownPolicy:
    return CooldownPolicy(
        failures=raw.get("failures", base.failures),
        window=seconds(raw["window"]) if "window" in raw else base.window,
        duration=seconds(raw["duration"]) if "duration" in raw else base.duration,
        error_rate=float(raw["error_rate"]) if "error_rate" in raw else base.error_rate,
        min_requests=raw.get("min_requests", base.min_requests),
        keep_last=raw.get("keep_last", base.keep_last),
    )


DEFAULT_RETRY = RetryPolicy(attempts=2, backoff=0.2, max_backoff=5.0, on=tuple(RetryOn), max_retry_after=5.0)
DEFAULT_COOLDOWN = CooldownPolicy(failures=3, window=60.0, duration=30.0, error_rate=None, min_requests=10,
                                  keep_last=True)


def policies(
    group: Mapping[str, Any], defaults: Mapping[str, Any], pointer: str, seconds: Any
) -> Policies:
    """The group's policy: group settings over `defaults` over the built-in defaults."""
    retry = _retry(defaults.get("retry", {}), DEFAULT_RETRY, seconds)
    cooldown = _cooldown(defaults.get("cooldown", {}), DEFAULT_COOLDOWN, seconds)
    return Policies(
        strategy=Strategy(group.get("strategy", defaults.get("strategy", "weighted"))),
        retry=_retry(group.get("retry", {}), retry, seconds),
        cooldown=_cooldown(group.get("cooldown", {}), cooldown, seconds),
        hedge_after=seconds(group["hedge_after"]) if "hedge_after" in group else None,
        fallbacks={
            kind: tuple(Fallback(n, f"{pointer}/{kind}/{i}") for i, n in enumerate(group.get(kind, ())))
            for kind in FALLBACK_KINDS
        },
    )


def health(raw: Mapping[str, Any] | None, seconds: Any) -> HealthProbe | None:
    """A provider's active probe settings."""
    if raw is None:
        return None
    return HealthProbe(interval=seconds(raw["interval"]), timeout=seconds(raw.get("timeout", "5s")))


def derive_weights(targets: Sequence[Mapping[str, Any]]) -> list[float]:
    """Weights as written; when no target of the group sets one, in proportion to rpm (or tpm)
    caps if every target has one, else equal."""
    if any("weight" in t for t in targets):
        return [float(t.get("weight", 1)) for t in targets]
    for cap in ("rpm", "tpm"):
        if targets and all(cap in t for t in targets):
            return [float(t[cap]) for t in targets]
    return [1.0] * len(targets)


def check_fallbacks(
    names: Mapping[str, Policies], wildcards: set[str], aliases: Mapping[str, str], out: Collector
) -> None:
    """Every fallback names a non-wildcard group (or alias), not itself; no cycles within a kind."""
    for kind in FALLBACK_KINDS:
        edges: dict[str, list[Fallback]] = {}
        for name, pol in names.items():
            for ref in pol.fallbacks[kind]:
                target = aliases.get(ref.name, ref.name)
                if target not in names:
                    hint = did_you_mean(ref.name, [*names, *aliases])
                    out.error("ref.unknown-model", ref.pointer, f"'{ref.name}' is not a model group{hint}")
                elif target in wildcards:
                    out.error("route.wildcard-fallback", ref.pointer, f"'{ref.name}' is a wildcard group; "
                              "a fallback must name a model group clients can ask for")
                elif target == name:
                    out.error("route.fallback-cycle", ref.pointer, f"model group '{name}' falls back to itself")
                else:
                    edges.setdefault(name, []).append(Fallback(target, ref.pointer))
        _report_cycles(edges, kind, out)


def _report_cycles(edges: Mapping[str, list[Fallback]], kind: str, out: Collector) -> None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    reported: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for ref in edges.get(node, ()):
            if state.get(ref.name) == 1 and ref.pointer not in reported:
                cycle = [*path[path.index(ref.name):], ref.name] if ref.name in path else [node, ref.name]
                reported.add(ref.pointer)
                out.error("route.fallback-cycle", ref.pointer,
                          f"{kind} form a cycle: {' -> '.join(cycle)}")
            elif ref.name not in state:
                visit(ref.name, [*path, ref.name])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def flatten_fallbacks(
    names: Mapping[str, Policies], aliases: Mapping[str, str]
) -> dict[str, dict[str, tuple[str, ...]]]:
    """Group -> kind -> the ordered chain of groups to try: its fallbacks, depth-first, each
    followed by its own (to FALLBACK_DEPTH levels), without repeats or the group itself."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for name in names:
        out[name] = {}
        for kind in FALLBACK_KINDS:
            chain: list[str] = []

            def walk(node: str, depth: int, kind: str = kind, chain: list[str] = chain, root: str = name) -> None:
                if depth > FALLBACK_DEPTH:
                    return
                for ref in names[node].fallbacks[kind]:
                    target = aliases.get(ref.name, ref.name)
                    if target in names and target != root and target not in chain:
                        chain.append(target)
                        walk(target, depth + 1)

            walk(name, 1)
            out[name][kind] = tuple(chain)
    return out


def pointer_of(group: str) -> str:
    """The JSON pointer of a model group."""
    return join_pointer("/models", group)
