"""The small core every ``sidegate`` command shares: exit codes, the version, reading a spec file
(or stdin) and compiling it. Command modules import this, never each other."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidegate.compiler.pipeline import Result

__all__ = ["EXIT_USAGE", "STDIN", "compile_file", "read_source", "version"]

EXIT_USAGE = 64
"""Exit status of a usage error (BSD sysexits EX_USAGE)."""
STDIN = "<stdin>"


def version() -> str:
    """The installed distribution's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("sidegate")
    except PackageNotFoundError:
        return "0.1.0"


def read_source(path: str) -> tuple[str, str]:
    """(name to show, text) of ``path``; ``-`` reads stdin. Raises OSError or UnicodeDecodeError."""
    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)
        return STDIN, stream.read().decode("utf-8-sig") if stream is not None else sys.stdin.read()
    with open(path, "rb") as f:
        return path, f.read().decode("utf-8-sig")


def compile_file(path: str) -> Result:
    """Compile the spec at ``path`` (``-``: stdin); an unreadable file is one ``io.read`` diagnostic."""
    from sidegate.compiler.diagnostics import Diagnostic, Severity
    from sidegate.compiler.pipeline import Result, compile_text

    try:
        name, text = read_source(path)
    except OSError as exc:
        reason = f"cannot read the file: {exc.strerror}"
    except UnicodeDecodeError as exc:
        reason = f"the file is not UTF-8 ({exc.reason} at byte {exc.start})"
    else:
        return compile_text(text, name)
    problem = Diagnostic(
        severity=Severity.ERROR, code="io.read", message=reason, pointer="", file=path, line=1, column=1
    )
    return Result(None, (problem,))
