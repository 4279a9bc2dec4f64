"""Voyage AI behind sidegate, end to end: the official `cohere` SDK's `ClientV2.rerank` (Cohere's v2
shape, translated to Voyage's rerank and back) and the `openai` SDK's embeddings, against sidegate
compiled from a spec and served in-process in front of a fake Voyage that refuses what Voyage
refuses. The fake sees Voyage's shape, the client gets its own, spend rows carry the token price
from the tables, and Voyage's errors reach the client in OpenAI's envelope with the right status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cohere
import httpx
import openai
import pytest
import trio
from cohere.core.request_options import RequestOptions

from sidegate.compiler.pipeline import compile_text
from tests.support.fake_base import open_fake
from tests.support.fake_voyage import FakeVoyage, tokens, vector
from tests.support.gateway import open_gateway
from tests.support.spend_logs import spend_row

SPEC = """\
version: 1
providers:
  voyage: {{type: voyage, base_url: "{vo}/v1", api_key: "${{VOY_KEY}}"}}
  voyage-wrong: {{type: voyage, base_url: "{vo}/v1", api_key: "${{VOY_WRONG_KEY}}"}}
models:
  rerank-2.5: {{targets: [{{provider: voyage, model: rerank-2.5}}]}}
  rerank-2-lite: {{targets: [{{provider: voyage, model: rerank-2-lite}}]}}
  rerank-busy:
    targets: [{{provider: voyage, model: rerank-2.5-lite, headers: {{X-Fake-Mode: limited}}}}]
    retry: {{attempts: 1}}
  rerank-wrong-key: {{targets: [{{provider: voyage-wrong, model: rerank-2}}], retry: {{attempts: 1}}}}
  rerank-held: {{targets: [{{provider: voyage, model: rerank-2.5, headers: {{X-Fake-Mode: hold}}}}]}}
  voyage-3.5: {{targets: [{{provider: voyage, model: voyage-3.5}}]}}
auth:
  master_key: "${{VOY_MASTER}}"
  keys:
    - {{name: ci, key: "${{VOY_CLIENT}}"}}
    - {{name: thrifty, key: "${{VOY_THRIFTY}}", budget: {{amount: 0.0001, period: 30d}}}}
