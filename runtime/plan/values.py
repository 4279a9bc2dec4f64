"""Plan values shared by every part of the plan: frozen JSON, secret references and headers."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

__all__ = ["Header", "JSONValue", "Secret", "SecretPart", "SecretSource"]

JSONValue = Union[None, bool, int, float, str, tuple["JSONValue", ...], Mapping[str, "JSONValue"]]  # noqa: UP007
"""A frozen JSON value: arrays are tuples, objects are read-only mappings."""

class SecretSource(enum.Enum):
    """Where one part of a secret's value comes from."""

    TEXT = "text"
    ENV = "env"
    FILE = "file"


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretPart:
    """Literal text, or the name of an environment variable, or a file path."""

    source: SecretSource
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    """A reference to a secret: its parts are concatenated once they are resolved at start."""

    parts: tuple[SecretPart, ...]

    def describe(self) -> str:
        """Show where the secret comes from, never its value (safe for logs and `explain`)."""
        out: list[str] = []
        for part in self.parts:
            if part.source is SecretSource.ENV:
                out.append("${" + part.value + "}")
            elif part.source is SecretSource.FILE:
                out.append("{file:" + part.value + "}")
            else:
                out.append(part.value)
        return "".join(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """An extra header sent upstream; its value may hold secret references."""

    name: str
    value: Secret
