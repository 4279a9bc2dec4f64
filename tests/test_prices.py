"""Tests for the model price table: compiler.data.pricegen (generator) and compiler.data.prices (lookup)."""

from __future__ import annotations

import importlib.resources
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from sidegate.compiler.data import pricegen, prices
from sidegate.compiler.data.prices import ModelInfo, known_models, lookup

# The LiteLLM data lives beside the checkout (../shared) on the development machine only.
SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "model_prices.json"
needs_source = pytest.mark.skipif(
    not SOURCE.is_file(),
    reason=f"LiteLLM source data {SOURCE} is not present (only on the development machine)",
)


def _committed_bytes() -> bytes:
    return (importlib.resources.files("sidegate.compiler") / "data" / "prices.json").read_bytes()


def _committed() -> dict[str, Any]:
    table: dict[str, Any] = json.loads(_committed_bytes())
    return table


def _source() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SOURCE.read_bytes())
    return data


# --- the committed table, read back through lookup --------------------------------------------


def test_gpt_4o_known_values() -> None:
    assert lookup("openai", "gpt-4o") == ModelInfo(
        input=2.5e-06,
        output=1e-05,
        cached_input=1.25e-06,
        max_input_tokens=128000,
        max_output_tokens=16384,
        mode="chat",
        vision=True,
        pdf=True,
    )
    assert lookup("openai", "gpt-5").reasoning and not lookup("openai", "gpt-4o").reasoning


def test_no_provider_falls_back_to_openai_exact_match() -> None:
    assert lookup(None, "gpt-4o") == lookup("openai", "gpt-4o")
    assert lookup(None, "openai/gpt-4o") is None
    # Only openai answers a provider-less lookup, even for names other providers know.
    assert lookup("groq", "openai/gpt-oss-120b") is not None
    assert lookup(None, "groq/openai/gpt-oss-120b") is None


def test_groq_prefix_stripped_in_table_and_lookup() -> None:
    groq = _committed()["providers"]["groq"]
    assert groq, "groq models expected in the table"
    assert not any(name.startswith("groq/") for name in groq)
    stripped = lookup("groq", "openai/gpt-oss-120b")
    assert stripped is not None
    assert lookup("groq", "groq/openai/gpt-oss-120b") == stripped
    assert stripped.mode == "chat"
    assert stripped.input > 0 and stripped.output > 0


def test_unknown_model_or_provider_is_none() -> None:
    assert lookup("openai", "no-such-model-xyz") is None
    assert lookup("no-such-provider", "gpt-4o") is None
    assert lookup(None, "no-such-model-xyz") is None
    # A prefix is only stripped when it names the provider being asked.
    assert lookup("openai", "groq/gpt-4o") is None


def test_known_models() -> None:
    names = known_models("openai")
    assert "gpt-4o" in names
    assert list(names) == sorted(names)
    assert len(set(names)) == len(names)
    assert known_models(None) == names
    assert known_models("no-such-provider") == ()
    assert set(known_models("groq")) == set(_committed()["providers"]["groq"])


def test_table_header_and_shape() -> None:
    table = _committed()
    assert table["_source"] == {
        "name": "litellm model_prices_and_context_window_backup.json",
        "version": "1.109.1",
        "license": "MIT",
        "copyright": "Copyright (c) 2023 Berri AI",
        "generated": pricegen.DEFAULT_GENERATED,
    }
    allowed = {"in", "out", "cached_in", "max_in", "max_out", "mode", "reasoning", "vision", "pdf"}
    count = 0
    for models in table["providers"].values():
        for entry in models.values():
            count += 1
            assert set(entry) <= allowed
            assert isinstance(entry["in"], float) and isinstance(entry["out"], float)
            assert entry["mode"] in pricegen.MODES
            assert entry.get("cached_in", 1.0) != 0
            for limit in ("max_in", "max_out"):
                assert limit not in entry or (type(entry[limit]) is int and entry[limit] > 0)
    assert count > 1000
    # Compact: one model per line, no indentation.
    assert _committed_bytes().count(b"\n") == 3 + len(table["providers"]) + count
    assert b"\n " not in _committed_bytes()


def test_lookup_2000_models_is_fast() -> None:
    lookup("openai", "gpt-4o")  # first load
    pairs: list[tuple[str | None, str]] = [
        (provider, name) for provider, models in _committed()["providers"].items() for name in models
    ]
    sample = random.Random(0).sample(pairs, 1900) + [(None, "gpt-4o")] * 50 + [("nope", "x")] * 50
    started = time.perf_counter()
    for provider, name in sample:
        lookup(provider, name)
    assert time.perf_counter() - started < 0.1


# --- against the LiteLLM source file (development machine only) ------------------------------


@needs_source
def test_gpt_4o_matches_source() -> None:
    raw = _source()["gpt-4o"]
    info = lookup("openai", "gpt-4o")
    assert info is not None
    assert info.input == raw["input_cost_per_token"]
    assert info.output == raw["output_cost_per_token"]
    assert info.cached_input == raw["cache_read_input_token_cost"]
    assert info.max_input_tokens == raw["max_input_tokens"]
    assert info.max_output_tokens == raw["max_output_tokens"]
    assert info.mode == raw["mode"]


