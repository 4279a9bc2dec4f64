"""The `files` section: which model group holds `/v1/files` uploads (and so their batches), and the
batch price. The group must have an OpenAI or Azure deployment: only those serve the Files and
Batch APIs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sidegate.compiler.diagnostics import Collector, did_you_mean
from sidegate.runtime.plan import Family, Files

__all__ = ["FILE_FAMILIES", "canonical_files", "check_files", "resolve_files"]

FILE_FAMILIES = frozenset({Family.OPENAI, Family.AZURE})
"""The provider families that serve `/files` and `/batches` upstream."""


class _Kind(Protocol):
    @property
    def family(self) -> Family: ...


class _Provider(Protocol):
    @property
    def kind(self) -> _Kind | None: ...


class _Target(Protocol):
    @property
    def provider(self) -> str: ...


class _Group(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def aliases(self) -> tuple[str, ...]: ...
    @property
    def targets(self) -> Sequence[_Target]: ...


def resolve_files(raw: Mapping[str, Any]) -> Files:
    """The section as written (defaults for what it leaves out)."""
    return Files(model=raw.get("model"), batch_discount=float(raw.get("batch_discount", 0.5)))


def check_files(files: Files, groups: Sequence[_Group], providers: Mapping[str, _Provider],
                out: Collector) -> None:
    """Report a `files.model` that names no group, or a group without an OpenAI or Azure deployment."""
    if files.model is None:
        return
    names = {g.name: g for g in groups} | {a: g for g in groups for a in g.aliases}
    group = names.get(files.model)
    if group is None:
        out.error("files.unknown-model", "/files/model",
                  f"'{files.model}' is not a model group or alias of this spec{did_you_mean(files.model, list(names))}")
        return
    families = [p.kind.family for t in group.targets if (p := providers.get(t.provider)) is not None and p.kind]
    if not any(f in FILE_FAMILIES for f in families):
        out.error("files.not-openai", "/files/model",
                  f"model group '{group.name}' has no OpenAI or Azure deployment; only those serve /v1/files "
                  "and /v1/batches")


def canonical_files(files: Files, aliases: Mapping[str, str]) -> Files:
    """The section with an alias in `model` replaced by its group's name."""
    if files.model is None or files.model not in aliases:
        return files
    return Files(model=aliases[files.model], batch_discount=files.batch_discount)
