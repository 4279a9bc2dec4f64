"""`sidegate diff OLD NEW`: what a change does to routing, in words; exit 0 same, 1 changed, 2 trouble."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate.compiler.cli import main
from sidegate.compiler.cli.diff import describe_changes
from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan import Plan

Capture = pytest.CaptureFixture[str]

BASE = """\
version: 1
providers:
  openai: {type: openai, api_key: "${OPENAI_API_KEY}"}
  azure: {type: azure, base_url: "https://a.openai.azure.com", api_version: "2024-10-21", api_key: {env: AZ}}
models:
  gpt-4o:
    aliases: [default]
    targets:
      - {provider: openai, model: gpt-4o, weight: 3, rpm: 100}
      - {provider: azure, model: gpt-4o, weight: 1}
  mini:
    targets: [{provider: openai, model: gpt-4o-mini}]
"""


def _plan(text: str) -> Plan:
    result = compile_text(text, "spec.yaml")
    assert result.plan is not None, result.diagnostics
    return result.plan


def _changes(old: str, new: str) -> list[str]:
    return describe_changes(_plan(old), _plan(new))


def test_same_plan_is_no_change_whatever_the_formatting() -> None:
    reordered = (
        "# the same gateway, written differently\nmodels:\n"
        "  mini: {targets: [{model: gpt-4o-mini, provider: openai}]}\n"
        "  gpt-4o:\n    targets:\n"
        "      - {provider: openai, model: gpt-4o, weight: 3.0, rpm: 100}\n"
        "      - {provider: azure, model: gpt-4o}\n"
        "    aliases: [default]\n"
        "providers:\n"
        "  azure: {api_key: {env: AZ}, type: azure, api_version: '2024-10-21', base_url: 'https://a.openai.azure.com'}\n"
        "  openai: {api_key: {env: OPENAI_API_KEY}, type: openai}\nversion: 1\n"
    )
    assert _changes(BASE, reordered) == []


def test_weights_are_told_as_shares_of_requests() -> None:
    new = BASE.replace("weight: 3, rpm: 100", "weight: 1, rpm: 100")
    assert _changes(BASE, new) == [
        "model gpt-4o:",
        "  target openai/gpt-4o: weight 3 -> 1 (75% -> 50% of requests)",
        "  target azure/gpt-4o: 25% -> 50% of requests (same weight, other targets changed)",
    ]


def test_targets_models_aliases_caps_and_timeouts() -> None:
    new = (
        BASE.replace("aliases: [default]", "aliases: [gpt4o]\n    timeout: 120s")
        .replace("weight: 3, rpm: 100", "weight: 3, rpm: 200, tpm: 5000")
        .replace("      - {provider: azure, model: gpt-4o, weight: 1}\n", "")
        .replace(
            "  mini:\n    targets: [{provider: openai, model: gpt-4o-mini}]\n",
            "  embed:\n    targets: [{provider: openai, model: text-embedding-3-small}]\n",
        )
        .replace("  azure: {type: azure", "  azure2: {type: azure")
    )
    changes = _changes(BASE, new.replace("provider: azure,", "provider: azure2,"))
    assert changes == [
        "model embed added: served by openai/text-embedding-3-small",
        "model mini removed: clients asking for it get 404 model_not_found",
        "model gpt-4o:",
        "  target azure/gpt-4o removed (it had 25% of requests)",
        "  target openai/gpt-4o: 75% -> 100% of requests (same weight, other targets changed)",
        "  target openai/gpt-4o: rpm cap 100 -> 200",
        "  target openai/gpt-4o: tpm cap 5000 (new)",
        "  aliases: gpt4o added",
        "  aliases: default removed",
        "  timeout: 60s -> 120s",
        "provider azure2 added (azure, https://a.openai.azure.com)",
        "provider azure removed",
    ]


def test_provider_and_server_changes_show_references_never_values() -> None:
    new = BASE.replace('"${OPENAI_API_KEY}"', '"${OPENAI_KEY_2}"').replace(
        "version: 1\n", "version: 1\nserver: {drain_timeout: 45s}\n"
    )
    assert _changes(BASE, new) == [
        "provider openai:",
        "  api_key: ${OPENAI_API_KEY} -> ${OPENAI_KEY_2}",
        "server:",
        "  drain_timeout: 20s -> 45s",
    ]


def test_cli_exit_codes_and_plan_files(tmp_path: Path, capsys: Capture) -> None:
    old, new, plan = tmp_path / "old.yaml", tmp_path / "new.yaml", tmp_path / "old.plan.json"
    old.write_text(BASE)
    new.write_text(BASE.replace("weight: 1}", "weight: 3}"))
    assert main(["compile", str(old), "-o", str(plan)]) == 0
    capsys.readouterr()
    assert main(["diff", str(plan), str(old)]) == 0
    assert capsys.readouterr().out == "no change: both compile to the same plan\n"
    assert main(["diff", str(plan), str(new)]) == 1
    assert "target azure/gpt-4o: weight 1 -> 3 (25% -> 50% of requests)" in capsys.readouterr().out
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nmodels: {x: {targets: [{provider: nope, model: m}]}}\n")
    assert main(["diff", str(old), str(broken)]) == 2
    assert "error[ref.unknown-provider]" in capsys.readouterr().err
    plan.write_text(plan.read_text().replace('"rpm": 100', '"rpm": 101'))
    assert main(["diff", str(plan), str(old)]) == 2
    assert "digest mismatch" in capsys.readouterr().err
