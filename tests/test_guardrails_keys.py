"""Per-key guardrails through the admin API: `/key/generate` and `/key/update` take `guardrails:
[names]` of the plan's declared guardrails (an unknown one is a 400 `unknown_guardrail`, nothing
stored), `/key/info` shows them, and the key's requests (official `openai` SDK) run them like a
spec key's; a key's list can be changed and emptied."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
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
  oa: {{type: openai, base_url: "{url}", api_key: "${{GUARD_UPSTREAM_KEY}}"}}
auth:
  master_key: "${{GUARD_MASTER}}"
store:
  database: "sqlite:///{db}"
guardrails:
  secrets: {{kind: regex, presets: [api_keys]}}
  falcon: {{kind: keywords, words: [project falcon]}}
models:
  chat: {{targets: [{{provider: oa, model: gpt-4o-mini}}]}}
"""
MASTER = {"Authorization": "Bearer sk-master-0003"}
SECRET = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARD_UPSTREAM_KEY", "sk-upstream-0001")
    monkeypatch.setenv("GUARD_MASTER", "sk-master-0003")


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, CountingOpenAI]]:
    async with open_fake(CountingOpenAI()) as up:
        result = compile_text(SPEC.format(url=up.base_url, db=tmp_path / "s.db"), "guardrails.yaml")
        assert result.plan is not None, [d.format_text() for d in result.diagnostics]
        async with open_gateway(result.plan) as gw:
            url = f"http://127.0.0.1:{gw.port}"
            async with httpx.AsyncClient(base_url=url) as http:
                while (await http.get("/health/ready")).status_code != 200:
                    await trio.sleep(0.02)
            yield url, up


async def ask(url: str, key: str, text: str) -> str:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    r = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": text}])
    return r.choices[0].message.content or ""


async def test_a_key_gets_its_own_guardrails_through_the_admin_api(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with served(tmp_path) as (url, up), httpx.AsyncClient(base_url=url, headers=MASTER) as admin:
            refused = await admin.post("/key/generate", json={"key_alias": "x", "guardrails": ["secret"]})
            assert refused.status_code == 400
            error = refused.json()["error"]
            assert error["code"] == "unknown_guardrail" and error["param"] == "guardrails"
            assert "did you mean 'secrets'" in error["message"]
            assert (await admin.post("/key/generate", json={"guardrails": "secrets"})).status_code == 400
            made = (await admin.post("/key/generate", json={"key_alias": "guarded",
                                                             "guardrails": ["secrets", "falcon"]})).json()
            assert made["guardrails"] == ["secrets", "falcon"]
            plain = (await admin.post("/key/generate", json={"key_alias": "plain"})).json()
            assert plain["guardrails"] == []
            info = (await admin.get("/key/info", params={"key": made["key"]})).json()
            assert info["info"]["guardrails"] == ["secrets", "falcon"]

            with pytest.raises(openai.BadRequestError) as caught:
                await ask(url, made["key"], f"my key is {SECRET}")
            assert isinstance(caught.value.body, dict) and caught.value.body["guardrail"] == "secrets"
            with pytest.raises(openai.BadRequestError):
                await ask(url, made["key"], "about project falcon")
            assert await ask(url, plain["key"], "about project falcon") == "Answer 1 to: about project falcon"
            assert up.calls == 1

            bad = await admin.post("/key/update", json={"key": made["key"], "guardrails": ["nope"]})
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "unknown_guardrail"
            kept = (await admin.get("/key/info", params={"key": made["key"]})).json()["info"]["guardrails"]
            assert kept == ["secrets", "falcon"], "a refused update changes nothing"
            updated = (await admin.post("/key/update", json={"key": made["key"], "guardrails": ["falcon"]})).json()
            assert updated["guardrails"] == ["falcon"]
            assert await ask(url, made["key"], f"key {SECRET}") == f"Answer 2 to: key {SECRET}"
            with pytest.raises(openai.BadRequestError):
                await ask(url, made["key"], "project falcon")
            await admin.post("/key/update", json={"key": made["key"], "guardrails": []})
            assert await ask(url, made["key"], "project falcon") == "Answer 3 to: project falcon"
            assert up.calls == 3
