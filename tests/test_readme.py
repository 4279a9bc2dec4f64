"""The README's promises: its spec example lints clean, and CI runs exactly its test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from compiler.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_spec_example_lints_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README, re.S)
    assert blocks, "the README shows a spec"
    spec = tmp_path / "readme.yaml"
    spec.write_text(blocks[0])
    assert main(["lint", "--strict", str(spec)]) == 0, capsys.readouterr().out


def test_readme_opens_with_the_two_commands() -> None:
    commands = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    assert commands[0].endswith("sidegate serve examples/quickstart.yaml")
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci and "<!-- test-command -->" in README
