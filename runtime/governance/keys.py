"""Virtual keys: generation, hashing, and the in-memory cache the hot path verifies against.

Keys are never stored or logged in clear: the database keeps a SHA-256 hash and a short display
prefix. Requests are checked against the cache only; a background task refreshes it from the
store, so after warm-up no request waits on the database.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KEY_PREFIX", "Grant", "KeyCache", "display_prefix", "hash_key", "looks_like_jwt", "new_key"]

KEY_PREFIX = "sk-sg-"


def new_key() -> str:
    """A fresh random virtual key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def looks_like_jwt(token: str) -> bool:
    """A compact JWS (three base64url parts, a JSON header)."""
    return token.startswith("eyJ") and token.count(".") == 2


def hash_key(key: str) -> str:
    """The key's SHA-256, hex; what the store and the cache index by."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """A short, safe way to show a key (its first characters)."""
    return key[:10] + "..."


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """What a verified key may do."""

    hash: str
    name: str | None
    master: bool = False
    team: str | None = None
    user: str | None = None
    models: frozenset[str] | None = None
    """Model groups it may call; None: all."""
    budget: float | None = None
    budget_period: str | None = None
    budget_soft: float | None = None
    """The share of the budget past which a crossing is logged and counted (spec keys)."""
    budget_refuse_unpriced: bool = False
    """The budget refuses requests a deployment without a price may serve (spec keys)."""
    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None
    expires_at: float | None = None
    revoked: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Free-form key metadata (a JSON object); `mcp` and `a2a` members hold tool and agent permissions."""
    guardrails: tuple[str, ...] = ()
    """Guardrails set on this key through the admin API (they run on its requests, like a spec key's)."""

    def allows(self, group: str) -> bool:
        """Whether this key may call model group `group`."""
        return self.models is None or group in self.models


class KeyCache:
    """Hash -> grant, for every key the gateway accepts (master, spec keys, store keys)."""

    __slots__ = ("_fixed", "_stored")

    def __init__(self, fixed: Iterable[Grant] = ()) -> None:
        self._fixed = {g.hash: g for g in fixed}
        self._stored: dict[str, Grant] = {}

    def set_fixed(self, grants: Iterable[Grant]) -> None:
        """Replace the spec's keys (master and static) after a reload."""
        self._fixed = {g.hash: g for g in grants}

    def lookup(self, key: str) -> Grant | None:
        """The grant for a presented key, or None."""
        if not self._fixed and not self._stored:  # no keys at all: nothing to hash the key for
            return None
        h = hash_key(key)
        return self._fixed.get(h) or self._stored.get(h)

    def replace_stored(self, grants: Iterable[Grant]) -> None:
        """Swap in a fresh snapshot of the store's keys (after a background refresh)."""
        self._stored = {g.hash: g for g in grants}

    def put(self, grant: Grant) -> None:
        """Add or update one stored key right away (this pod's own admin calls)."""
        self._stored = {**self._stored, grant.hash: grant}

    def drop(self, key_hash: str) -> None:
        """Forget one stored key right away."""
        self._stored = {h: g for h, g in self._stored.items() if h != key_hash}

    def all(self) -> list[Grant]:
        """Every grant, spec keys first."""
        return [*self._fixed.values(), *self._stored.values()]

    def stored(self, key_hash: str) -> Grant | None:
        """A store key's grant by hash."""
        return self._stored.get(key_hash)
