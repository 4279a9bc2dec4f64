"""The compiler pipeline: parse -> schema -> resolve -> check -> lower.

Each phase reports every problem it can find; the pipeline stops between phases, and only when a
phase reported an error. Pure: text in, plan and diagnostics out.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidegate.compiler.check import check
from sidegate.compiler.credentials import check_credentials
from sidegate.compiler.diagnostics import Collector, Diagnostic, has_errors, sort_key
from sidegate.compiler.lower import lower
from sidegate.compiler.parse import parse
from sidegate.compiler.resolve import resolve
from sidegate.compiler.validate import validate
from sidegate.runtime.plan import Plan

__all__ = ["Result", "compile_text"]


@dataclass(frozen=True, slots=True)
class Result:
    """A compile's outcome: the plan (None when there were errors) and every diagnostic, by position."""

    plan: Plan | None
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        """Whether there was no error (warnings allowed)."""
        return not has_errors(self.diagnostics)


def _looks_like_litellm(data: object) -> bool:
    """A mapping with LiteLLM's `model_list` (or its settings sections) and none of a spec's keys."""
    if not isinstance(data, dict) or "version" in data or "models" in data:
        return False
    return "model_list" in data or ("litellm_settings" in data and "general_settings" in data)


def compile_text(text: str, filename: str) -> Result:
    """Compile the spec ``text``; ``filename`` is what diagnostics name."""
    parsed = parse(text, filename)
    if parsed.data is None:
        return Result(None, tuple(sorted(parsed.diagnostics, key=sort_key)))
    out = Collector(filename, parsed.source_map.locate)
    if _looks_like_litellm(parsed.data):
        out.error("spec.litellm-config", "", "this is a LiteLLM proxy config, not a sidegate spec: translate it with "
                  f"`sidegate import litellm {filename} -o sidegate.yaml`, then lint the result")
        return Result(None, tuple(out.sorted()))
    validate(parsed.data, out)
    if out.failed:
        return Result(None, tuple(out.sorted()))
    check_credentials(parsed.data, out)
    resolved = resolve(parsed.data, out)
    if out.failed:
        return Result(None, tuple(out.sorted()))
    check(resolved, out)
    if out.failed:
        return Result(None, tuple(out.sorted()))
    return Result(lower(resolved), tuple(out.sorted()))
