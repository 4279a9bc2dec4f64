"""A start with missing secrets names every one of them at once, once (also with several workers),
and where each is used; a unit view of the same walk over a plan."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sidegate.runtime.plan import Header
from sidegate.runtime.plan.secrets import unresolved
from tests.support.plans import env, group, mock_provider, openai_provider, plan, quick, target

ROOT = Path(__file__).resolve().parents[1]
MANY = ["AZURE_EU_KEY", "DEEPSEEK_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY", "OPENAI_API_KEY", "OPENAI_ORG_ID",
        "OPENROUTER_API_KEY", "TOGETHER_API_KEY"]


def test_every_missing_reference_is_named_once_in_one_start() -> None:
    clean = {k: v for k, v in os.environ.items() if k not in MANY}
    done = subprocess.run([sys.executable, "-m", "sidegate.compiler.cli", "serve", "examples/many-providers.yaml",
                           "--workers", "2"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("  - ")]
    assert len(lines) == 8 and "8 secret reference(s) cannot be resolved" in done.stderr
    assert done.stderr.count("cannot start") == 1, "printed once, not once per worker"
    assert any("providers[openai].api_key" in line and "OPENAI_API_KEY" in line for line in lines)
    assert any("providers[azure-eu].api_key" in line for line in lines)


def test_the_walk_finds_references_anywhere_in_the_plan(monkeypatch: object) -> None:
    os.environ.pop("NOPE_KEY", None)
    os.environ.pop("NOPE_HEADER", None)
    p = plan([openai_provider("up", "http://127.0.0.1:9/v1", "NOPE_KEY"), mock_provider("m")],
             [group("g", target("up", "x", headers=(Header(name="X-Team", value=env("NOPE_HEADER")),)))])
    assert unresolved(p) == ["environment variable NOPE_KEY is not set (providers[up].api_key)",
                             "environment variable NOPE_HEADER is not set (models[g].targets[up/x].headers[X-Team].value)"]
    assert unresolved(quick()) == []
