"""The provider types page (docs/providers.md, moved out of the README): every catalog type is listed, and every one-line example there
compiles (so the native types' examples name the fields their family really needs)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from sidegate.compiler.data.catalog import load_catalog
from sidegate.compiler.pipeline import compile_text

DOC = (Path(__file__).resolve().parents[1] / "docs" / "providers.md").read_text()
SECTION = DOC.split("## Provider types", 1)[1].split("\n## ", 1)[0]


def _example_providers() -> dict[str, Any]:
    providers: dict[str, Any] = {}
    for block in re.findall(r"```yaml\n(.*?)```", SECTION, re.S):
        providers.update(YAML(typ="safe", pure=True).load(block)["providers"])
    return providers


def test_every_catalog_type_is_listed() -> None:
    missing = [name for name in load_catalog() if f"`{name}`" not in SECTION]
    assert missing == []


def test_every_native_type_has_an_example_and_every_example_compiles() -> None:
    providers = _example_providers()
    types = {p["type"] for p in providers.values()}
    assert {"anthropic", "gemini", "vertex", "bedrock", "cohere", "openai", "azure", "mock"} <= types
    spec = {"version": 1, "providers": providers,
            "models": {f"m-{name}": {"targets": [{"provider": name, "model": "some-model"}]} for name in providers}}
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(spec, out)
    result = compile_text(out.getvalue(), "readme-providers.yaml")
    errors = [d.format_text() for d in result.diagnostics if d.is_error]
    assert errors == [] and result.plan is not None
    assert {p.family.value for p in result.plan.providers} >= {"anthropic", "gemini", "vertex", "bedrock", "cohere"}
