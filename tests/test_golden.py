"""Golden compiler cases: each bad spec pins its exact diagnostics, each good spec its exact plan JSON.

`SIDEGATE_GOLDEN_UPDATE=1` (or `just golden-update`) rewrites the expected files; review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidegate.compiler.pipeline import compile_text
from sidegate.compiler.report import CODES, text
from sidegate.runtime.plan.canonical import dumps, loads

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SIDEGATE_GOLDEN_UPDATE") == "1"
BAD = sorted((GOLDEN / "bad").glob("*.yaml"))
OK = sorted((GOLDEN / "ok").glob("*.yaml"))


def _check(expected_path: Path, actual: str) -> None:
    if UPDATE:
        expected_path.write_text(actual, encoding="utf-8")
        return
    assert expected_path.exists(), f"{expected_path.name} is missing; run `just golden-update` and review it"
    assert actual == expected_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("spec", BAD, ids=[p.stem for p in BAD])
def test_bad_spec_diagnostics(spec: Path) -> None:
    result = compile_text(spec.read_text(encoding="utf-8"), spec.name)
    assert result.diagnostics, "a bad spec must produce at least one diagnostic"
    assert all(d.code in CODES for d in result.diagnostics)
    if any(d.is_error for d in result.diagnostics):
        assert result.plan is None
    _check(spec.with_suffix(".diag.txt"), text(result.diagnostics))


@pytest.mark.parametrize("spec", OK, ids=[p.stem for p in OK])
def test_good_spec_plan(spec: Path) -> None:
    result = compile_text(spec.read_text(encoding="utf-8"), spec.name)
    assert result.diagnostics == ()
    assert result.plan is not None
    plan_json = dumps(result.plan)
    assert loads(plan_json) == result.plan
    _check(spec.with_suffix(".plan.json"), plan_json)


def test_golden_corpus_is_large_enough() -> None:
    assert len(BAD) >= 25
    assert len(OK) >= 5
    codes = {
        line.split("[", 1)[1].split("]", 1)[0]
        for p in BAD
        for line in p.with_suffix(".diag.txt").read_text().splitlines()
    }
    for code in (
        "schema.unknown-field",
        "yaml.syntax",
        "yaml.duplicate-key",
        "yaml.alias-bomb",
        "ref.unknown-provider",
    ):
        assert code in codes


def test_plan_bytes_do_not_depend_on_the_process(tmp_path: Path) -> None:
    """Set iteration order changes with PYTHONHASHSEED; the plan (and its digest) must not."""
    spec = GOLDEN / "ok" / "openai-azure-weighted.yaml"
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-m", "sidegate.compiler.cli", "compile", str(spec)], capture_output=True, env=env, check=True
        )
        outputs.append(run.stdout)
    assert outputs[0] == outputs[1] == spec.with_suffix(".plan.json").read_bytes()
