"""`sidegate import litellm`: LiteLLM's documented example configs become specs that compile, and
every setting left behind is reported at its own line and column.

Golden cases: `tests/golden/litellm/NAME.yaml` (a LiteLLM config written from LiteLLM's docs), with
the expected spec `NAME.spec.yaml` and diagnostics `NAME.diag.txt`. `SIDEGATE_GOLDEN_UPDATE=1`
rewrites the expected files; review the diff.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from sidegate.compiler.cli import main
from sidegate.compiler.importers.litellm import settings as litellm_settings
from sidegate.compiler.importers.litellm.importer import import_litellm
from sidegate.compiler.importers.litellm.settings import Features
from sidegate.compiler.parse import parse
from sidegate.compiler.pipeline import compile_text
from sidegate.compiler.report import CODES, text

GOLDEN = Path(__file__).parent / "golden" / "litellm"
CONFIGS = sorted(p for p in GOLDEN.glob("*.yaml") if not p.name.endswith(".spec.yaml"))
UPDATE = os.environ.get("SIDEGATE_GOLDEN_UPDATE") == "1"
# Settings the importer translates (everything else must be reported).
TRANSLATED = {
    "router_settings": {"routing_strategy", "num_retries", "timeout", "allowed_fails", "cooldown_time",
                        "fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "model_group_alias",
                        "redis_host", "redis_port", "redis_password"},
    "litellm_settings": {"num_retries", "request_timeout", "fallbacks", "context_window_fallbacks",
                         "content_policy_fallbacks", "json_logs", "allowed_fails", "cooldown_time"},
    "general_settings": {"max_parallel_requests", "master_key"},
    "litellm_params": {"model", "api_key", "api_base", "api_version", "organization", "extra_headers", "rpm", "tpm",
                       "weight", "order", "max_parallel_requests", "timeout", "litellm_credential_name", "seed",
                       "max_tokens", "temperature", "aws_region_name", "aws_profile_name", "vertex_project",
                       "vertex_location", "vertex_credentials"},
}  # fmt: skip
LITERAL_SECRETS = ("sk-123", "sk-1234", "hf_LdS", "eyJ0eXAiOiJ", "<my-openai-key>", "<your redis password>")


def _check(expected: Path, actual: str) -> None:
    if UPDATE:
        expected.write_text(actual, encoding="utf-8")
        return
    assert expected.exists(), f"{expected.name} is missing; run with SIDEGATE_GOLDEN_UPDATE=1 and review it"
    assert actual == expected.read_text(encoding="utf-8")


def test_at_least_five_documented_configs() -> None:
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_golden_translation(config: Path) -> None:
    imported = import_litellm(config.read_text(encoding="utf-8"), config.name)
    assert imported.spec is not None
    assert all(d.code in CODES for d in imported.diagnostics)
    _check(config.with_suffix(".spec.yaml"), imported.spec)
    _check(config.with_suffix(".diag.txt"), text(imported.diagnostics))


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_the_spec_compiles_through_the_pipeline(config: Path) -> None:
    """Each documented config compiles, except where a value could not be translated: there the only
    errors are the placeholders the importer left, each at its line (never a spec that lints clean
    with a made-up value)."""
    imported = import_litellm(config.read_text(encoding="utf-8"), config.name)
    assert imported.spec is not None
    result = compile_text(imported.spec, "imported.yaml")
    placeholders = "replace-me" in imported.spec
    assert (result.plan is None) == placeholders, text(result.diagnostics)
    # Azure deployment names are the account's own; the price table cannot know them.
    allowed = {"cost.unknown-model", "provider.placeholder"} if placeholders else {"cost.unknown-model"}
    assert {d.code for d in result.diagnostics} <= allowed


def _settings(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(section, key, pointer) of every setting in a LiteLLM config."""
    found = []
    for section in ("router_settings", "litellm_settings", "general_settings", "environment_variables"):
        for key in data.get(section) or {}:
            found.append((section, key, f"/{section}/{key}"))
    for i, entry in enumerate(data.get("model_list", [])):
        for key in entry.get("litellm_params", {}):
            found.append(("litellm_params", key, f"/model_list/{i}/litellm_params/{key}"))
        for key in entry:
            if key not in ("model_name", "litellm_params"):
                found.append(("deployment", key, f"/model_list/{i}/{key}"))
    return found


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_setting_is_translated_or_reported_at_its_key(config: Path) -> None:
    source = config.read_text(encoding="utf-8")
    parsed = parse(source, config.name)
    imported = import_litellm(source, config.name)
    reported = {d.pointer: d for d in imported.diagnostics}
    left_out = {d.pointer.rsplit("/litellm_params", 1)[0] for d in imported.diagnostics if "left out" in d.message}
    for section, key, pointer in _settings(parsed.data):
        deployment = pointer.split("/litellm_params")[0]
        if key in TRANSLATED.get(section, ()) or deployment in left_out:
            continue
        assert pointer in reported, f"{pointer} is neither translated nor reported"
        line, column = parsed.source_map.locate(pointer, True)
        assert (reported[pointer].line, reported[pointer].column) == (line, column)
        assert source.splitlines()[line - 1][column - 1 :].startswith(key)


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_literal_secrets_are_never_copied(config: Path) -> None:
    imported = import_litellm(config.read_text(encoding="utf-8"), config.name)
    shown = (imported.spec or "") + text(imported.diagnostics)
    for secret in LITERAL_SECRETS:
        assert secret not in shown


