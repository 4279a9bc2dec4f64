"""The native providers end to end: the official `openai` SDK against sidegate served in-process,
in front of real local fake upstreams speaking Anthropic's, Gemini's (AI Studio and Vertex AI),
Bedrock's and Cohere's wire formats. For each: text, streamed text, parallel tool calls (whole and
streamed), an upstream error and a mid-stream error reach the client with the right content, tool
call ids and arguments, finish_reason and usage.

Credentials are real flows against local stand-ins: Vertex AI exchanges a service-account key
(a freshly generated RSA key) at a local token endpoint; Bedrock signs with SigV4 from environment
credentials, and the signature is checked against the bytes the upstream received."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import trio

from sidegate.runtime.plan import Family, Plan, Secret, SecretPart, SecretSource
from sidegate.runtime.upstream.transport import UpstreamRequest
from tests.support.fake_anthropic import FakeAnthropic, FakeVertexClaude
from tests.support.fake_base import FakeServer, open_fake
from tests.support.fake_bedrock import FakeBedrock
from tests.support.fake_cohere import FakeCohere
from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import group, native_provider, plan, target
from tests.test_provider_auth import FakeTokenEndpoint, _service_account, _sigv4

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


@dataclass(frozen=True)
class Case:
    """What one fake upstream answers (see its module's docstring), as the OpenAI client sees it."""

    name: str
    family: Family
    text: str
    usage: tuple[int, int, int]
    """prompt, completion, cached tokens of the whole answer."""
    stream_text: str
    stream_usage: tuple[int, int]
    call_ids: tuple[str, str] | None
    """The upstream's tool call ids; None where the upstream has none and sidegate makes them up."""
    rate_mode: str
    rate_message: str
    retry_after: str | None
    """The upstream's Retry-After as relayed (None: the upstream sends none, and none is made up)."""


CASES = [
    Case("anthropic", Family.ANTHROPIC, "Hi! My name is Claude.", (2215, 503, 100), "Okay, let's check.", (472, 89),
         ("toolu_00", "toolu_01"), "rate-429", "per-minute rate limit", "7"),
    Case("vertex-claude", Family.VERTEX, "Hi! My name is Claude.", (2215, 503, 100), "Okay, let's check.", (472, 89),
         ("toolu_00", "toolu_01"), "rate-429", "per-minute rate limit", "7"),
    Case("gemini", Family.GEMINI, "Hi there!", (12, 9, 4), "Hi there!", (12, 9), None, "rate-429",
         "exceeded your current quota", "7"),
    Case("vertex", Family.VERTEX, "Hi there!", (12, 9, 4), "Hi there!", (12, 9), None, "rate-429",
         "exceeded your current quota", "7"),
    Case("bedrock", Family.BEDROCK, "Hi there!", (40, 4, 10), "Hi there!", (30, 4), ("tooluse_0", "tooluse_1"),
         "throttled", "Too many requests", None),
    Case("cohere", Family.COHERE, "LLMs stand for Large Language Models.", (5, 418, 2), "Hi there!", (5, 418),
         ("get_weather_0x", "get_time_1x"), "rate-429", "Trial key", "7"),
]
FAKES: dict[str, type[FakeServer]] = {"anthropic": FakeAnthropic, "gemini": FakeGemini, "vertex": FakeGemini,
                                      "vertex-claude": FakeVertexClaude,
                                      "bedrock": FakeBedrock, "cohere": FakeCohere}
KEYS = {"anthropic": "sk-ant-test", "gemini": "AIza-test", "cohere": "co-test"}
MESSAGES: list[Any] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": name, "description": f"{name} of a place", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}
    for name in ("get_weather", "get_time")
]


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(f"{name.upper()}_KEY", value)
    # botocore's default chain finds exactly these, and nothing from the machine.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)


