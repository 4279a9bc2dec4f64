"""The provider catalog (``compiler/data/providers.json``): what each provider ``type`` means.

A type names its adapter family, default base URL, how the key is sent, the environment variable
its key conventionally lives in, its docs, and the price-table provider(s) its models are priced
under (a list when the table splits the type's models across several, tried in order).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidegate.compiler.data.prices import ModelInfo, lookup
from sidegate.runtime.plan import AuthScheme, Family

__all__ = ["ProviderType", "load_catalog", "price_info"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderType:
    """One catalog entry."""

    name: str
    family: Family
    base_url: str | None
    """Default base URL; None when every spec must give its own (azure, openai-compatible)."""
    auth: AuthScheme | None
    """How the API key is sent; None when the upstream takes no key."""
    key_env: str | None
    """The environment variable the provider's own tools read the key from."""
    docs: str
    price_providers: tuple[str, ...]
    """The price table's providers for this type's models, tried in order; empty when prices are not known."""
    stream_usage: bool
    requires_key: bool

    @property
    def price_provider(self) -> str | None:
        """The first price-table provider (names the table in messages), or None."""
        return self.price_providers[0] if self.price_providers else None


def _entry(name: str, raw: Any) -> ProviderType:
    if not isinstance(raw, dict):
        raise ValueError(f"providers.json: type {name!r}: expected an object")
    auth = raw.get("auth")
    prices = raw.get("price_provider")
    if prices is not None and not isinstance(prices, str | list):
        raise ValueError(f"providers.json: type {name!r}: price_provider must be a string or a list")
    try:
        return ProviderType(
            name=name,
            family=Family(raw["family"]),
            base_url=raw.get("base_url"),
            auth=None if auth is None else AuthScheme(header=auth["header"], prefix=auth["prefix"]),
            key_env=raw.get("key_env"),
            docs=raw.get("docs") or "",
            price_providers=() if prices is None else (prices,) if isinstance(prices, str) else tuple(prices),
            stream_usage=bool(raw.get("stream_usage", True)),
            requires_key=bool(raw.get("requires_key", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"providers.json: type {name!r}: {exc}") from None


@functools.cache
def load_catalog() -> Mapping[str, ProviderType]:
    """Every provider type, by name (read once per process)."""
    resource = importlib.resources.files("sidegate.compiler") / "data" / "providers.json"
    raw = json.loads(resource.read_bytes())
    types = raw.get("types") if isinstance(raw, dict) else None
    if not isinstance(types, dict):
        raise ValueError("providers.json: missing 'types' object")
    return {name: _entry(name, entry) for name, entry in sorted(types.items())}


def price_info(kind: ProviderType, model: str) -> ModelInfo | None:
    """Prices and limits of `model` under the first of the type's price-table providers that knows it."""
    for provider in kind.price_providers:
        info = lookup(provider, model)
        if info is not None:
            return info
    return None