@needs_source
def test_every_source_model_reads_back() -> None:
    """Each kept source entry is found by lookup under its provider with its own prices."""
    source = _source()
    claimed: set[tuple[str, str]] = set()
    checked = 0
    for key in sorted(source):
        raw = source[key]
        provider = raw.get("litellm_provider")
        if key == "sample_spec" or not provider or raw.get("mode") not in pricegen.MODES:
            continue
        if not isinstance(raw.get("input_cost_per_token"), int | float):
            continue  # priced per second/query/video only: left out, not listed as free
        name = key.removeprefix(provider + "/")
        if (provider, name) in claimed:  # collapsed onto an earlier key, which won
            continue
        claimed.add((provider, name))
        # Look up by the stored name: the full key may itself be another entry's stripped name
        # (perplexity/perplexity/sonar is stored as perplexity/sonar, perplexity/sonar as sonar).
        assert lookup(provider, key) is not None, key
        info = lookup(provider, name)
        assert info is not None, key
        assert info.input == raw["input_cost_per_token"], key
        assert info.output == raw.get("output_cost_per_token", 0.0), key
        assert info.cached_input == (raw.get("cache_read_input_token_cost") or None), key
        assert info.mode == raw["mode"], key
        checked += 1
    assert checked == sum(len(models) for models in _committed()["providers"].values())


@needs_source
def test_regenerating_gives_committed_bytes(tmp_path: Path) -> None:
    out = tmp_path / "prices.json"
    assert pricegen.main([str(SOURCE), "-o", str(out)]) == 0
    assert out.read_bytes() == _committed_bytes(), (
        "compiler/data/prices.json is stale: run python -m sidegate.compiler.data.pricegen " + str(SOURCE)
    )
    assert pricegen.generate(SOURCE) == _committed_bytes()


# --- generator rules on a synthetic source ---------------------------------------------------

_SYNTHETIC: dict[str, Any] = {
    "sample_spec": {"litellm_provider": "x", "mode": "chat", "input_cost_per_token": 0.0},
    "gpt-x": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 2e-06,
        "cache_read_input_token_cost": 5e-07,
        "max_input_tokens": 1000,
        "max_output_tokens": 100,
        "supports_vision": True,
        "supports_pdf_input": "yes",
        "supports_reasoning": False,
    },
    "openai/gpt-x": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 9.0,
        "output_cost_per_token": 9.0,
    },
    "groq/llama-3.1-8b-instant": {
        "litellm_provider": "groq",
        "mode": "chat",
        "input_cost_per_token": 5e-08,
        "output_cost_per_token": 8e-08,
        "cache_read_input_token_cost": 0.0,
        "max_input_tokens": 0,
    },
    "vertex_ai/foo": {
        "litellm_provider": "vertex_ai-language-models",
        "mode": "completion",
        "input_cost_per_token": 0,
        "output_cost_per_token": 0,
    },
    "mistral/mistral-embed": {
        "litellm_provider": "mistral",
        "mode": "embedding",
        "input_cost_per_token": 1e-07,
    },
    "per-second-chat": {"litellm_provider": "bedrock", "mode": "chat", "input_cost_per_second": 0.02},
    "dall-e-x": {"litellm_provider": "openai", "mode": "image_generation", "input_cost_per_token": 1.0},
    "no-provider": {"mode": "chat", "input_cost_per_token": 1.0, "output_cost_per_token": 1.0},
    "no-mode": {"litellm_provider": "openai", "input_cost_per_token": 1.0, "output_cost_per_token": 1.0},
}


def test_build_table_rules() -> None:
    assert pricegen.build_table(_SYNTHETIC) == {
        "openai": {
            "gpt-x": {
                "in": 1e-06,
                "out": 2e-06,
                "cached_in": 5e-07,
                "max_in": 1000,
                "max_out": 100,
                "mode": "chat",
                "vision": True,
            }
        },
        "groq": {"llama-3.1-8b-instant": {"in": 5e-08, "out": 8e-08, "mode": "chat"}},
        "vertex_ai-language-models": {"vertex_ai/foo": {"in": 0.0, "out": 0.0, "mode": "completion"}},
        "mistral": {"mistral-embed": {"in": 1e-07, "out": 0.0, "mode": "embedding"}},
    }


def test_render_is_deterministic_and_valid_json() -> None:
    shuffled = list(_SYNTHETIC.items())
    random.Random(1).shuffle(shuffled)
    first = pricegen.render(pricegen.build_table(_SYNTHETIC))
    second = pricegen.render(pricegen.build_table(dict(shuffled)))
    assert first == second
    parsed = json.loads(first)
    assert parsed["providers"] == pricegen.build_table(_SYNTHETIC)
    assert parsed["_source"]["generated"] == "2026-11-24"
    assert isinstance(parsed["providers"]["vertex_ai-language-models"]["vertex_ai/foo"]["in"], float)
    lines = first.decode().splitlines()
    gpt_x = '"gpt-x":{"cached_in":5e-07,"in":1e-06,"max_in":1000,"max_out":100,"mode":"chat","out":2e-06,"vision":true}}'
    assert [line.rstrip(",") for line in lines if line.startswith('"gpt-x"')] == [gpt_x]
    dated = pricegen.render(pricegen.build_table(_SYNTHETIC), generated="2000-01-01", version="0.0.1")
    assert json.loads(dated)["_source"]["generated"] == "2000-01-01"
    assert json.loads(dated)["_source"]["version"] == "0.0.1"


def test_cli_twice_is_byte_identical(tmp_path: Path) -> None:
    source = tmp_path / "source.json"
    source.write_text(json.dumps(_SYNTHETIC))
    outputs = []
    for name in ("a.json", "b.json"):
        out = tmp_path / "out" / name
        assert pricegen.main([str(source), "-o", str(out), "--generated", "2026-01-01"]) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["_source"]["generated"] == "2026-01-01"


def test_table_is_loaded_once() -> None:
    lookup("openai", "gpt-4o")
    before = prices._table.cache_info().misses
    for _ in range(100):
        lookup("openai", "gpt-4o")
        known_models("openai")
    assert prices._table.cache_info().misses == before