def _import(source: str) -> tuple[str, list[str]]:
    imported = import_litellm(source, "config.yaml")
    assert imported.spec is not None, text(imported.diagnostics)
    return imported.spec, [f"{d.line}:{d.column} {d.code} {d.message}" for d in imported.diagnostics]


def _models(spec: str) -> dict[str, Any]:
    models: dict[str, Any] = parse(spec, "spec.yaml").data["models"]
    return models


def test_simple_shuffle_weights_by_rpm_when_no_weight_is_set() -> None:
    spec, _ = _import(
        "model_list:\n"
        "  - {model_name: m, litellm_params: {model: openai/gpt-4o, api_key: os.environ/K1, rpm: 100}}\n"
        "  - {model_name: m, litellm_params: {model: openai/gpt-4o, api_key: os.environ/K2, rpm: 300}}\n"
    )
    targets = _models(spec)["m"]["targets"]
    assert [(t["provider"], t["weight"], t["rpm"]) for t in targets] == [("openai", 100, 100), ("openai-2", 300, 300)]
    assert "weight = its rpm" in spec


def test_explicit_weights_win_and_weight_zero_is_never_picked() -> None:
    spec, diagnostics = _import(
        "model_list:\n"
        "  - {model_name: m, litellm_params: {model: openai/gpt-4o, weight: 3, rpm: 10}}\n"
        "  - {model_name: m, litellm_params: {model: openai/gpt-4o-mini, weight: 1, rpm: 1000}}\n"
        "  - {model_name: m, litellm_params: {model: openai/gpt-4.1}}\n"
    )
    assert [t.get("weight") for t in _models(spec)["m"]["targets"]] == [3, 1]
    assert any(d.startswith("4:21 litellm.invalid") and "LiteLLM never picks it" in d for d in diagnostics)


def test_order_becomes_priority_tiers() -> None:
    spec, _ = _import(
        "model_list:\n"
        "  - {model_name: m, litellm_params: {model: openai/gpt-4o, order: 2}}\n"
        "  - {model_name: m, litellm_params: {model: openai/gpt-4o-mini, order: 1}}\n"
        "  - {model_name: m, litellm_params: {model: openai/gpt-4.1}}\n"
    )
    group = _models(spec)["m"]
    assert group["strategy"] == "priority"
    assert [t["tier"] for t in group["targets"]] == [1, 0, 2]


def test_without_priority_tiers_in_the_schema_backups_are_reported_and_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(litellm_settings, "features", lambda: Features(frozenset(), frozenset()))
    monkeypatch.setattr("sidegate.compiler.importers.litellm.importer.features", litellm_settings.features)
    source = (
        "model_list:\n"
        "  - {model_name: m, litellm_params: {model: openai/gpt-4o, order: 1}}\n"
        "  - {model_name: m, litellm_params: {model: openai/gpt-4o-mini, order: 2}}\n"
        "router_settings: {num_retries: 2, fallbacks: [{m: [m]}], routing_strategy: least-busy}\n"
    )
    spec, diagnostics = _import(source)
    assert [t["model"] for t in _models(spec)["m"]["targets"]] == ["gpt-4o"]
    assert any(d.startswith("3:21 litellm.not-translated") and "priority tiers" in d for d in diagnostics)
    for key, column in (("num_retries", 19), ("fallbacks", 35), ("routing_strategy", 58)):
        assert any(d.startswith(f"4:{column} litellm.not-translated") for d in diagnostics), key


def test_bare_model_names_and_unknown_providers() -> None:
    spec, diagnostics = _import(
        "model_list:\n"
        "  - {model_name: a, litellm_params: {model: claude-sonnet-4-5}}\n"
        "  - {model_name: b, litellm_params: {model: my-private-model}}\n"
        "  - {model_name: c, litellm_params: {model: sagemaker/my-endpoint}}\n"
        "  - {model_name: d, litellm_params: {model: groq/llama-3.1-8b-instant}}\n"
    )
    models = _models(spec)
    assert set(models) == {"a", "b", "d"}
    providers = parse(spec, "s.yaml").data["providers"]
    assert providers["anthropic"]["api_key"] == "${ANTHROPIC_API_KEY}"
    assert providers["groq"] == {"type": "groq", "api_key": "${GROQ_API_KEY}"}
    assert any(d.startswith("3:38 litellm.assumed") for d in diagnostics)
    assert any(d.startswith("4:38 litellm.unsupported-provider") and "'sagemaker'" in d for d in diagnostics)


