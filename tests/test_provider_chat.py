"""The neutral parse of OpenAI chat requests shared by the native adapters: what is accepted,
merged, dropped or refused (with the parameter named)."""

from __future__ import annotations

from typing import Any

import pytest

from sidegate.runtime.errors import BadRequest
from sidegate.runtime.upstream.providers.chat import Image, Text, ToolCall, ToolResult, parse_chat

SUPPORTED = {"max_tokens", "tools", "tool_choice", "response_format", "temperature"}


def parse(body: dict[str, Any], drop: bool = False) -> Any:
    return parse_chat({"model": "m", **body}, "testprovider", SUPPORTED, drop)


def test_consecutive_turns_merge_and_tool_results_lead_their_user_turn() -> None:
    chat = parse({"messages": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": ""}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"role": "user", "content": "after"},
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
    ]})
    assert [t.role for t in chat.turns] == ["user", "assistant", "user"]
    assert chat.turns[0].parts == [Text("a"), Text("b")]
    assert chat.turns[1].parts == [ToolCall("c1", "f", {}, "{}")]
    assert chat.turns[2].parts == [ToolResult("c1", "f", "r"), Text("after")]


def test_images_and_data_urls() -> None:
    chat = parse({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklG"}},
        {"type": "image_url", "image_url": "https://x.test/a.gif"}]}]})
    assert chat.turns[0].parts == [Image("data:image/webp;base64,UklG", "image/webp", "UklG"),
                                   Image("https://x.test/a.gif", None, None)]


@pytest.mark.parametrize("body,param", [
    ({"messages": [{"role": "user", "content": "x"}], "presence_penalty": 1}, "presence_penalty"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "vendor_knob": True}, "vendor_knob"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "messages"),
    ({"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "custom", "custom": {}}]}, "tools"),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}, "max_tokens"),
])
def test_refusals_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse(body)
    assert info.value.param == param


def test_no_op_values_and_text_format_pass_and_drop_records() -> None:
    chat = parse({"messages": [{"role": "user", "content": "x"}], "n": 1, "logprobs": False,
                  "parallel_tool_calls": True, "stream_options": {"include_usage": True}, "user": "u",
                  "response_format": {"type": "text"}})
    assert chat.response_format is None and chat.user == "u"
    dropped = parse({"messages": [{"role": "user", "content": "x"}], "seed": 1, "top_p": 0.5}, drop=True)
    assert sorted(dropped.dropped) == ["seed", "top_p"] and dropped.seed is None and dropped.top_p is None


def test_tool_choice_forms_and_response_formats() -> None:
    chat = parse({"messages": [{"role": "user", "content": "x"}],
                  "tool_choice": {"type": "function", "function": {"name": "g"}},
                  "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"},
                                                                             "strict": True}}})
    assert (chat.tool_choice, chat.tool_name) == ("required", "g")
    assert chat.response_format is not None and chat.response_format.strict is True
    assert parse({"messages": [{"role": "user", "content": "x"}],
                  "response_format": {"type": "json_object"}}).response_format.kind == "json_object"  # type: ignore[union-attr]
