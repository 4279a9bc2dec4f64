"""Token counts from upstreams are data to validate: a count must be a non-negative integer (an
integral float such as `12.0` is accepted) below :data:`MAX_TOKENS`. A usage object with any other
count (a string, `NaN`, `-5`, `true`, `1e300`) is treated as absent: the request is then metered
locally and its spend flagged `estimated`, instead of a 500, a cut stream or a negative cost."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["MAX_TOKENS", "InvalidUsage", "or_absent", "token_count"]

MAX_TOKENS = 1 << 31
"""No real request counts this many tokens; larger counts are refused as hostile or broken."""


class InvalidUsage(ValueError):
    """An upstream's usage carried a count that is not a valid token count."""


def token_count(value: Any) -> int:
    """`value` as a token count: missing/null -> 0; raises InvalidUsage for anything but a
    non-negative integer (or integral float) below MAX_TOKENS."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise InvalidUsage("a boolean is not a token count")
    if isinstance(value, int):
        if 0 <= value < MAX_TOKENS:
            return value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer() and 0 <= value < MAX_TOKENS:
        return int(value)
    raise InvalidUsage(f"{type(value).__name__} is not a token count")


T = TypeVar("T")


def or_absent(read: Callable[[], T]) -> T | None:
    """`read()`, or None when the usage it reads is invalid (a whole answer's usage)."""
    try:
        return read()
    except InvalidUsage:
        return None
