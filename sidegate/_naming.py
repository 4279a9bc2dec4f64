"""The internal packages' names: sidegate's code lives in the top-level packages `runtime` and
`compiler` (beside `sidegate` in the same site-packages, or the same checkout). Another
distribution's or the application's own `runtime`/`compiler` would shadow them (or be shadowed),
so `import sidegate` first checks that both names resolve to the directories next to `sidegate`,
and otherwise refuses with an ImportError naming both paths, instead of failing later with a
confusing AttributeError. See docs/library.md#package-names."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__all__ = ["check_internal_packages"]

INTERNAL = ("runtime", "compiler")


def _origin(name: str) -> str | None:
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__file__", None)
    spec = importlib.util.find_spec(name)
    return None if spec is None else spec.origin


def check_internal_packages() -> None:
    """Raise ImportError when `runtime` or `compiler` is not sidegate's own."""
    home = Path(__file__).resolve().parent.parent
    for name in INTERNAL:
        expected = home / name / "__init__.py"
        origin = _origin(name)
        if origin is None or Path(origin).resolve() != expected:
            found = origin or "a namespace package or nothing"
            raise ImportError(
                f"sidegate's internal package {name!r} is shadowed: `import {name}` finds {found}, not {expected}. "
                f"Another distribution or a module of the application is named {name!r} and comes first on "
                "sys.path (or was imported first); rename it, or install sidegate in its own environment "
                "(see docs/library.md#package-names)")
