"""Leaf resolution (durations, sizes, secret references) and what the pipeline derives from the catalogs."""

from __future__ import annotations

import pytest

from sidegate.compiler.pipeline import compile_text
from sidegate.compiler.resolve import parse_duration, parse_secret_text, parse_size
from sidegate.runtime.plan import Family, SecretPart, SecretSource


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), ("1.5s", 1.5), ("10m", 600.0), ("1h", 3600.0), ("1d", 86400.0), ("0ms", 0.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("1B", 1), ("1KB", 1000), ("1KiB", 1024), ("8MiB", 8 * 1024**2), ("2MB", 2_000_000), ("1GiB", 1024**3)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["5x", "1.5", "ms", "-1s"])
def test_bad_durations_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def _parts(text: str) -> list[tuple[str, str]]:
    return [(p.source.value, p.value) for p in parse_secret_text(text).parts]


def test_secret_text_splits_references_and_unescapes_dollars() -> None:
    assert _parts("${OPENAI_API_KEY}") == [("env", "OPENAI_API_KEY")]
    assert _parts("Bearer ${A}:${B_2}!") == [
        ("text", "Bearer "),
        ("env", "A"),
        ("text", ":"),
        ("env", "B_2"),
        ("text", "!"),
    ]
    assert _parts("cost $$5, pa$word") == [("text", "cost $5, pa$word")]
    assert _parts("$${NOT_A_REF}") == [("text", "${NOT_A_REF}")]
    assert _parts("") == []


@pytest.mark.parametrize("bad", ["${OPEN", "${}", "${1X}", "x ${A-B} y"])
def test_malformed_references_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_secret_text(bad)


SPEC = """\
version: 1
server: {listen: "0.0.0.0:9000"}
providers:
  openai: {type: openai, api_key: {env: OPENAI_API_KEY}}
  azure: {type: azure, base_url: "https://x.openai.azure.com", api_version: "2024-10-21", api_key: {file: /k}}
  fake: {type: mock}
models:
  gpt-4o:
    targets: [{provider: openai, model: gpt-4o}, {provider: azure, model: gpt-4o}]
  demo:
    targets: [{provider: fake, model: demo}]
"""


def test_catalog_supplies_family_base_url_and_auth() -> None:
    plan = compile_text(SPEC, "s.yaml").plan
    assert plan is not None
    openai, azure, fake = plan.provider("openai"), plan.provider("azure"), plan.provider("fake")
    assert (openai.family, openai.base_url, openai.auth and openai.auth.header) == (
        Family.OPENAI,
        "https://api.openai.com/v1",
        "Authorization",
    )
    assert (azure.family, azure.api_version, azure.auth and azure.auth.header) == (
        Family.AZURE,
        "2024-10-21",
        "api-key",
    )
    assert azure.api_key is not None and azure.api_key.parts == (SecretPart(source=SecretSource.FILE, value="/k"),)
    assert fake.mock is not None and openai.mock is None
    assert (plan.server.host, plan.server.port) == ("0.0.0.0", 9000)


def test_price_table_supplies_prices_and_context() -> None:
    plan = compile_text(SPEC, "s.yaml").plan
    assert plan is not None
    target = plan.models[1].targets[0]
    assert target.id == "openai/gpt-4o"
    assert target.price is not None and target.price.input > 0 and target.price.output > target.price.input
    assert target.max_input_tokens is not None and target.max_input_tokens > 0
    assert plan.models[0].targets[0].price is None  # mock: no price provider


def test_plan_does_not_depend_on_mapping_order() -> None:
    lines = SPEC.splitlines()
    reordered = "\n".join([lines[0], *lines[6:], lines[1], *lines[2:6]]) + "\n"
    first, second = compile_text(SPEC, "a.yaml").plan, compile_text(reordered, "b.yaml").plan
    assert first is not None and first == second
    assert [g.name for g in first.models] == ["demo", "gpt-4o"]
