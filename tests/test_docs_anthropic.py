"""docs/anthropic.md prints the translation rules table the code follows, and its spec compiles
into the routing it describes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.routing.routes import RouteTable
from sidegate.runtime.upstream.translation import render_table

DOC = (Path(__file__).resolve().parents[1] / "docs" / "anthropic.md").read_text()


def test_the_docs_print_the_rules_table() -> None:
    printed = DOC.split("<!-- rules-table -->\n", 1)[1].split("<!-- /rules-table -->", 1)[0]
    assert printed == render_table()


def test_the_docs_capabilities_example_compiles() -> None:
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", DOC, re.S) if "capabilities:" in b)
    spec = 'version: 1\nproviders:\n  local: {type: vllm, base_url: "http://127.0.0.1:8000/v1"}\n' + block
    result = compile_text(spec, "anthropic.md")
    assert result.plan is not None, [d.message for d in result.diagnostics]
    assert result.plan.models[0].targets[0].caps.reasoning


def test_the_docs_spec_routes_claude_ids_by_glob(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = next(b for b in re.findall(r"```yaml\n(.*?)```", DOC, re.S) if b.startswith("version: 1"))
    result = compile_text(spec, "anthropic.md")
    assert result.plan is not None and not result.diagnostics, [d.message for d in result.diagnostics]
    routes = RouteTable(result.plan)
    picked = {m: routes.resolve(m) for m in ("claude-3-5-haiku-20241022", "claude-opus-4-8", "anthropic-direct", "gpt-4o")}
    assert {m: r.group.name if r else None for m, r in picked.items()} == {
        "claude-3-5-haiku-20241022": "*-haiku-*", "claude-opus-4-8": "claude-*", "anthropic-direct": "anthropic-direct",
        "gpt-4o": None}
