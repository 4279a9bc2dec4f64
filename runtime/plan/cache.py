"""Plan types of the response cache (`cache` in the spec, and each model group's own `cache`),
re-exported by :mod:`runtime.plan`."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sidegate.runtime.plan.values import Secret

__all__ = ["CACHE_OPERATIONS", "Cache", "CacheBackend", "CacheMode", "CachePolicy", "CacheScope", "SemanticCache"]

CACHE_OPERATIONS = ("chat", "completions", "embeddings", "messages")
"""The operations whose answers can be cached (the Responses API is stateful: never cached)."""


class CacheMode(enum.Enum):
    """How a request finds a cached answer."""

    EXACT = "exact"
    """The same canonical request (hashed)."""
    SEMANTIC = "semantic"
    """A prompt whose embedding is close enough to a cached one's (the rest of the request equal)."""


class CacheBackend(enum.Enum):
    """Where exact entries are kept."""

    MEMORY = "memory"
    """This process's RAM: an LRU bounded by bytes."""
    STORE = "store"
    """The spec's store (sqlite or PostgreSQL): shared by the sidecars using the same database."""
    REDIS = "redis"
    """Redis: shared by every sidecar using it."""


class CacheScope(enum.Enum):
    """Who may receive an entry."""

    TEAM = "team"
    """The key's team (a key without a team: that key alone)."""
    GLOBAL = "global"
    """Every caller of the group."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CachePolicy:
    """One model group's caching, the `cache` section's settings under the group's overrides."""

    mode: CacheMode
    ttl: float
    """Seconds an entry is served."""
    max_entry: int
    """Bytes of the largest answer kept (a larger one is served, not cached)."""
    operations: tuple[str, ...]
    """Which of `CACHE_OPERATIONS` are cached."""
    scope: CacheScope
    sampled: bool
    """Also cache requests that sample (temperature above 0, or none given: providers default to 1)."""
    threshold: float
    """Semantic mode: the lowest cosine similarity that is a hit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SemanticCache:
    """Semantic mode's embedding group and vector store (Qdrant)."""

    embedding: str
    """The model group that embeds prompts (an `embeddings` call through the plan's routing)."""
    path: str | None
    """Qdrant's embedded local mode, on disk at this directory (None: `url`)."""
    url: Secret | None
    """A Qdrant server (may hold references)."""
    api_key: Secret | None
    collection: str
    max_entries: int
    """Vectors kept; past it the oldest are dropped."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Cache:
    """The response cache: where entries are kept; each group's `ModelGroup.cache` says what."""

    backend: CacheBackend
    max_size: int
    """The memory backend's bound, in bytes of keys and answers."""
    redis: Secret | None
    """The redis backend's URL, `cache.redis` (None: `store.redis`)."""
    semantic: SemanticCache | None
