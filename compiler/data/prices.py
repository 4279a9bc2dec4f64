"""Model price and context-window lookup against the bundled table ``compiler/data/prices.json``.

The table is generated from LiteLLM's price data by :mod:`compiler.data.pricegen` (see ``NOTICE``).
It is read once, on first use, and kept in memory; lookups are plain dictionary reads.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FALLBACK_PROVIDER", "ModelInfo", "known_models", "lookup"]

FALLBACK_PROVIDER = "openai"
"""The provider whose table answers a lookup made without a price provider."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """Prices (USD per token) and token limits of one model."""

    input: float
    """Price of one input (prompt) token."""
    output: float
    """Price of one output (completion) token."""
    cached_input: float | None
    """Price of one cached input token, or None when the provider lists no cache price."""
    max_input_tokens: int | None
    """Context window for input, or None when unknown."""
    max_output_tokens: int | None
    """Maximum output tokens, or None when unknown."""
    mode: str
    """LiteLLM mode: ``chat``, ``completion``, ``embedding`` or ``responses``."""
    reasoning: bool = False
    """Takes reasoning controls (``reasoning_effort`` / thinking)."""
    vision: bool = False
    """Reads images."""
    pdf: bool = False
    """Reads PDF input."""


def _float(entry: Mapping[str, object], key: str, where: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"prices.json: {where}: {key!r} is not a number")
    return float(value)


def _int(entry: Mapping[str, object], key: str, where: str) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"prices.json: {where}: {key!r} is not an integer")
    return value


def _model_info(entry: object, where: str) -> ModelInfo:
    if not isinstance(entry, dict):
        raise ValueError(f"prices.json: {where}: expected an object")
    price_in = _float(entry, "in", where)
    price_out = _float(entry, "out", where)
    mode = entry.get("mode")
    if price_in is None or price_out is None or not isinstance(mode, str):
        raise ValueError(f"prices.json: {where}: 'in', 'out' and 'mode' are required")
    return ModelInfo(
        input=price_in,
        output=price_out,
        cached_input=_float(entry, "cached_in", where),
        max_input_tokens=_int(entry, "max_in", where),
        max_output_tokens=_int(entry, "max_out", where),
        mode=mode,
        reasoning=entry.get("reasoning") is True,
        vision=entry.get("vision") is True,
        pdf=entry.get("pdf") is True,
    )


@functools.cache
def _table() -> dict[str, dict[str, ModelInfo]]:
    """Load and validate the bundled table (once per process)."""
    resource = importlib.resources.files("sidegate.compiler") / "data" / "prices.json"
    raw: object = json.loads(resource.read_bytes())
    providers = raw.get("providers") if isinstance(raw, dict) else None
    if not isinstance(providers, dict):
        raise ValueError("prices.json: missing 'providers' object")
    table: dict[str, dict[str, ModelInfo]] = {}
    for provider, models in providers.items():
        if not isinstance(models, dict):
            raise ValueError(f"prices.json: provider {provider!r}: expected an object")
        table[provider] = {name: _model_info(entry, f"{provider}/{name}") for name, entry in models.items()}
    return table


@functools.cache
def _names() -> dict[str, tuple[str, ...]]:
    """Sorted model names per provider, built once from the table."""
    return {provider: tuple(sorted(models)) for provider, models in _table().items()}


def lookup(price_provider: str | None, model: str) -> ModelInfo | None:
    """Return the prices and limits of ``model`` under ``price_provider``, or None if unknown.

    With a provider, ``model`` is tried as given and then, if it starts with ``<provider>/``,
    with that prefix removed. Without a provider (None), only an exact match under
    :data:`FALLBACK_PROVIDER` is accepted.
    """
    table = _table()
    if price_provider is None:
        return table.get(FALLBACK_PROVIDER, {}).get(model)
    models = table.get(price_provider)
    if models is None:
        return None
    info = models.get(model)
    if info is None:
        prefix = price_provider + "/"
        if model.startswith(prefix):
            info = models.get(model[len(prefix) :])
    return info


def known_models(price_provider: str | None) -> tuple[str, ...]:
    """Return the sorted model names known for ``price_provider`` (None means the fallback).

    Empty when the provider is unknown. Meant for "did you mean" suggestions.
    """
    return _names().get(FALLBACK_PROVIDER if price_provider is None else price_provider, ())
