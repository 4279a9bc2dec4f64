"""Semantic mode with Qdrant's embedded local mode (on disk in the test's directory) and a fake
embedding upstream whose vectors the test chooses: a paraphrase close enough is a hit, one below the
threshold a miss, another team or other parameters never match, and a failing embedding group
leaves requests served live."""

from __future__ import annotations

import math
from pathlib import Path

import openai
import pytest
import trio

from sidegate.compiler.pipeline import compile_text
from tests.support.cache_fakes import CountingOpenAI
from tests.support.fake_base import open_fake
from tests.support.gateway import open_gateway

SPEC = """\
version: 1
providers:
  oa: {{type: openai, base_url: "{url}", api_key: "${{CACHE_UPSTREAM_KEY}}"}}
models:
  fast: {{targets: [{{provider: oa, model: gpt-4o-mini}}]}}
  embed: {{targets: [{{provider: oa, model: text-embedding-3-small}}]}}
  broken-embed: {{targets: [{{provider: oa, model: fail}}], retry: {{attempts: 1}}}}
cache:
  mode: semantic
  semantic: {{embedding: {embedding}, threshold: 0.9, qdrant: {{path: "{path}"}}}}
auth:
  master_key: "${{CACHE_MASTER}}"
  keys:
    - {{name: a, key: "${{CACHE_KEY_A}}", team: alpha}}
    - {{name: b, key: "${{CACHE_KEY_B}}", team: beta}}
teams: {{alpha: {{}}, beta: {{}}}}
"""
ORIGINAL = "What is the capital of France?"
PARAPHRASE = "Tell me France's capital city."
UNRELATED = "Tell me France's population."


def _at(angle: float) -> list[float]:
    """A unit vector at `angle` radians from (1, 0, 0): its cosine similarity with that is cos(angle)."""
    return [math.cos(angle), math.sin(angle), 0.0]


async def _ask(port: int, key: str, text: str, **kw: object) -> tuple[str, str]:
    c = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
    r = await c.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": text}], temperature=0, **kw)  # type: ignore[call-overload]
    return r.headers["x-sidegate-cache"], r.parse().choices[0].message.content or ""


@pytest.mark.parametrize("embedding", ["embed", "broken-embed"])
async def test_semantic_hits_above_the_threshold_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      embedding: str) -> None:
    for name, value in {"CACHE_UPSTREAM_KEY": "sk-up", "CACHE_MASTER": "sk-master-0001",
                        "CACHE_KEY_A": "sk-team-alpha-01", "CACHE_KEY_B": "sk-team-beta-001"}.items():
        monkeypatch.setenv(name, value)
    up = CountingOpenAI(vectors={
        f"user: {ORIGINAL}": _at(0.0),
        f"user: {PARAPHRASE}": _at(math.acos(0.95)),  # similarity 0.95: over the 0.9 threshold
        f"user: {UNRELATED}": _at(math.acos(0.8)),  # 0.8: under it
    })
    async with open_fake(up):
        text = SPEC.format(url=up.base_url, embedding=embedding, path=tmp_path / "qdrant")
        result = compile_text(text, "semantic.yaml")
        assert result.plan is not None, [d.format_text() for d in result.diagnostics]
        with trio.fail_after(60):
            async with open_gateway(result.plan) as gw:
                a, b = "sk-team-alpha-01", "sk-team-beta-001"
                first = await _ask(gw.port, a, ORIGINAL)
                paraphrase = await _ask(gw.port, a, PARAPHRASE)
                unrelated = await _ask(gw.port, a, UNRELATED)
                other_team = await _ask(gw.port, b, PARAPHRASE)
                other_params = await _ask(gw.port, a, PARAPHRASE, max_tokens=20)
                exact = await _ask(gw.port, a, ORIGINAL)
    if embedding == "broken-embed":  # no vector: semantic lookups miss, exact ones still hit
        assert [first[0], paraphrase[0], unrelated[0], other_team[0], other_params[0]] == ["miss"] * 5
        assert exact == ("hit", first[1]) and up.calls == 5
        return
    assert first[0] == "miss"
    assert paraphrase == ("hit", first[1]), "a paraphrase at similarity 0.95 is a hit"
    assert unrelated[0] == "miss", "similarity 0.8 is below the threshold"
    assert other_team[0] == "miss", "another team's vectors are never searched"
    assert other_params[0] == "miss", "other parameters are another context"
    assert exact == ("hit", first[1])
    assert up.calls == 4 and up.embedding_calls == 5, "an exact hit needs no embedding"
