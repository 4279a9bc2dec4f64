"""What each target's model takes, decided at compile time (`runtime.plan.Capabilities`).

The price/context table says whether a model reasons, reads images and reads PDFs; the provider
family and the table a model was found in say the rest: OpenAI's and Azure's reasoning models
(o-series, gpt-5) take `max_completion_tokens` but not `max_tokens`, only the default sampling and
no stop sequences; native families map `top_k`; Claude on Bedrock and Vertex AI honours
`cache_control`. Unknown models get the conservative answer for parameters (no reasoning
controls) and no opinion on content (images and documents are sent; the upstream decides).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sidegate.compiler.data.catalog import ProviderType
from sidegate.compiler.data.prices import ModelInfo, lookup
from sidegate.runtime.plan import Capabilities, Family

__all__ = ["capabilities", "override_output"]

_OPENAI_TABLES = frozenset({"openai", "azure"})
"""Price tables whose reasoning models follow OpenAI's parameter rules."""


def _table_entry(kind: ProviderType, model: str) -> tuple[str, ModelInfo] | None:
    for table in kind.price_providers:
        info = lookup(table, model)
        if info is not None:
            return table, info
    return None


def override_output(overrides: Mapping[str, bool | int], info: ModelInfo | None) -> int | None:
    """A target's output limit: the spec's `capabilities.max_output_tokens`, else the table's."""
    value = overrides.get("max_output_tokens")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None if info is None else info.max_output_tokens


def capabilities(kind: ProviderType, model: str, overrides: Mapping[str, bool | int] | None = None) -> Capabilities:
    """The capabilities of `model` served by a provider of type `kind`, with the spec's
    `capabilities` overrides (reasoning, max_completion_tokens, vision, pdf) applied."""
    caps = _derived(kind, model)
    changes: dict[str, bool] = {k: bool(v) for k, v in (overrides or {}).items()
                                if k in ("reasoning", "vision", "pdf")}
    if overrides and "max_completion_tokens" in overrides:
        strict = bool(overrides["max_completion_tokens"])
        changes.update(max_completion_tokens=strict, sampling=not strict, stop=not strict)
    return dataclasses.replace(caps, **changes) if changes else caps


def _derived(kind: ProviderType, model: str) -> Capabilities:
    family = kind.family
    found = None if model == "*" else _table_entry(kind, model)
    info = found[1] if found else None
    reasoning = info.reasoning if info else False
    vision = info.vision if info else None
    pdf = info.pdf if info else None
    if family is Family.ANTHROPIC:
        return Capabilities(reasoning=True, top_k=True, vision=True, pdf=True, prompt_caching=True)
    if not family.native:
        openai_rules = found is not None and found[0] in _OPENAI_TABLES
        strict = openai_rules and reasoning
        return Capabilities(reasoning=reasoning, max_completion_tokens=strict, sampling=not strict, stop=not strict,
                            vision=vision, pdf=pdf, system_anywhere=openai_rules or family is Family.AZURE)
    claude = "claude" in model or model.startswith("anthropic.")
    caching = claude and family in (Family.BEDROCK, Family.VERTEX)
    if family is Family.BEDROCK:
        reasoning = reasoning and claude  # the Bedrock adapter maps reasoning controls for Claude only
    return Capabilities(reasoning=reasoning, top_k=True, vision=vision, pdf=pdf, prompt_caching=caching)
