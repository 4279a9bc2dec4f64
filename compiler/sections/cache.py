"""The `cache` section and each model group's `cache`: the store of entries, and per group the
effective policy (the section's settings under the group's overrides)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sidegate.compiler.diagnostics import Collector, did_you_mean, join_pointer
from sidegate.runtime.plan import Secret
from sidegate.runtime.plan.cache import (
    CACHE_OPERATIONS,
    Cache,
    CacheBackend,
    CacheMode,
    CachePolicy,
    CacheScope,
    SemanticCache,
)

__all__ = ["CacheSpec", "resolve_cache"]

SecretOf = Callable[[Any, str], "Secret | None"]
_DEFAULTS = {"mode": "exact", "ttl": "1h", "max_entry": "1MiB", "scope": "team", "sampled": False}
_POLICY = ("mode", "ttl", "max_entry", "operations", "scope", "sampled", "threshold")


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """The resolved cache: its store (None when no group is cached) and each cached group's policy."""

    cache: Cache | None
    policies: Mapping[str, CachePolicy]


def _policy(merged: Mapping[str, Any], threshold: float, seconds: Callable[[str], float],
            size: Callable[[str], int]) -> CachePolicy:
    return CachePolicy(
        mode=CacheMode(merged["mode"]),
        ttl=seconds(merged["ttl"]),
        max_entry=size(merged["max_entry"]),
        operations=tuple(op for op in CACHE_OPERATIONS if op in merged.get("operations", CACHE_OPERATIONS)),
        scope=CacheScope(merged["scope"]),
        sampled=bool(merged["sampled"]),
        threshold=float(merged.get("threshold", threshold)),
    )


def _semantic(raw: Mapping[str, Any] | None, names: Mapping[str, str], secret: SecretOf,
              out: Collector) -> SemanticCache | None:
    if raw is None:
        return None
    embedding = str(raw["embedding"])
    if embedding not in names:
        out.error("cache.unknown-embedding-group", "/cache/semantic/embedding",
                  f"'{embedding}' is not a model group or alias of this spec{did_you_mean(embedding, list(names))}")
    qdrant = raw.get("qdrant", {"path": "sidegate-qdrant"})
    return SemanticCache(
        embedding=names.get(embedding, embedding),
        path=qdrant.get("path"),
        url=secret(qdrant["url"], "/cache/semantic/qdrant/url") if "url" in qdrant else None,
        api_key=secret(qdrant["api_key"], "/cache/semantic/qdrant/api_key") if "api_key" in qdrant else None,
        collection=raw.get("collection", "sidegate_cache"),
        max_entries=raw.get("max_entries", 10_000),
    )


def _backend(raw: Mapping[str, Any], store_redis: bool, secret: SecretOf,
             out: Collector) -> tuple[CacheBackend, Secret | None]:
    backend = CacheBackend(raw.get("backend", "memory"))
    redis = secret(raw["redis"], "/cache/redis") if "redis" in raw else None
    if backend is CacheBackend.REDIS:
        if redis is None and not store_redis:
            out.error("cache.redis-missing", "/cache/backend",
                      "the redis backend needs a Redis URL: set cache.redis or store.redis")
    elif "redis" in raw:
        out.warning("cache.redis-unused", "/cache/redis", f"cache.redis is read only by the redis backend "
                    f"(this cache's backend is {backend.value}): remove it or set backend: redis")
        redis = None
    if "max_size" in raw and backend is not CacheBackend.MEMORY:
        out.warning("cache.max-size-unused", "/cache/max_size", f"max_size bounds the memory backend only "
                    f"(this cache's backend is {backend.value}; entries expire by their ttl)")
    return backend, redis


def resolve_cache(spec: Mapping[str, Any], secret: SecretOf, seconds: Callable[[str], float],
                  size: Callable[[str], int], out: Collector) -> CacheSpec:
    """The cache (None when nothing is cached) and the policy of each cached group, by group name."""
    raw: Mapping[str, Any] = spec.get("cache") or {}
    models: Mapping[str, Any] = spec.get("models", {})
    names = {name: name for name in models}
    for name, group in models.items():
        for alias in group.get("aliases", ()):
            names.setdefault(alias, name)
    semantic_raw = raw.get("semantic")
    threshold = float(semantic_raw.get("threshold", 0.9)) if semantic_raw else 0.9
    base = {**_DEFAULTS, **{k: raw[k] for k in _POLICY if k in raw and k != "threshold"}}
    enabled = "cache" in spec and raw.get("enabled", True)
    policies: dict[str, CachePolicy] = {}
    for name, group in models.items():
        own = group.get("cache")
        pointer = join_pointer(join_pointer("/models", name), "cache")
        if own is False or (own is None and not enabled):
            continue
        merged = {**base, **(own if isinstance(own, dict) else {})}
        if merged["mode"] == "semantic" and semantic_raw is None:
            at = pointer + "/mode" if isinstance(own, dict) and "mode" in own else "/cache/mode"
            out.error("cache.semantic-missing", at, "semantic mode needs cache.semantic (the embedding model group "
                      "and where Qdrant keeps vectors)")
        if isinstance(own, dict) and "threshold" in own and merged["mode"] != "semantic":
            out.warning("cache.threshold-unused", pointer + "/threshold",
                        "threshold is read only in semantic mode (this group's mode is exact)")
        policy = _policy(merged, threshold, seconds, size)
        if policy.ttl <= 0:
            out.error("cache.ttl-zero", pointer + "/ttl" if isinstance(own, dict) and "ttl" in own else "/cache/ttl",
                      "ttl must be above 0 (to not cache a group, set its cache: false)")
        policies[name] = policy
    if not policies:
        if "cache" in spec and enabled:
            out.warning("cache.nothing-cached", "/cache", "no model group is cached (each says cache: false)")
        return CacheSpec(None, policies)
    backend, redis = _backend(raw, "redis" in (spec.get("store") or {}), secret, out)
    semantic = _semantic(semantic_raw, names, secret, out)
    max_size = size(raw.get("max_size", "64MiB"))
    for name, policy in policies.items():
        if backend is CacheBackend.MEMORY and policy.max_entry > max_size:
            out.warning("cache.entry-over-size", "/cache/max_size",
                        f"model group '{name}' keeps answers up to {policy.max_entry:,} bytes, over the memory "
                        f"backend's max_size of {max_size:,}: such answers are never cached")
            break
    return CacheSpec(Cache(backend=backend, max_size=max_size, redis=redis, semantic=semantic), policies)

