"""`sidegate import litellm` calls the URLs LiteLLM calls: each provider's `api_base` convention
(Ollama's native API vs its /v1 endpoint, Anthropic's /v1/messages, OpenAI-wire servers as given)
and model-id prefixes (`bedrock/converse/`), checked by sending a request through the imported spec
to a fake upstream that records the path. What cannot be translated fails lint at its line."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
import trio

from sidegate.compiler.importers.litellm.importer import import_litellm
from sidegate.compiler.pipeline import compile_text
from tests.support.fake_base import FakeServer, Seen, open_fake
from tests.support.gateway import base_url, open_gateway

CHAT = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
           "content": [{"type": "text", "text": "ok"}], "stop_sequence": None,
           "usage": {"input_tokens": 1, "output_tokens": 1}}


class Recorder(FakeServer):
    """Answers OpenAI chat completions and Anthropic messages wherever they are posted, and records where."""

    async def answer(self, seen: Seen, send: Any) -> None:
        if seen.path.endswith("/chat/completions"):
            await self.json(send, 200, CHAT)
        elif seen.path.endswith("/messages"):
            await self.json(send, 200, MESSAGE)
        else:
            await self.json(send, 404, {"error": {"message": f"no route {seen.path}"}})


@pytest.mark.parametrize(("litellm_model", "api_base", "path"), [
    ("ollama/llama3", "{root}", "/v1/chat/completions"),
    ("ollama_chat/llama3", "{root}/api/chat", "/v1/chat/completions"),
    ("ollama/llama3", "{root}/v1", "/v1/chat/completions"),
    ("hosted_vllm/meta-llama/Llama-3.1-8B", "{root}/v1", "/v1/chat/completions"),
    ("openai/my-model", "{root}/v1", "/v1/chat/completions"),
    ("lm_studio/qwen", "{root}/v1", "/v1/chat/completions"),
    ("anthropic/claude-sonnet-4-5", "{root}", "/v1/messages"),
    ("anthropic/claude-sonnet-4-5", "{root}/v1/messages", "/v1/messages"),
], ids=lambda v: str(v))
async def test_the_imported_spec_calls_the_url_litellm_calls(
        litellm_model: str, api_base: str, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", "sk-test")
    with trio.fail_after(20):
        async with open_fake(Recorder()) as fake:
            config = {"model_list": [{"model_name": "m", "litellm_params": {
                "model": litellm_model, "api_base": api_base.format(root=fake.root),
                "api_key": "os.environ/UPSTREAM_KEY"}}]}
            imported = import_litellm(json.dumps(config), "config.yaml")
            assert imported.spec is not None, imported.diagnostics
            result = compile_text(imported.spec, "sidegate.yaml")
            assert result.plan is not None, [d.message for d in result.diagnostics]
            async with open_gateway(result.plan) as gw:
                client = openai.AsyncOpenAI(base_url=base_url(gw), api_key="x", max_retries=0)
                answer = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "ok"
    assert [s.path for s in fake.seen] == [path]


def test_bedrock_route_prefixes_are_not_part_of_the_model_id() -> None:
    config = {"model_list": [
        {"model_name": "c", "litellm_params": {"model": "bedrock/converse/anthropic.claude-3-5-sonnet-20240620-v1:0",
                                               "aws_region_name": "us-west-2"}},
        {"model_name": "i", "litellm_params": {"model": "bedrock/invoke/amazon.nova-pro-v1:0",
                                               "aws_region_name": "us-west-2"}}]}
    imported = import_litellm(json.dumps(config), "config.yaml")
    assert imported.spec is not None
    result = compile_text(imported.spec, "sidegate.yaml")
    assert result.plan is not None
    models = {g.name: g.targets[0].model for g in result.plan.models}
    assert models == {"c": "anthropic.claude-3-5-sonnet-20240620-v1:0", "i": "amazon.nova-pro-v1:0"}


def test_values_the_importer_cannot_translate_fail_lint_at_their_line() -> None:
    config = ("model_list:\n"
              "  - model_name: az\n"
              "    litellm_params: {model: azure/gpt-4o-prod, api_base: os.environ/AZURE_API_BASE,\n"
              "                     api_key: os.environ/AZURE_API_KEY, api_version: '2024-10-21'}\n")
    imported = import_litellm(config, "config.yaml")
    assert imported.spec is not None
    result = compile_text(imported.spec, "sidegate.yaml")
    placeholder = [d for d in result.diagnostics if d.code == "provider.placeholder"]
    assert result.plan is None and len(placeholder) == 1
    assert placeholder[0].pointer == "/providers/azure/base_url" and placeholder[0].line > 1


def test_linting_a_litellm_config_points_at_the_importer() -> None:
    result = compile_text("model_list:\n  - model_name: a\n    litellm_params: {model: openai/gpt-4o}\n", "proxy.yaml")
    assert [(d.code, d.line) for d in result.diagnostics] == [("spec.litellm-config", 1)]
    assert "sidegate import litellm proxy.yaml" in result.diagnostics[0].message


async def test_an_imported_azure_deployment_calls_its_deployment_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_API_KEY", "az-test")
    with trio.fail_after(20):
        async with open_fake(Recorder()) as fake:
            config = {"model_list": [{"model_name": "m", "litellm_params": {
                "model": "azure/gpt-4o-prod", "api_base": fake.root, "api_key": "os.environ/AZURE_API_KEY",
                "api_version": "2024-10-21"}}]}
            imported = import_litellm(json.dumps(config), "config.yaml")
            assert imported.spec is not None
            result = compile_text(imported.spec, "sidegate.yaml")
            assert result.plan is not None, [d.message for d in result.diagnostics]
            async with open_gateway(result.plan) as gw:
                client = openai.AsyncOpenAI(base_url=base_url(gw), api_key="x", max_retries=0)
                await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    (seen,) = fake.seen
    assert (seen.path, seen.query) == ("/openai/deployments/gpt-4o-prod/chat/completions", "api-version=2024-10-21")
    assert seen.headers["api-key"] == "az-test"


def test_an_imported_vertex_deployment_targets_its_project_and_location() -> None:
    """Vertex needs Google credentials to call, so the URL is read from the runtime's own URL builder."""
    from sidegate.runtime.upstream.adapter import url_for

    config = {"model_list": [{"model_name": "g", "litellm_params": {
        "model": "vertex_ai/gemini-2.5-pro", "vertex_project": "my-proj", "vertex_location": "europe-west4"}}]}
    imported = import_litellm(json.dumps(config), "config.yaml")
    assert imported.spec is not None
    result = compile_text(imported.spec, "sidegate.yaml")
    assert result.plan is not None
    provider, target = result.plan.providers[0], result.plan.models[0].targets[0]
    assert url_for(provider, target.model, "chat") == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-proj/locations/europe-west4"
        "/publishers/google/models/gemini-2.5-pro:generateContent")
