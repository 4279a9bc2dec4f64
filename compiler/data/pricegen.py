"""Generate the compact model price/context table from LiteLLM's price data.

Usage::

    python -m sidegate.compiler.data.pricegen SOURCE [-o OUT] [--generated DATE] [--version VERSION]

SOURCE is LiteLLM's ``model_prices_and_context_window_backup.json`` (MIT, Copyright (c) 2023
Berri AI; see ``NOTICE``). OUT defaults to ``compiler/data/prices.json`` next to this module.

The output is deterministic (sorted keys, fixed ``generated`` date, one model per line), so
re-running on the same source gives byte-identical output. Rules:

* ``sample_spec``, entries without a ``litellm_provider`` and entries whose ``mode`` is not one
  of :data:`MODES` are skipped.
* Prices are USD per token. An entry is skipped when it has no per-token input price, or no
  per-token output price unless it is an embedding model (those produce no output tokens, so a
  missing output price is 0.0). Entries priced only per second, per query or per video are
  therefore left out rather than listed as free.
* ``cached_in`` (``cache_read_input_token_cost``) is omitted when absent or zero; ``max_in`` /
  ``max_out`` are omitted when absent or not a positive integer.
* ``reasoning``, ``vision`` and ``pdf`` (true, else omitted) come from ``supports_reasoning``,
  ``supports_vision`` and ``supports_pdf_input``: what the Anthropic Messages translation needs to
  know of a target (see ``runtime.plan.Capabilities``).
* A ``<provider>/`` prefix on the key is stripped when it equals the entry's provider; when two
  keys then collapse to the same name, the first in sorted key order wins.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, TypeAlias

__all__ = [
    "DEFAULT_GENERATED",
    "DEFAULT_OUT",
    "DEFAULT_VERSION",
    "MODES",
    "build_table",
    "generate",
    "main",
    "render",
]

MODES: Final = frozenset({"chat", "completion", "embedding", "responses"})
"""The LiteLLM modes kept in the table."""

DEFAULT_VERSION: Final = "1.109.1"
"""The litellm release whose data file the committed table was generated from."""

DEFAULT_GENERATED: Final = "2026-11-24"
"""The fixed ``generated`` date written into ``_source`` (never the current time)."""

DEFAULT_OUT: Final = Path(__file__).resolve().parent / "prices.json"
"""Where the table is written by default: ``compiler/data/prices.json``."""

_SOURCE_NAME: Final = "litellm model_prices_and_context_window_backup.json"
_LICENSE: Final = "MIT"
_COPYRIGHT: Final = "Copyright (c) 2023 Berri AI"

_Entry: TypeAlias = dict[str, float | int | str]

_FLAGS: Final = (("reasoning", "supports_reasoning"), ("vision", "supports_vision"), ("pdf", "supports_pdf_input"))
"""Capability flags kept in the table: (table key, LiteLLM key)."""


def _number(value: object) -> float | None:
    """Return ``value`` as a finite float, or None when it is not a JSON number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def _limit(value: object) -> int | None:
    """Return ``value`` when it is a positive int token limit, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _entry(raw: Mapping[str, object], mode: str) -> _Entry | None:
    """Convert one source entry to a compact table entry, or None when it has no token prices."""
    price_in = _number(raw.get("input_cost_per_token"))
    price_out = _number(raw.get("output_cost_per_token"))
    if price_out is None and mode == "embedding" and "output_cost_per_token" not in raw:
        price_out = 0.0
    if price_in is None or price_out is None:
        return None
    entry: _Entry = {"in": price_in, "out": price_out, "mode": mode}
    cached = _number(raw.get("cache_read_input_token_cost"))
    if cached:
        entry["cached_in"] = cached
    max_in = _limit(raw.get("max_input_tokens"))
    if max_in is not None:
        entry["max_in"] = max_in
    max_out = _limit(raw.get("max_output_tokens"))
    if max_out is not None:
        entry["max_out"] = max_out
    for flag, source in _FLAGS:
        if raw.get(source) is True:
            entry[flag] = True
    return entry


def build_table(source: Mapping[str, object]) -> dict[str, dict[str, _Entry]]:
    """Build ``{provider: {model: entry}}`` from the parsed LiteLLM data (see module rules)."""
    providers: dict[str, dict[str, _Entry]] = {}
    for key in sorted(source):
        raw = source[key]
        if key == "sample_spec" or not isinstance(raw, Mapping):
            continue
        provider = raw.get("litellm_provider")
        mode = raw.get("mode")
        if not isinstance(provider, str) or not provider or mode not in MODES:
            continue
        assert isinstance(mode, str)
        entry = _entry(raw, mode)
        if entry is None:
            continue
        prefix = provider + "/"
        name = key[len(prefix) :] if key.startswith(prefix) and len(key) > len(prefix) else key
        models = providers.setdefault(provider, {})
        if name not in models:
            models[name] = entry
    return providers


def _dumps(value: object) -> str:
    """Compact, deterministic JSON for one value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def render(
    providers: Mapping[str, Mapping[str, Mapping[str, float | int | str]]],
    *,
    version: str = DEFAULT_VERSION,
    generated: str = DEFAULT_GENERATED,
) -> bytes:
    """Serialise the table: ``_source`` on one line, then one provider or model per line."""
    source = {
        "name": _SOURCE_NAME,
        "version": version,
        "license": _LICENSE,
        "copyright": _COPYRIGHT,
        "generated": generated,
    }
    lines = ['{"_source":' + _dumps(source) + ",", '"providers":{']
    provider_names = sorted(providers)
    for p_index, provider in enumerate(provider_names):
        models = providers[provider]
        lines.append(_dumps(provider) + ":{")
        model_names = sorted(models)
        for m_index, model in enumerate(model_names):
            last_model = m_index == len(model_names) - 1
            lines.append(_dumps(model) + ":" + _dumps(models[model]) + ("}" if last_model else ","))
        if not model_names:
            lines[-1] += "}"
        if p_index != len(provider_names) - 1:
            lines[-1] += ","
    lines.append("}}")
    return ("\n".join(lines) + "\n").encode("ascii")


def generate(
    source_path: Path,
    *,
    version: str = DEFAULT_VERSION,
    generated: str = DEFAULT_GENERATED,
) -> bytes:
    """Read the LiteLLM data file at ``source_path`` and return the rendered table."""
    with source_path.open("rb") as handle:
        source: object = json.load(handle)
    if not isinstance(source, dict):
        raise ValueError(f"{source_path}: expected a JSON object at the top level")
    return render(build_table(source), version=version, generated=generated)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m sidegate.compiler.data.pricegen",
        description="Generate compiler/data/prices.json from LiteLLM's price data.",
    )
    parser.add_argument("source", type=Path, help="model_prices_and_context_window_backup.json")
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT, help="output path")
    parser.add_argument("--version", default=DEFAULT_VERSION, help="litellm version of SOURCE")
    parser.add_argument("--generated", default=DEFAULT_GENERATED, help="date recorded in output")
    args = parser.parse_args(argv)
    source: object = json.loads(Path(args.source).read_bytes())
    if not isinstance(source, dict):
        parser.error(f"{args.source}: expected a JSON object at the top level")
    table = build_table(source)
    data = render(table, version=args.version, generated=args.generated)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    count = sum(len(models) for models in table.values())
    print(f"wrote {out} ({len(data)} bytes, {count} models)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
