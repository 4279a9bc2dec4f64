"""The shipped examples lint clean (no warnings either), and the pre-commit hook is well-formed."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate.compiler.cli import main
from sidegate.compiler.parse import parse

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_the_promised_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.yaml", "fallback-openai-anthropic.yaml", "many-providers.yaml"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_lints_clean_under_strict(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert example.read_text(encoding="utf-8").startswith(
        "# yaml-language-server: $schema=../schema/gateway.schema.json"
    )
    assert main(["lint", "--strict", str(example)]) == 0
    assert capsys.readouterr().out == ""


def test_many_providers_uses_at_least_six_types() -> None:
    data = parse((ROOT / "examples" / "many-providers.yaml").read_text(encoding="utf-8"), "m.yaml").data
    assert len({p["type"] for p in data["providers"].values()}) >= 6
    assert any(name.endswith("/*") for name in data["models"])


def test_pre_commit_hook_runs_sidegate_lint() -> None:
    hooks = parse((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"), "h.yaml").data
    (hook,) = hooks
    assert hook["id"] == "sidegate-lint"
    assert hook["entry"].startswith("sidegate lint")
    assert hook["language"] == "python"
