"""Translation by capability: what each target takes is compiled from the price table and the
provider family (`compiler.data.capabilities`), and an Anthropic Messages request is translated for it
by the rules table (`runtime.upstream.translation.RULES`): mapped, dropped, or refused naming the field."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from sidegate.compiler.data.capabilities import capabilities
from sidegate.compiler.data.catalog import load_catalog
from sidegate.compiler.data.prices import lookup
from sidegate.runtime.errors import BadRequest
from sidegate.runtime.http.anthropic.request import translate
from sidegate.runtime.plan import Family
from sidegate.runtime.upstream.adapter import OpenAIAdapter
from sidegate.runtime.upstream.translation import TargetView
from tests.support.plans import openai_provider, target

# What Claude Code 2.x sends on its first turn (shape; its system prompt and tool list shortened).
CLAUDE_CODE: dict[str, Any] = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 64000,
    "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "List the files.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "system", "content": "The user switched to plan mode."},
        {"role": "user", "content": "Go on."},
    ],
    "tools": [{"name": "Bash", "description": "Run a command", "input_schema": {
        "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
        "cache_control": {"type": "ephemeral"}}],
    "metadata": {"user_id": "user_" + "a" * 64 + "_account__session_0f0e"},
    "thinking": {"type": "enabled", "budget_tokens": 31999},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "medium"},
    "temperature": 1,
    "top_k": 40,
    "stream": True,
    "speed_hint": "fast",
}


def view(provider_type: str, model: str) -> TargetView:
    kind = load_catalog()[provider_type]
    prices = lookup(kind.price_provider, model)
    t = target(provider_type, model, caps=capabilities(kind, model),
               max_output_tokens=prices.max_output_tokens if prices else None)
    return TargetView.of(t, kind.family)


def test_capabilities_come_from_the_table_and_the_family() -> None:
    kinds = load_catalog()
    gpt4o, gpt5, o3 = (capabilities(kinds["openai"], m) for m in ("gpt-4o", "gpt-5", "o3"))
    assert not gpt4o.reasoning and not gpt4o.max_completion_tokens and gpt4o.sampling and gpt4o.vision
    assert gpt5.reasoning and gpt5.max_completion_tokens and not gpt5.sampling and gpt5.pdf
    assert o3.reasoning and not o3.stop and not o3.top_k
    flash = capabilities(kinds["gemini"], "gemini-2.5-flash")
    assert flash.reasoning and flash.top_k and not flash.system_anywhere
    unknown = capabilities(kinds["openai-compatible"], "my-local-model")
    assert not unknown.reasoning and unknown.vision is None and unknown.sampling and not unknown.system_anywhere
    claude = capabilities(kinds["bedrock"], "anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert claude.prompt_caching and claude.top_k


def test_claude_code_to_gpt_4o() -> None:
    out, dropped = translate(copy.deepcopy(CLAUDE_CODE), view("openai", "gpt-4o"))
    assert out["max_tokens"] == 16384  # clamped to gpt-4o's output limit
    assert "max_completion_tokens" not in out and "reasoning_effort" not in out and "top_k" not in out
    assert out["temperature"] == 1 and out["stream"] is True
    assert out["messages"] == [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "List the files."},
        {"role": "system", "content": "The user switched to plan mode."},  # kept at its place for OpenAI
        {"role": "user", "content": "Go on."},
    ]
    assert out["tools"] == [{"type": "function", "function": {
        "name": "Bash", "description": "Run a command", "parameters": CLAUDE_CODE["tools"][0]["input_schema"]}}]
    assert sorted(dropped) == ["context_management", "metadata", "speed_hint"]
    assert "user" not in out and "cache_control" not in orjson.dumps(out).decode()


def test_claude_code_to_gpt_5_and_o3() -> None:
    out, _ = translate(copy.deepcopy(CLAUDE_CODE), view("openai", "gpt-5"))
    assert out["max_completion_tokens"] == 64000 and "max_tokens" not in out
    assert out["reasoning_effort"] == "medium"  # output_config.effort wins over the thinking budget
    assert "temperature" not in out and "top_k" not in out
    no_effort = {k: v for k, v in CLAUDE_CODE.items() if k != "output_config"}
    assert translate(no_effort, view("openai", "o3"))[0]["reasoning_effort"] == "high"  # 31999-token budget
    with pytest.raises(BadRequest) as info:
        translate({**CLAUDE_CODE, "stop_sequences": ["END"]}, view("openai", "o3"))
    assert info.value.param == "stop_sequences" and "openai/o3" in info.value.message


def test_system_turns_are_folded_where_only_a_leading_one_is_taken() -> None:
    out, _ = translate(copy.deepcopy(CLAUDE_CODE), view("groq", "llama-3.1-8b-instant"))
    assert [m["role"] for m in out["messages"]] == ["system", "user", "user"]
    assert out["messages"][0]["content"] == "You are Claude Code.\n\nThe user switched to plan mode."
    assert "reasoning_effort" not in out and "top_k" not in out


def test_gemini_takes_top_k_and_reasoning() -> None:
    out, _ = translate(copy.deepcopy(CLAUDE_CODE), view("gemini", "gemini-2.5-flash"))
    assert out["top_k"] == 40 and out["reasoning_effort"] == "medium"
    assert out["max_tokens"] == 64000 or out["max_tokens"] == lookup("gemini", "gemini-2.5-flash").max_output_tokens


PNG = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
PDF = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}


def _ask(*blocks: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": list(blocks)}]}


def test_images_and_documents_by_capability() -> None:
    out, _ = translate(_ask(PDF, {"type": "text", "text": "Summarise"}), view("openai", "gpt-4o"))
    assert out["messages"][0]["content"][0] == {"type": "file", "file": {
        "filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBER"}}
    out, _ = translate(_ask(PDF), view("gemini", "gemini-2.5-flash"))
    assert out["messages"][0]["content"] == [{"type": "image_url", "image_url": {
        "url": "data:application/pdf;base64,JVBER"}}]
    text_doc = {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain",
                                                                  "data": "line one"}}
    assert translate(_ask(text_doc), view("openai", "gpt-3.5-turbo"))[0]["messages"][0]["content"] == "Notesline one"
    for block in (PNG, PDF):
        with pytest.raises(BadRequest) as info:
            translate(_ask(block), view("openai", "gpt-3.5-turbo"))  # reads neither images nor PDFs
        assert info.value.param == "messages" and "gpt-3.5-turbo" in info.value.message
    # Unknown model: no opinion, the image is sent.
    assert translate(_ask(PNG), view("openai-compatible", "my-local-model"))[0]["messages"][0]["content"][0][
        "type"] == "image_url"


def test_images_in_tool_results_follow_in_a_user_message() -> None:
    body = {"model": "m", "max_tokens": 100, "messages": [
        {"role": "user", "content": "Look at the screenshot."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read",
                                           "input": {"file_path": "/tmp/a.png"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "an image:"}, PNG]}]},
    ]}
    out, _ = translate(body, view("openai", "gpt-4o"))
    assert out["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "an image:"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
    ]


def test_cache_control_is_kept_for_claude_on_bedrock() -> None:
    out, _ = translate(copy.deepcopy(CLAUDE_CODE), view("bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0"))
    assert out["messages"][0]["content"] == [{"type": "text", "text": "You are Claude Code.",
                                              "cache_control": {"type": "ephemeral"}}]
    assert out["tools"][0]["cache_control"] == {"type": "ephemeral"}


@pytest.mark.parametrize("field,value", [
    ("mcp_servers", [{"type": "url", "url": "https://mcp.test/sse", "name": "x"}]),
    ("container", "container_1"),
    ("tools", [{"type": "web_search_20250305", "name": "web_search"}]),
])
def test_refused_only_when_dropping_changes_the_meaning(field: str, value: Any) -> None:
    with pytest.raises(BadRequest) as info:
        translate({**_ask({"type": "text", "text": "hi"}), field: value}, view("openai", "gpt-4o"))
    assert info.value.param == field and info.value.status == 400


def test_openai_surface_sends_max_completion_tokens_to_reasoning_models() -> None:
    kind = load_catalog()["openai"]
    provider = openai_provider("oa", "http://upstream.test/v1")
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 300}
    for model, field in (("gpt-5", "max_completion_tokens"), ("gpt-4o", "max_tokens")):
        t = target("oa", model, caps=capabilities(kind, model))
        sent = orjson.loads(OpenAIAdapter().request(provider, t, "u", (), "chat", model, body).body)
        assert sent[field] == 300 and len({"max_tokens", "max_completion_tokens"} & sent.keys()) == 1
    assert body["max_tokens"] == 300  # the client's body is not changed in place
    assert Family.OPENAI is kind.family


def test_explain_shows_the_glob_and_what_messages_keep_per_target() -> None:
    from sidegate.compiler.cli.explain import explain
    from sidegate.compiler.pipeline import compile_text

    spec = """\
