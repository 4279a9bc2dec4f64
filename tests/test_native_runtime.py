"""How the runtime wires native providers: `drop_unsupported` (400 naming the parameter, or dropped),
embeddings through native adapters, operations a provider lacks, credentials loaded at start (and
kept across reloads while the provider is unchanged), and `explain` for native targets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import openai
import pytest
import trio

from sidegate.compiler.cli.explain import explain
from sidegate.runtime.plan import Family, Secret, SecretPart, SecretSource
from sidegate.runtime.plan.secrets import SecretError
from sidegate.runtime.routing.state import build_runtime
from sidegate.runtime.upstream.providers.auth import CredentialsError
from sidegate.runtime.upstream.providers.bedrock_auth import BedrockSigner
from sidegate.runtime.upstream.transport import HttpxTransport
from tests.support.fake_anthropic import open_fake_anthropic
from tests.support.fake_base import open_fake
from tests.support.fake_cohere import FakeCohere
from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import group, native_provider, plan, target

ASK: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEY", "k")
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _client(gw) -> openai.AsyncOpenAI:  # type: ignore[no-untyped-def]
    return openai.AsyncOpenAI(base_url=base_url(gw), api_key="unused", max_retries=0)


async def test_unsupported_parameter_is_a_400_naming_it_unless_dropped() -> None:
    with trio.fail_after(10):
        async with open_fake_anthropic() as fake:
            strict = native_provider("strict", Family.ANTHROPIC, fake.base_url, "KEY")
            lenient = native_provider("lenient", Family.ANTHROPIC, fake.base_url, "KEY", drop_unsupported=True)
            p = plan([strict, lenient], [group("strict", target("strict", "ok")),
                                         group("lenient", target("lenient", "ok"))])
            async with open_gateway(p) as gw:
                with pytest.raises(openai.BadRequestError) as refused:
                    await _client(gw).chat.completions.create(model="strict", messages=ASK, logit_bias={"1": 2})
                calls = len(fake.seen)
                answer = await _client(gw).chat.completions.create(model="lenient", messages=ASK, logit_bias={"1": 2},
                                                                   temperature=0.5)
                with pytest.raises(openai.BadRequestError) as no_op:
                    await _client(gw).completions.create(model="lenient", prompt="hi")
    body = refused.value.body
    assert isinstance(body, dict) and body["param"] == "logit_bias" and body["code"] == "unsupported_parameter"
    assert "logit_bias" in refused.value.message and calls == 0, "refused before any upstream call"
    assert answer.choices[0].message.content == "Hi! My name is Claude."
    sent = fake.seen[-1].body
    assert "logit_bias" not in sent and sent["temperature"] == 0.5 and sent["max_tokens"] == 4096
    assert "completions" in no_op.value.message


async def test_embeddings_through_gemini_and_cohere() -> None:
    with trio.fail_after(10):
        async with open_fake(FakeGemini()) as gem, open_fake(FakeCohere()) as co:
            providers = [native_provider("gem", Family.GEMINI, gem.base_url, "KEY"),
                         native_provider("co", Family.COHERE, co.base_url, "KEY")]
            p = plan(providers, [group("g", target("gem", "text-embedding-004")), group("c", target("co", "embed"))])
            async with open_gateway(p) as gw:
                g = await _client(gw).embeddings.create(model="g", input=["a", "b"])  # base64 by default
                c = await _client(gw).embeddings.create(model="c", input="a", encoding_format="float")
    assert [e.embedding for e in g.data] == [[0.5, -0.25, 0.125]] * 2
    assert gem.seen[-1].path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert c.data[0].embedding == [0.5, -0.25, 0.125] and c.usage.prompt_tokens == 3
    assert co.seen[-1].body["texts"] == ["a"] and co.seen[-1].path == "/v2/embed"


def _vertex(credentials: Secret | None, region: str = "us-central1") -> object:
    provider = native_provider("vx", Family.VERTEX, "https://vertex.test/v1", region=region, project="p",
                               credentials=credentials)
    return plan([provider], [group("g", target("vx", "gemini-2.5-flash"))])


def _file(path: Path) -> Secret:
    return Secret(parts=(SecretPart(source=SecretSource.FILE, value=str(path)),))


def test_unusable_credentials_stop_the_start_naming_the_provider(tmp_path: Path) -> None:
    shared = HttpxTransport()
    not_json = tmp_path / "key.json"
    not_json.write_text("/run/secrets/key.json")
    with pytest.raises(CredentialsError) as bad:
        build_runtime(_vertex(_file(not_json)), shared)  # type: ignore[arg-type]
    assert isinstance(bad.value, SecretError) and "provider 'vx'" in str(bad.value)
    assert "/run/secrets" not in str(bad.value).replace(str(not_json), ""), "the secret's text is not shown"
    with pytest.raises(SecretError):
        build_runtime(_vertex(_file(tmp_path / "missing.json")), shared)  # type: ignore[arg-type]
    bedrock = native_provider("aws", Family.BEDROCK, "https://bedrock.test", region="us-east-1")
    with pytest.raises(CredentialsError) as no_aws:
        build_runtime(plan([bedrock], [group("g", target("aws", "m"))]), shared)
    assert "no AWS credentials" in str(no_aws.value)


def test_authorizers_per_provider_kept_across_reloads_while_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_provider_auth import _service_account

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    key = tmp_path / "sa.json"
    key.write_text(json.dumps(_service_account("http://127.0.0.1:9/token")))
    signed = native_provider("aws", Family.BEDROCK, "https://b.test", region="us-east-1")
    keyed = native_provider("aws-key", Family.BEDROCK, "https://b.test", "KEY", region="us-east-1")
    vertex = native_provider("vx", Family.VERTEX, "https://v.test", region="us-central1", project="p",
                             credentials=_file(key))
    groups = [group("a", target("aws", "m"), target("aws-key", "m")), group("v", target("vx", "m")),
              group("v2", target("vx", "other"))]
    shared = HttpxTransport()
    first = build_runtime(plan([signed, keyed, vertex], groups), shared)
    a, a_key = first.deployments["a"]
    (v,), (v2,) = first.deployments["v"], first.deployments["v2"]
    assert isinstance(a.authorizer, BedrockSigner) and a_key.authorizer is None
    assert ("Authorization", "Bearer k") in a_key.headers, "a Bedrock API key is a static bearer header"
    assert v.authorizer is not None and v.authorizer is v2.authorizer, "one token cache per provider"
    moved = dataclasses.replace(signed, region="eu-west-1")
    second = build_runtime(plan([moved, keyed, vertex], groups), shared, first)
    assert second.deployments["v"][0].authorizer is v.authorizer, "unchanged provider keeps its token"
    resigned = second.deployments["a"][0].authorizer
    assert isinstance(resigned, BedrockSigner) and resigned is not a.authorizer and resigned.region == "eu-west-1"


def test_explain_shows_native_urls_and_how_each_authenticates() -> None:
    vx = native_provider("vx", Family.VERTEX, "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/"
                         "us-central1/publishers/google", region="us-central1", project="p")
    aws = native_provider("aws", Family.BEDROCK, "https://bedrock-runtime.us-east-1.amazonaws.com",
                          region="us-east-1", aws_profile="prod", drop_unsupported=True)
    text = explain(plan([vx, aws], [group("g", target("vx", "gemini-2.5-flash"), target("aws", "amazon.nova-pro-v1:0"))]),
                   "g")
    assert "models/gemini-2.5-flash:generateContent  (model: gemini-2.5-flash)" in text
    assert "streams:    POST https://us-central1-aiplatform.googleapis.com/" in text
    assert ":streamGenerateContent?alt=sse" in text
    assert "OAuth2 bearer token from Google application default credentials" in text
    assert "/model/amazon.nova-pro-v1%3A0/converse  (model: amazon.nova-pro-v1:0)" in text
    assert "SigV4 for region us-east-1, credentials from AWS profile 'prod'" in text
    assert "parameters it cannot take are dropped (drop_unsupported)" in text