def _plan(case: Case, fake: Any, key_file: Path | None) -> Plan:
    base = {"anthropic": lambda: fake.base_url, "gemini": lambda: fake.base_url, "cohere": lambda: fake.base_url,
            "vertex": lambda: fake.vertex_base_url("proj", "us-central1"), "bedrock": lambda: fake.base_url,
            "vertex-claude": lambda: fake.vertex_base_url("proj", "us-central1")}[case.name]()
    credentials = None
    if key_file is not None:
        credentials = Secret(parts=(SecretPart(source=SecretSource.FILE, value=str(key_file)),))
    key_env = f"{case.name.upper()}_KEY" if case.name in KEYS else None
    provider = native_provider("up", case.family, base, key_env, credentials=credentials,
                               region="us-east-1" if case.family is Family.BEDROCK else "us-central1",
                               project="proj" if case.family is Family.VERTEX else None)
    claude = "claude-" if case.name == "vertex-claude" else ""  # Vertex serves Claude ids as Anthropic's
    models = [group("chat", target("up", f"{claude}ok")), group("limited", target("up", f"{claude}{case.rate_mode}")),
              group("breaks", target("up", f"{claude}stream-error"))]
    return plan([provider], models)


@asynccontextmanager
async def open_case(
    case: Case, tmp_path: Path
) -> AsyncIterator[tuple[openai.AsyncOpenAI, FakeServer, FakeServer]]:
    """The fake upstream, a token endpoint (Vertex AI's), sidegate in front, an SDK client."""
    async with open_fake(FakeTokenEndpoint()) as tokens, open_fake(FAKES[case.name]()) as fake:
        key_file = None
        if case.family is Family.VERTEX:
            key_file = tmp_path / "sa.json"
            key_file.write_text(json.dumps(_service_account(f"{tokens.root}/token")))
        async with open_gateway(_plan(case, fake, key_file)) as gw:
            yield openai.AsyncOpenAI(base_url=base_url(gw), api_key="unused", max_retries=0), fake, tokens