version: 1
providers:
  openai: {type: openai, api_key: "${OPENAI_API_KEY}"}
  gem: {type: gemini, api_key: "${GEMINI_API_KEY}"}
  bedrock: {type: bedrock, region: us-east-1}
models:
  "claude-*":
    targets: [{provider: openai, model: gpt-5}, {provider: gem, model: gemini-2.5-flash},
              {provider: bedrock, model: deepseek.r1-v1:0}]
"""
    result = compile_text(spec, "x.yaml")
    assert result.plan is not None
    text = explain(result.plan, "claude-opus-4-8")
    assert text.startswith("claude-opus-4-8 -> model group 'claude-*' (glob; forwards 'claude-opus-4-8')")
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("messages:")]
    assert lines[0] == ("messages:   reasoning yes, limit as max_completion_tokens, top_k dropped, images yes, "
                        "PDFs yes, temperature/top_p dropped")
    assert lines[1].startswith("messages:   reasoning yes, limit as max_tokens, top_k mapped")
    assert lines[2].startswith("messages:   reasoning no")  # Bedrock maps reasoning controls for Claude only


def test_the_spec_overrides_capabilities_for_models_the_table_does_not_know() -> None:
    from sidegate.compiler.pipeline import compile_text

    spec = """\
version: 1
providers:
  local: {type: vllm, base_url: "http://127.0.0.1:8000/v1"}
