"""The README's promises: its spec examples lint clean, it opens with the two commands, and CI runs
exactly its test command. (Links, documented commands and the "Try it" snippet: test_docs_links.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sidegate.compiler.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_spec_example_lints_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"<!-- spec -->\n```yaml\n(.*?)```", README, re.S)
    assert blocks, "the README shows a spec"
    for i, block in enumerate(blocks):
        spec = tmp_path / f"readme-{i}.yaml"
        spec.write_text(block)
        assert main(["lint", "--strict", str(spec)]) == 0, capsys.readouterr().out


def test_readme_opens_with_the_two_commands() -> None:
    commands = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    assert commands[0].endswith("sidegate serve examples/quickstart.yaml")
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci and "<!-- test-command -->" in README
    block = README.split("<!-- test-command -->\n", 1)[1].split("<!-- /test-command -->", 1)[0]
    assert block == ("```sh\npython3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && "
                     ".venv/bin/python -m pytest -q\n```\n"), "the test command .ci/run reads, byte for byte"
    assert README.index("<!-- test-command -->") < README.index("## Contents"), "both commands come first"
