"""Per-unit prices of media models (`media_prices.json`): images, seconds of audio, characters of
speech input, rerank search units. The token table (`prices.json`) is generated from LiteLLM's data
and keeps only token-priced chat and embedding models; this small table is kept by hand from the
providers' pricing pages and is read once, on first use."""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["MediaPrice", "media_price"]

_UNITS = ("per_image", "per_second", "per_character", "per_search_unit")


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaPrice:
    """A media model's prices: per unit (and per input token where a provider bills tokens)."""

    input: float = 0.0
    output: float = 0.0
    per_image: float | None = None
    per_image_by: Mapping[str, float] = field(default_factory=dict)
    """Per image by `quality/size`, where the price depends on them."""
    per_second: float | None = None
    per_character: float | None = None
    per_search_unit: float | None = None


def _number(entry: dict[str, object], key: str, where: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"media_prices.json: {where}: {key!r} is not a price")
    return float(value)


@functools.cache
def _table() -> dict[str, dict[str, MediaPrice]]:
    resource = importlib.resources.files("sidegate.compiler") / "data" / "media_prices.json"
    raw = json.loads(resource.read_bytes())
    providers = raw.get("providers") if isinstance(raw, dict) else None
    if not isinstance(providers, dict):
        raise ValueError("media_prices.json: missing 'providers' object")
    table: dict[str, dict[str, MediaPrice]] = {}
    for provider, models in providers.items():
        table[provider] = {}
        for name, entry in models.items():
            where = f"{provider}/{name}"
            unknown = set(entry) - {"in", "out", "per_image_by", *_UNITS}
            if unknown:
                raise ValueError(f"media_prices.json: {where}: unknown fields {sorted(unknown)}")
            units = {unit: _number(entry, unit, where) for unit in _UNITS}
            by = entry.get("per_image_by", {})
            kinds = {kind: _number(by, kind, f"{where}/per_image_by") for kind in by}
            table[provider][name] = MediaPrice(input=_number(entry, "in", where) or 0.0,
                                               output=_number(entry, "out", where) or 0.0,
                                               per_image_by={k: v for k, v in kinds.items() if v is not None},
                                               **units)
    return table


def media_price(price_providers: tuple[str, ...], model: str) -> MediaPrice | None:
    """The media price of `model` under the first of `price_providers` that lists it."""
    table = _table()
    for provider in price_providers:
        found = table.get(provider, {}).get(model)
        if found is not None:
            return found
    return None