store: {{database: "sqlite:///{db}"}}
"""
KEYS = {"VOY_KEY": "voyage-upstream", "VOY_WRONG_KEY": "voyage-revoked", "VOY_MASTER": "sk-voy-master",
        "VOY_CLIENT": "sk-voy-ci", "VOY_THRIFTY": "sk-voy-thrifty"}
DOCS = ["Carson City is the capital of Nevada.", "Washington, D.C. is the capital of the United States.",
        "Capital punishment exists in some states."]
QUERY = "What is the capital of the United States?"


@dataclass
class Stack:
    root: str
    vo: FakeVoyage

    def cohere(self) -> cohere.AsyncClientV2:
        return cohere.AsyncClientV2(base_url=self.root, api_key=KEYS["VOY_CLIENT"])

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.root}/v1", api_key=KEYS["VOY_CLIENT"], max_retries=0)

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.root) as h:
            return await h.post(path, json=body, headers={"authorization": f"Bearer {KEYS['VOY_CLIENT']}"})

    async def spend(self, rid: str) -> dict[str, Any]:
        """The spend row of request `rid`, once the spend writer has stored it."""
        return await spend_row(self.root, KEYS["VOY_MASTER"], rid)


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


@asynccontextmanager
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_fake(FakeVoyage()) as vo:
        result = compile_text(SPEC.format(vo=vo.root, db=tmp_path / "voyage.db"), "voyage.yaml")
        assert result.plan is not None, [d.format_text() for d in result.diagnostics]
        assert not [d for d in result.diagnostics if d.code.startswith("cost.")], "voyage models are priced"
        async with open_gateway(result.plan) as gw:
            yield Stack(f"http://127.0.0.1:{gw.port}", vo)


def rid(value: str) -> RequestOptions:
    return {"additional_headers": {"x-request-id": value}, "max_retries": 0}


async def test_rerank_with_the_cohere_sdk_reaches_voyage_in_its_shape(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        r = await s.cohere().rerank(model="rerank-2.5", query=QUERY, documents=DOCS, top_n=2,
                                    request_options=rid("vr-1"))
        assert [x.index for x in r.results] == [1, 0] and r.results[0].relevance_score > r.results[1].relevance_score
        seen = s.vo.seen[-1]
        assert seen.path == "/v1/rerank" and seen.headers["authorization"] == "Bearer voyage-upstream"
        assert seen.body == {"query": QUERY, "documents": DOCS, "model": "rerank-2.5", "top_k": 2}
        billed = tokens(QUERY) * len(DOCS) + sum(tokens(d) for d in DOCS)
        assert r.meta is not None and r.meta.billed_units is not None and r.meta.billed_units.input_tokens == billed
        row = await s.spend("vr-1")
        assert row["prompt_tokens"] == billed and row["cost"] == pytest.approx(billed * 0.05e-6)  # $0.05 / 1M

        # documents as {text}, return_documents, Voyage's own truncation: Voyage's shape upstream, Cohere's back
        got = await s.post("/v1/rerank", {"model": "rerank-2-lite", "query": "capital of Nevada", "truncation": False,
                                          "documents": [{"text": d} for d in DOCS], "return_documents": True})
        assert got.status_code == 200, got.text
        answer = got.json()
        assert answer["results"][0] == {"index": 0, "relevance_score": answer["results"][0]["relevance_score"],
                                        "document": {"text": DOCS[0]}}
        assert set(answer) == {"id", "results", "meta"} and len(answer["results"]) == 3
        assert s.vo.seen[-1].body == {"query": "capital of Nevada", "documents": DOCS, "model": "rerank-2-lite",
                                      "truncation": False, "return_documents": True}
        assert got.headers["x-sidegate-deployment"] == "voyage/rerank-2-lite"


async def test_rerank_faults_relayed_in_openais_envelope(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        sent = len(s.vo.seen)
        # what sidegate cannot translate: refused before Voyage is called
        no_cap = await s.post("/v2/rerank", {"model": "rerank-2.5", "query": "q", "documents": DOCS,
                                             "max_tokens_per_doc": 100})
        assert no_cap.status_code == 400 and no_cap.json()["error"]["param"] == "max_tokens_per_doc"
        objects = await s.post("/v2/rerank", {"model": "rerank-2.5", "query": "q", "documents": [{"title": "x"}]})
        assert objects.status_code == 400 and objects.json()["error"]["param"] == "documents"
        assert len(s.vo.seen) == sent
        # what Voyage refuses: its 400 and its words, in OpenAI's envelope
        with pytest.raises(cohere.BadRequestError) as zero:
            await s.cohere().rerank(model="rerank-2.5", query="q", documents=DOCS, top_n=0,
                                    request_options={"max_retries": 0})
        assert zero.value.status_code == 400 and "top_k" in zero.value.body["error"]["message"]
        assert s.vo.seen[-1].body["top_k"] == 0
        many = await s.post("/v1/rerank", {"model": "rerank-2.5", "query": "q", "documents": ["d"] * 1001})
        assert many.status_code == 400 and "cannot exceed 1000" in many.json()["error"]["message"]
        unknown = await s.post("/v1/rerank", {"model": "rerank-2.5", "query": "q", "documents": DOCS,
                                              "rank_fields": ["text"]})
        assert unknown.status_code == 400 and "rank_fields" in unknown.json()["error"]["message"]

        # Voyage's 429 with its retry-after; its 401 (sidegate's key) is not the client's fault
        with pytest.raises(cohere.TooManyRequestsError) as busy:
            await s.cohere().rerank(model="rerank-busy", query="q", documents=DOCS, request_options=rid("vr-429"))
        assert busy.value.status_code == 429 and (busy.value.headers or {}).get("retry-after") == "7"
        assert "exceeded your TPM rate limit" in busy.value.body["error"]["message"]
        assert (await s.spend("vr-429"))["status"] == 429
        wrong = await s.post("/v1/rerank", {"model": "rerank-wrong-key", "query": "q", "documents": DOCS})
        assert wrong.status_code == 502 and wrong.json()["error"]["code"] == "upstream_auth_error"
        assert "voyage-revoked" not in wrong.text and "voyage-upstream" not in wrong.text


async def test_embeddings_with_the_openai_sdk(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        c = s.openai()
        texts = ["hello world", "a longer piece of text"]
        r = await c.embeddings.create(model="voyage-3.5", input=texts, dimensions=256,
                                      extra_headers={"x-request-id": "ve-1"})  # base64, the SDK's default
        assert [len(d.embedding) for d in r.data] == [256, 256] and [d.index for d in r.data] == [0, 1]
        assert r.data[1].embedding == pytest.approx(vector(texts[1], 256))
        assert s.vo.seen[-1].path == "/v1/embeddings"
        assert s.vo.seen[-1].body == {"model": "voyage-3.5", "input": texts, "output_dimension": 256}
        used = sum(tokens(t) for t in texts)
        assert r.usage.prompt_tokens == used == r.usage.total_tokens
        row = await s.spend("ve-1")
        assert row["prompt_tokens"] == used and row["cost"] == pytest.approx(used * 0.06e-6)  # voyage-3.5: $0.06 / 1M

        floats = await c.embeddings.create(model="voyage-3.5", input="query text", encoding_format="float",
                                           extra_body={"input_type": "query"})
        assert floats.data[0].embedding == pytest.approx(vector("query text", 1024))
        assert s.vo.seen[-1].body == {"model": "voyage-3.5", "input": ["query text"], "input_type": "query"}

        sent = len(s.vo.seen)
        with pytest.raises(openai.BadRequestError) as user:
            await c.embeddings.create(model="voyage-3.5", input="x", user="u-1")
        assert user.value.code == "unsupported_parameter" and user.value.param == "user"
        with pytest.raises(openai.BadRequestError) as ids:
            await c.embeddings.create(model="voyage-3.5", input=[[1, 2, 3]])
        assert ids.value.param == "input"
        with pytest.raises(openai.BadRequestError) as chat:
            await c.chat.completions.create(model="voyage-3.5", messages=[{"role": "user", "content": "hi"}])
        assert "voyage" in chat.value.message
        assert len(s.vo.seen) == sent
        with pytest.raises(openai.BadRequestError, match="output_dimension 100 is not supported"):
            await c.embeddings.create(model="voyage-3.5", input="x", dimensions=100)  # Voyage's own 400


async def test_a_budget_holds_a_token_priced_rerank_in_flight(tmp_path: Path) -> None:
    """A Voyage rerank is billed by tokens (the query once per document, and each document): while one
    that may cost more than the $0.0001 budget is in flight, the key's next call is refused."""
    docs = ["word " * 50] * 40
    async with stack(tmp_path) as s:
        thrifty = cohere.AsyncClientV2(base_url=s.root, api_key=KEYS["VOY_THRIFTY"])
        done: list[Any] = []

        async def first() -> None:
            done.append(await thrifty.rerank(model="rerank-held", query="capital", documents=docs,
                                             request_options=rid("vr-held")))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            with trio.fail_after(10):
                while not any(x.headers.get("x-fake-mode") == "hold" for x in s.vo.seen):
                    await trio.sleep(0.01)
            c = openai.AsyncOpenAI(base_url=f"{s.root}/v1", api_key=KEYS["VOY_THRIFTY"], max_retries=0)
            with pytest.raises(openai.RateLimitError) as refused:
                await c.embeddings.create(model="voyage-3.5", input="x")
            assert refused.value.code == "budget_exceeded"
            s.vo.release.set()
        assert len(done[0].results) == 40
        billed = 1 * 40 + 50 * 40
        assert (await s.spend("vr-held"))["cost"] == pytest.approx(billed * 0.05e-6)