def test_bedrock_and_vertex_fields() -> None:
    spec, diagnostics = _import(
        "model_list:\n"
        "  - model_name: claude\n"
        "    litellm_params: {model: bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0, aws_region_name: eu-west-1,\n"
        "                     aws_profile_name: prod, aws_secret_access_key: os.environ/AWS_SECRET_ACCESS_KEY}\n"
        "  - model_name: gemini\n"
        "    litellm_params: {model: vertex_ai/gemini-2.5-pro, vertex_project: my-project-123,\n"
        "                     vertex_location: europe-west4, vertex_credentials: /run/secrets/sa.json}\n"
        "  - model_name: gemini-env\n"
        "    litellm_params: {model: vertex_ai/gemini-2.5-flash, vertex_credentials: os.environ/SA_JSON}\n"
    )
    providers = parse(spec, "s.yaml").data["providers"]
    assert providers["bedrock"] == {"type": "bedrock", "region": "eu-west-1", "aws_profile": "prod"}
    assert providers["vertex"] == {
        "type": "vertex", "project": "my-project-123", "region": "europe-west4", "credentials": {"file": "/run/secrets/sa.json"}
    }  # fmt: skip
    assert providers["vertex-2"] == {
        "type": "vertex",
        "project": "replace-me",
        "region": "us-central1",
        "credentials": "${SA_JSON}",
    }
    assert any(d.startswith("4:46 litellm.not-translated") and "AWS_SECRET_ACCESS_KEY" in d for d in diagnostics)
    assert sum("vertex needs" in d for d in diagnostics) == 2
    failed = compile_text(spec, "s.yaml")
    assert failed.plan is None and [d.pointer for d in failed.diagnostics] == ["/providers/vertex-2/project"]


def test_wildcards_and_catch_all() -> None:
    spec, diagnostics = _import(
        "model_list:\n"
        "  - model_name: openai/*\n"
        "    litellm_params: {model: openai/*, api_key: os.environ/OPENAI_API_KEY}\n"
        "  - model_name: '*'\n"
        "    litellm_params: {model: '*'}\n"
    )
    assert _models(spec)["openai/*"]["targets"] == [{"provider": "openai", "model": "*"}]
    assert any(d.startswith("4:5 litellm.not-translated") and "catch-all" in d for d in diagnostics)


def test_nothing_translatable_writes_no_spec() -> None:
    imported = import_litellm("model_list:\n  - {model_name: x, litellm_params: {model: replicate/x/y}}\n", "c.yaml")
    assert imported.spec is None
    assert [d.code for d in imported.diagnostics] == ["litellm.empty", "litellm.unsupported-provider"]
    assert import_litellm("- a\n- b\n", "c.yaml").diagnostics[0].code == "litellm.invalid"
    assert import_litellm("model_list: [\n", "c.yaml").diagnostics[0].code == "yaml.syntax"


def test_cli_exit_codes_and_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = tmp_path / "clean.yaml"
    clean.write_text(
        "model_list:\n  - {model_name: m, litellm_params: {model: openai/gpt-4o, api_key: os.environ/K}}\n"
    )
    assert main(["import", "litellm", str(clean)]) == 0
    out = capsys.readouterr()
    assert out.err == "" and 'api_key: "${K}"' in out.out
    target = tmp_path / "out" / "spec.yaml"
    assert main(["import", "litellm", str(CONFIGS[0]), "-o", str(target)]) == 2
    assert "warning[litellm." in capsys.readouterr().err
    assert main(["lint", "--strict", str(target)]) in (0, 2)
    assert "error[" not in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("model_list: []\n"))
    assert main(["import", "litellm", "-"]) == 1
    assert "error[litellm.empty]" in capsys.readouterr().err
    assert main(["import", "litellm", str(tmp_path / "missing.yaml")]) == 1


def test_redis_and_postgres_settings_become_the_store() -> None:
    spec, notes = _import(
        "model_list:\n"
        "  - model_name: gpt\n"
        "    litellm_params: {model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}\n"
        "router_settings:\n"
        "  redis_host: os.environ/REDIS_HOST\n"
        "  redis_port: 6380\n"
        "  redis_password: hunter2-literal\n"
        "general_settings:\n"
        "  database_url: postgresql://litellm@db.internal:5432/litellm\n"
    )
    store = parse(spec, "spec.yaml").data["store"]
    assert store == {"redis": "redis://:${REDIS_PASSWORD}@${REDIS_HOST}:6380/0",
                     "database": "postgresql://litellm@db.internal:5432/litellm"}
    assert "hunter2-literal" not in spec and any("litellm.literal-secret" in n for n in notes)
    assert compile_text(spec, "spec.yaml").plan is not None
