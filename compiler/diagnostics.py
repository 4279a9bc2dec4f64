"""Diagnostics: what the compiler reports about a spec, and how it is printed.

A :class:`Diagnostic` is a frozen value with a severity, a stable code (``schema.type``,
``ref.unknown-provider``...), a human message, the RFC 6901 JSON pointer of the offending node and
its 1-based line and column. Phases report through a :class:`Collector`, which turns pointers into
positions with the parse phase's source map.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Collector",
    "Diagnostic",
    "Locator",
    "Severity",
    "did_you_mean",
    "escape_pointer",
    "has_errors",
    "join_pointer",
    "sort_key",
    "split_pointer",
]


class Severity(enum.Enum):
    """How bad a diagnostic is: errors stop the pipeline, warnings do not."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnostic:
    """One finding about a spec, located at a node."""

    severity: Severity
    code: str
    """Stable identifier such as ``schema.unknown-field``; documented, safe to match on."""
    message: str
    pointer: str
    """RFC 6901 JSON pointer of the node (``""`` for the whole document)."""
    file: str
    line: int
    """1-based."""
    column: int
    """1-based."""

    @property
    def is_error(self) -> bool:
        """Whether this diagnostic is an error (and so fails the compile)."""
        return self.severity is Severity.ERROR

    def as_dict(self) -> dict[str, object]:
        """The JSON form used by ``--format json``."""
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "severity": self.severity.value,
            "code": self.code,
            "pointer": self.pointer,
            "message": self.message,
        }

    def format_text(self) -> str:
        """``file:line:col: severity[code] /pointer: message``."""
        where = f"{self.pointer}: " if self.pointer else ""
        return f"{self.file}:{self.line}:{self.column}: {self.severity.value}[{self.code}] {where}{self.message}"


def sort_key(diagnostic: Diagnostic) -> tuple[int, int, str, str]:
    """Order diagnostics of one file by position, then code and pointer."""
    return (diagnostic.line, diagnostic.column, diagnostic.code, diagnostic.pointer)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    """Whether any of ``diagnostics`` is an error."""
    return any(d.is_error for d in diagnostics)


def escape_pointer(token: str) -> str:
    """Escape one reference token for a JSON pointer (``~`` -> ``~0``, ``/`` -> ``~1``)."""
    return token.replace("~", "~0").replace("/", "~1")


def join_pointer(base: str, *tokens: str | int) -> str:
    """Extend the pointer ``base`` by ``tokens`` (keys or list indexes)."""
    return base + "".join("/" + escape_pointer(str(t)) for t in tokens)


def split_pointer(pointer: str) -> list[str]:
    """The unescaped reference tokens of ``pointer``."""
    if not pointer:
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A `` (did you mean 'x'?)`` suffix naming the closest of ``choices``, or ``""``."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


Locator = Callable[[str, bool], tuple[int, int]]
"""Maps (pointer, at_key) to a 1-based (line, column); at_key asks for the key's own position."""


@dataclass(slots=True)
class Collector:
    """Collects the diagnostics of one file, locating each pointer in the source."""

    file: str
    locate: Locator
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, code: str, pointer: str, message: str, *, at_key: bool = False) -> None:
        """Report an error at ``pointer`` (at its key with ``at_key``)."""
        self.add(Severity.ERROR, code, pointer, message, at_key=at_key)

    def warning(self, code: str, pointer: str, message: str, *, at_key: bool = False) -> None:
        """Report a warning at ``pointer`` (at its key with ``at_key``)."""
        self.add(Severity.WARNING, code, pointer, message, at_key=at_key)

    def add(self, severity: Severity, code: str, pointer: str, message: str, *, at_key: bool = False) -> None:
        """Report a diagnostic of any severity."""
        line, column = self.locate(pointer, at_key)
        self.diagnostics.append(
            Diagnostic(
                severity=severity,
                code=code,
                message=message,
                pointer=pointer,
                file=self.file,
                line=line,
                column=column,
            )
        )

    @property
    def failed(self) -> bool:
        """Whether an error was reported."""
        return has_errors(self.diagnostics)

    def sorted(self) -> Sequence[Diagnostic]:
        """The diagnostics so far, by position."""
        return sorted(self.diagnostics, key=sort_key)