def _check_credentials(case: Case, fake: FakeServer) -> None:
    seen = fake.seen[-1]
    if case.name == "anthropic":
        assert seen.headers["x-api-key"] == "sk-ant-test" and seen.headers["anthropic-version"] == "2023-06-01"
    elif case.name == "gemini":
        assert seen.headers["x-goog-api-key"] == "AIza-test"
    elif case.name == "vertex":
        assert seen.headers["authorization"] == "Bearer ya29.fake", "token from the local token endpoint"
        assert seen.path.startswith("/v1/projects/proj/locations/us-central1/publishers/google/models/ok:")
    elif case.name == "vertex-claude":
        assert seen.headers["authorization"] == "Bearer ya29.fake" and "anthropic-version" not in seen.headers
        assert seen.path.startswith("/v1/projects/proj/locations/us-central1/publishers/anthropic/models/claude-ok:")
        assert seen.body["anthropic_version"] == "vertex-2023-10-16" and "model" not in seen.body
    elif case.name == "cohere":
        assert seen.headers["authorization"] == "Bearer co-test"
    else:
        auth = seen.headers["authorization"]
        assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") and "/us-east-1/bedrock/" in auth
        # The signature covers exactly what the upstream received (Host header included).
        received = UpstreamRequest(seen.method, f"http://{seen.headers['host']}{seen.path}",
                                   tuple(seen.headers.items()), seen.raw, 5.0)
        assert auth.rsplit("Signature=", 1)[1] == _sigv4(received, AWS_SECRET, "us-east-1")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_text_whole_and_streamed(case: Case, tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_case(case, tmp_path) as (client, fake, tokens):
            whole = await client.chat.completions.create(model="chat", messages=MESSAGES)
            _check_credentials(case, fake)
            stream = await client.chat.completions.create(model="chat", messages=MESSAGES, stream=True,
                                                          stream_options={"include_usage": True})
            chunks = [c async for c in stream]
            _check_credentials(case, fake)
    assert len(tokens.seen) == (1 if case.family is Family.VERTEX else 0), "one token serves both requests"
    choice = whole.choices[0]
    assert choice.message.content == case.text and choice.finish_reason == "stop"
    assert whole.usage is not None
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == case.usage[:2]
    assert whole.usage.prompt_tokens_details is not None
    assert whole.usage.prompt_tokens_details.cached_tokens == case.usage[2]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == case.stream_text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == case.stream_usage


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_parallel_tool_calls_whole_and_streamed(case: Case, tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_case(case, tmp_path) as (client, fake, _):
            whole = await client.chat.completions.create(model="chat", messages=MESSAGES, tools=TOOLS)
            stream = await client.chat.completions.create(model="chat", messages=MESSAGES, tools=TOOLS, stream=True)
            calls: dict[int, dict[str, str]] = {}
            finishes = []
            async for chunk in stream:
                for choice in chunk.choices:
                    finishes.append(choice.finish_reason)
                    for call in choice.delta.tool_calls or []:
                        slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                        fn = call.function
                        slot["id"] += call.id or ""
                        slot["name"] += (fn.name or "") if fn else ""
                        slot["arguments"] += (fn.arguments or "") if fn else ""
    sent = fake.seen[0].body
    assert "get_time" in json.dumps(sent) and "Be brief." in json.dumps(sent), "tools and system prompt translated"
    message = whole.choices[0].message
    assert whole.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    whole_calls = [(c.id, c.function.name, json.loads(c.function.arguments))  # type: ignore[union-attr]
                   for c in message.tool_calls]
    assert [(name, args) for _, name, args in whole_calls] == [
        ("get_weather", {"location": "Paris"}), ("get_time", {"location": "Paris"})]
    streamed = [calls[i] for i in sorted(calls)]
    assert [(c["name"], json.loads(c["arguments"])) for c in streamed] == [
        ("get_weather", {"location": "Paris"}), ("get_time", {"location": "Paris"})]
    assert finishes[-1] == "tool_calls"
    ids = [c[0] for c in whole_calls], [c["id"] for c in streamed]
    for got in ids:
        if case.call_ids is not None:
            assert tuple(got) == case.call_ids
        else:
            assert all(got) and len(set(got)) == 2, "ids made up for an upstream without them"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_upstream_error_and_mid_stream_error(case: Case, tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_case(case, tmp_path) as (client, _, _):
            with pytest.raises(openai.RateLimitError) as limited:
                await client.chat.completions.create(model="limited", messages=MESSAGES)
            stream = await client.chat.completions.create(model="breaks", messages=MESSAGES, stream=True)
            received = ""
            with pytest.raises(openai.APIError) as broken:
                async for chunk in stream:
                    received += "".join(c.delta.content or "" for c in chunk.choices)
    err = limited.value
    assert err.status_code == 429 and case.rate_message in err.message
    assert err.response.headers.get("retry-after") == case.retry_after
    assert received, "the stream had started before the upstream failed"
    assert broken.value.message


async def test_bedrock_embeddings_through_the_openai_sdk(tmp_path: Path) -> None:
    """Titan and Cohere embedding models on Bedrock via InvokeModel, SigV4-signed, as the openai SDK
    sees them (base64 by default, decoded by the SDK)."""
    with trio.fail_after(15):
        async with open_fake(FakeBedrock()) as fake:
            provider = native_provider("aws", Family.BEDROCK, fake.base_url, None, region="us-east-1")
            p = plan([provider], [group("titan", target("aws", "amazon.titan-embed-text-v2:0")),
                                  group("cohere", target("aws", "cohere.embed-english-v3"))])
            async with open_gateway(p) as gw:
                client = openai.AsyncOpenAI(base_url=base_url(gw), api_key="unused", max_retries=0)
                titan = await client.embeddings.create(model="titan", input="hello there world", dimensions=3)
                cohere = await client.embeddings.create(model="cohere", input=["a", "b"])
                with pytest.raises(openai.BadRequestError) as many:
                    await client.embeddings.create(model="titan", input=["a", "b"])
    assert [round(v, 2) for v in titan.data[0].embedding] == [0.01, 0.02, 0.03]
    assert titan.usage.prompt_tokens == 3
    assert [d.embedding for d in cohere.data] == [[0.5, -0.25, 0.0], [0.5, -0.25, 1.0]]
    assert "one input" in str(many.value)
    assert fake.seen[0].path == "/model/amazon.titan-embed-text-v2:0/invoke"
    assert fake.seen[0].headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
