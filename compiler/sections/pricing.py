"""Which price a target is charged at: its own `price` (USD per 1M tokens), else the table entry of
its `base_model` (a custom deployment name priced as a known model), else the table entry of its
upstream model name; and the lint warning for budgeted model groups with a deployment that has no
price (its requests would count as $0 against the budget, or be refused by a fail-closed one)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from sidegate.compiler.data.catalog import ProviderType, price_info
from sidegate.compiler.data.media_prices import media_price
from sidegate.compiler.data.prices import ModelInfo
from sidegate.compiler.diagnostics import Collector
from sidegate.runtime.plan import Price, PriceSource

__all__ = ["MEDIA_UNITS", "PER_MILLION", "check_budgeted_prices", "per_token", "target_price"]

PER_MILLION = 1_000_000.0
MEDIA_UNITS = ("per_image", "per_second", "per_character", "per_search_unit")
"""A price's per-unit fields (USD per unit as declared, not per 1M)."""


def per_token(per_million: float) -> float:
    """USD per token for a price per 1M tokens: the double nearest the decimal value (0.2 -> 2e-07,
    where 0.2 / 1e6 would give 2.0000000000000002e-07)."""
    return float(Decimal(repr(per_million)).scaleb(-6))


def target_price(
    raw: Mapping[str, Any], kind: ProviderType | None, pointer: str, out: Collector, hint: Any,
) -> tuple[ModelInfo | None, Price | None, PriceSource | None]:
    """(table entry for the context window, price, where the price comes from) of one target."""
    model: str = raw["model"]
    base = raw.get("base_model")
    lookup_name = base if base is not None else model
    at = pointer + ("/base_model" if base is not None else "/model")
    info = None
    price_provider = kind.price_provider if kind else None
    media = None
    if kind is not None and price_provider is not None and lookup_name != "*":
        info = price_info(kind, lookup_name)
        media = media_price(kind.price_providers, lookup_name)
        if info is None and media is None and ("price" not in raw or base is not None):
            out.warning("cost.unknown-model", at, f"model '{lookup_name}' is not in the price table for "
                        f"{price_provider}{hint(price_provider, lookup_name)}; its cost and context window are "
                        "unknown" + ("" if base is not None else " (declare price or base_model)"))
    elif base is not None and kind is not None:
        out.warning("cost.unknown-model", at, f"provider '{raw['provider']}' is of a type without a price table "
                    f"to look base_model '{base}' up in; declare price instead")
    declared = raw.get("price")
    if declared is not None:
        cached = declared.get("cached_input")
        price = Price(input=per_token(declared["input"]), output=per_token(declared["output"]),
                      cached_input=None if cached is None else per_token(cached),
                      per_image_by=MappingProxyType(dict(declared.get("per_image_by", {}))),
                      **{unit: declared.get(unit) for unit in MEDIA_UNITS})
        return info, price, PriceSource.SPEC
    source = PriceSource.BASE_MODEL if base is not None else PriceSource.TABLE
    if media is not None:  # a media model: per unit (images, seconds, characters, search units)
        units = {unit: getattr(media, unit) for unit in MEDIA_UNITS}
        return info, Price(input=media.input, output=media.output, cached_input=None,
                           per_image_by=MappingProxyType(dict(media.per_image_by)), **units), source
    if info is None:
        return None, None, None
    price = Price(input=info.input, output=info.output, cached_input=info.cached_input)
    return info, price, source


def check_budgeted_prices(
    groups: Mapping[str, list[tuple[str, str, bool]]], budgeted: list[tuple[str, tuple[str, ...] | None]],
    out: Collector,
) -> None:
    """Warn (once per target) about unpriced deployments of groups a budgeted key or team may call.

    `groups`: group name -> (target pointer, target id, priced) for each target; `budgeted`: (who,
    the groups it may call, None for all)."""
    warned: set[str] = set()
    for who, names in budgeted:
        for name in (names if names is not None else tuple(groups)):
            for pointer, target_id, priced in groups.get(name, ()):
                if priced or pointer in warned:
                    continue
                warned.add(pointer)
                out.warning("cost.unpriced-budgeted", pointer,
                            f"target {target_id} of budgeted model group '{name}' ({who}) has no price: its "
                            "requests cost $0 against the budget (refused where unknown_price: refuse); "
                            "declare price or base_model")