models:
  gpt-oss:
    targets:
      - provider: local
        model: openai/gpt-oss-120b
        capabilities: {reasoning: true, vision: false, max_output_tokens: 32768}
  strict-local:
    targets:
      - {provider: local, model: my-o-series-clone, capabilities: {max_completion_tokens: true}}
"""
    result = compile_text(spec, "x.yaml")
    assert result.plan is not None, [d.message for d in result.diagnostics]
    oss, strict = (g.targets[0] for g in result.plan.models)
    assert oss.caps.reasoning and oss.caps.vision is False and oss.max_output_tokens == 32768
    out, _ = translate(copy.deepcopy(CLAUDE_CODE), TargetView.of(oss, Family.OPENAI))
    assert out["reasoning_effort"] == "medium" and out["max_tokens"] == 32768
    with pytest.raises(BadRequest):
        translate(_ask(PNG), TargetView.of(oss, Family.OPENAI))
    assert strict.caps.max_completion_tokens and not strict.caps.sampling and not strict.caps.stop
    out, _ = translate(copy.deepcopy(CLAUDE_CODE), TargetView.of(strict, Family.OPENAI))
    assert out["max_completion_tokens"] == 64000 and "temperature" not in out
    bad = compile_text(spec.replace("max_output_tokens: 32768", "max_output_tokens: 0"), "x.yaml")
    assert bad.plan is None and any("max_output_tokens" in d.pointer for d in bad.diagnostics)
