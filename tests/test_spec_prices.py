"""Prices declared in the spec: a target's own `price` (USD per 1M tokens) and `base_model` (a custom
deployment name priced from the table) are compiled into the plan, shown by `sidegate explain`,
and charged exactly by the running gateway (a real fake OpenAI upstream reporting usage); lint
warns, without failing, about a budgeted group whose deployment has no price, and a fail-closed
budget (`unknown_price: refuse`) refuses it."""

from __future__ import annotations

from fractions import Fraction

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from sidegate.compiler.cli.explain import explain
from sidegate.compiler.data.prices import lookup
from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan import PriceSource
from tests.support.gateway import open_gateway
from tests.support.upstream import open_fake_openai

SPEC = """
version: 1
providers:
  azure-ish: {{type: openai, base_url: "{url}", api_key: "${{TEST_UP_KEY}}"}}
  local: {{type: openai-compatible, base_url: "{url}"}}
models:
  prod:
    targets: [{{provider: azure-ish, model: gpt-4o-prod, base_model: gpt-4o}}]
  vllm:
    targets: [{{provider: local, model: llama-local, price: {{input: 0.2, output: 0.6}}}}]
  unpriced:
    targets: [{{provider: local, model: mystery}}]
auth:
  master_key: ${{TEST_MASTER}}
  keys:
    - {{name: app, key: "${{TEST_APP_KEY}}", team: eng}}
teams:
  eng: {{budget: {{amount: 10, period: 1d, unknown_price: refuse}}}}
"""


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_UP_KEY", "sk-up")
    monkeypatch.setenv("TEST_MASTER", "sk-master-secret")
    monkeypatch.setenv("TEST_APP_KEY", "sk-app-secret")


def _compile(url: str = "http://127.0.0.1:9/v1"):  # type: ignore[no-untyped-def]
    return compile_text(SPEC.format(url=url), "spec.yaml")


def test_declared_price_and_base_model_are_compiled_and_explained() -> None:
    result = _compile()
    assert result.plan is not None, result.diagnostics
    targets = {g.name: g.targets[0] for g in result.plan.models}
    gpt4o = lookup("openai", "gpt-4o")
    assert gpt4o is not None
    prod, vllm = targets["prod"], targets["vllm"]
    assert prod.price_source is PriceSource.BASE_MODEL and prod.base_model == "gpt-4o"
    assert prod.price is not None and prod.price.input == gpt4o.input and prod.price.output == gpt4o.output
    assert prod.max_output_tokens == gpt4o.max_output_tokens, "the base model's limits come along"
    assert vllm.price_source is PriceSource.SPEC and vllm.price is not None
    assert (vllm.price.input, vllm.price.output) == (2e-07, 6e-07), "the decimal prices, not 0.2 / 1e6"
    assert targets["unpriced"].price is None
    assert "(price table, as base_model 'gpt-4o')" in explain(result.plan, "prod")
    assert "$0.2 input / $0.6 output per 1M tokens (declared in the spec)" in explain(result.plan, "vllm")
    assert "unknown" in explain(result.plan, "unpriced")
    warnings = [(d.code, d.pointer) for d in result.diagnostics]
    assert ("cost.unpriced-budgeted", "/models/unpriced/targets/0") in warnings
    assert all(not d.is_error for d in result.diagnostics)
    assert not any(p.startswith(("/models/prod", "/models/vllm")) for _, p in warnings), warnings


def test_unknown_base_model_warns_at_its_node() -> None:
    result = compile_text(SPEC.format(url="http://127.0.0.1:9/v1").replace("base_model: gpt-4o", "base_model: gpt-4oo"),
                          "spec.yaml")
    found = [d for d in result.diagnostics if d.code == "cost.unknown-model"]
    assert found and found[0].pointer == "/models/prod/targets/0/base_model" and "gpt-4o" in found[0].message


async def test_custom_price_and_base_model_are_charged_exactly() -> None:
    gpt4o = lookup("openai", "gpt-4o")
    assert gpt4o is not None and gpt4o.cached_input is not None
    # The fake upstream reports 11 prompt tokens (4 of them cached) and 2 completion tokens.
    want = {
        "prod": 7 * gpt4o.input + 4 * gpt4o.cached_input + 2 * gpt4o.output,
        "vllm": 11 * 0.2e-6 + 2 * 0.6e-6,  # no cached_input declared: cached tokens at the input price
    }
    with trio.fail_after(30):
        async with open_fake_openai() as fake:
            result = _compile(fake.base_url)
            assert result.plan is not None
            async with open_gateway(result.plan) as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as c:
                for model in want:
                    r = await c.post("/v1/chat/completions", headers={"authorization": "Bearer sk-app-secret",
                                                                      "x-request-id": f"req-{model}"},
                                     json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
                    assert r.status_code == 200, r.text
                refused = await c.post("/v1/chat/completions", headers={"authorization": "Bearer sk-app-secret"},
                                       json={"model": "unpriced", "messages": [{"role": "user", "content": "hi"}]})
                writer = gw.app.access.spend
                assert writer is not None
                while writer.pending:
                    await trio.sleep(0.02)
                rows = (await c.get("/spend/logs", headers={"authorization": "Bearer sk-master-secret"})).json()["data"]
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "price_unknown", "fail-closed budget"
    charged = {row["request_id"][4:]: row["cost"] for row in rows}
    assert charged == {m: pytest.approx(v, rel=1e-6) for m, v in want.items()}
    assert [s.body["model"] for s in fake.seen] == ["gpt-4o-prod", "llama-local"], "the deployment name is sent"


PRICES = st.floats(min_value=0, allow_nan=False, allow_infinity=False) | st.integers(min_value=0, max_value=10**30)


@settings(max_examples=200, deadline=None)
@given(PRICES, PRICES, st.none() | PRICES)
def test_any_declared_price_compiles_to_the_decimal_per_token(input_: float, output: float,
                                                              cached: float | None) -> None:
    price = f"{{input: {input_!r}, output: {output!r}" + (f", cached_input: {cached!r}}}" if cached is not None else "}")
    spec = f"""
version: 1
providers: {{local: {{type: openai-compatible, base_url: "http://127.0.0.1:9/v1"}}}}
models: {{m: {{targets: [{{provider: local, model: x, price: {price}}}]}}}}
"""
    result = compile_text(spec, "spec.yaml")
    assert result.plan is not None, result.diagnostics
    got = result.plan.models[0].targets[0].price
    assert got is not None and got.input == _per_token(input_) and got.output == _per_token(output)
    assert got.cached_input == (None if cached is None else _per_token(cached))


def _per_token(per_million: float) -> float:
    return float(Fraction(repr(per_million)) / 1_000_000)  # exact rational arithmetic, rounded once
