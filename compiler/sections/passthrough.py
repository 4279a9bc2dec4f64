"""The `passthrough` section: provider name -> path prefix, checked (an unknown provider, a provider
whose requests must be signed, a prefix that clashes with another or with sidegate's own routes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidegate.compiler.diagnostics import Collector, did_you_mean, join_pointer
from sidegate.runtime.plan import Family, PassthroughRoute

__all__ = ["RESERVED_SEGMENTS", "resolve_passthrough"]

RESERVED_SEGMENTS = frozenset({
    "v1", "v1beta", "health", "mcp", "a2a", "key", "team", "user", "spend", "cache", "models", "chat",
    "completions", "embeddings", "messages", "responses", "metrics", "images", "audio", "moderations", "rerank",
    "files", "batches",
})
"""First path segments sidegate serves itself: no pass-through prefix may start with one."""

_SIGNED = frozenset({Family.VERTEX, Family.BEDROCK, Family.MOCK})


def _under(a: str, b: str) -> bool:
    """Whether prefix `a` equals `b` or lies under it (segment-wise)."""
    return a == b or a.startswith(b + "/")


def resolve_passthrough(spec: Mapping[str, Any], families: Mapping[str, Family | None], metrics_path: str,
                        out: Collector) -> tuple[PassthroughRoute, ...]:
    """The pass-through routes, longest prefix first; problems go to `out`.

    `families` maps each provider of the spec to its adapter family (None: an unknown type, already
    reported); `metrics_path` is the Prometheus route (a prefix may not cover it either).
    """
    raw: Mapping[str, str] = spec.get("passthrough", {})
    routes: list[PassthroughRoute] = []
    seen: dict[str, str] = {}
    for name, prefix in sorted(raw.items()):
        pointer = join_pointer("/passthrough", name)
        if name not in families:
            out.error("passthrough.unknown-provider", pointer,
                      f"'{name}' is not a provider of this spec{did_you_mean(name, list(families))}", at_key=True)
            continue
        family = families[name]
        if family in _SIGNED:
            out.error("passthrough.unsupported-provider", pointer,
                      f"provider '{name}' is of the {family.value if family else ''} family: its requests are signed "
                      "or served in-process, so it cannot be passed through (use an API-key provider)")
            continue
        first = prefix.split("/")[1]
        if first in RESERVED_SEGMENTS or _under(metrics_path.rstrip("/") or "/", prefix):
            out.error("passthrough.reserved-prefix", pointer,
                      f"prefix '{prefix}' clashes with sidegate's own routes (/{first}/...); choose another")
            continue
        clash = next((other for p, other in seen.items() if _under(prefix, p) or _under(p, prefix)), None)
        if clash is not None:
            out.error("passthrough.prefix-clash", pointer,
                      f"prefix '{prefix}' overlaps the prefix of provider '{clash}' ({raw[clash]}): each request "
                      "must belong to one provider")
            continue
        seen[prefix] = name
        routes.append(PassthroughRoute(provider=name, prefix=prefix))
    return tuple(sorted(routes, key=lambda r: (-len(r.prefix), r.prefix)))
