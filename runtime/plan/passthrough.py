"""Plan types of the provider pass-through routes (`passthrough` in the spec), re-exported by
:mod:`runtime.plan`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PassthroughRoute"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PassthroughRoute:
    """`<prefix>/<rest>` is relayed to the provider's base URL + `/<rest>` with its credentials."""

    provider: str
    """The name of a provider of the spec (its base URL, API key and extra headers)."""
    prefix: str
    """The path prefix it is served under: `/` then lowercase segments, no trailing `/`."""
