"""A strict fake OpenAI chat-completions upstream: it refuses what OpenAI's API refuses, with
OpenAI's error envelope and messages, so a translation that sends a wrong field fails a test.

Rules (https://platform.openai.com/docs/api-reference/chat/create and the reasoning guide
https://platform.openai.com/docs/guides/reasoning), per model in `MODELS`:
  * an unknown top-level field -> 400 "Unrecognized request argument supplied: X" (so `top_k`);
  * `reasoning_effort` on a model that does not reason -> 400 unsupported_parameter;
  * `max_tokens` on a reasoning model -> 400 "Use 'max_completion_tokens' instead.";
  * a token limit above the model's output limit -> 400 "max_tokens is too large: ...";
  * `temperature` / `top_p` other than 1 on a reasoning model, `stop` on o-series -> 400;
  * message roles, content part types (images only for vision models), tools' keys and names,
    `tool` messages only right after the assistant `tool_calls` they answer, every call answered.

It answers by a script (`script.py`): a user turn containing `[[call NAME {json}]]` gets that tool
call when NAME is offered; a turn after tool results gets "Tool said: <results>"; anything else a
short text. Streams are split at odd byte boundaries; usage is sent when asked for.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tests.support.fake_base import FakeServer, Seen
from tests.support.script import Reply, reply_for

__all__ = ["MODELS", "Model", "StrictOpenAI"]


@dataclass(frozen=True)
class Model:
    max_output: int
    reasoning: bool = False
    vision: bool = True
    stop: bool = True


MODELS = {
    "gpt-4o": Model(16384),
    "gpt-4o-mini": Model(16384),
    "gpt-3.5-turbo": Model(4096, vision=False),
    "gpt-5": Model(128000, reasoning=True),
    "o3": Model(100000, reasoning=True, stop=False),
}

PARAMS = frozenset({
    "messages", "model", "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "metadata", "modalities", "n", "parallel_tool_calls", "prediction",
    "presence_penalty", "prompt_cache_key", "reasoning_effort", "response_format", "safety_identifier", "seed",
    "service_tier", "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
    "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
})
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_PARTS = {"system": {"text"}, "developer": {"text"}, "user": {"text", "image_url", "input_audio", "file"},
          "assistant": {"text", "refusal"}, "tool": {"text"}}


class Refusal(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _check_messages(messages: Any, model: Model) -> None:
    if not isinstance(messages, list) or not messages:
        raise Refusal("Invalid 'messages': empty array.", "messages", "empty_array")
    pending: list[str] = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in _PARTS:
            raise Refusal(f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                          "'function', 'tool', and 'developer'.", f"messages[{i}].role", "invalid_value")
        if role == "tool":
            if m.get("tool_call_id") not in pending:
                raise Refusal("Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                              "message with 'tool_calls'.", f"messages.[{i}].role")
            pending.remove(m["tool_call_id"])
        elif pending:
            raise Refusal("An assistant message with 'tool_calls' must be followed by tool messages responding to "
                          f"each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                          f"{', '.join(pending)}", "messages", "invalid_request_error")
        content = m.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind not in _PARTS[role]:
                    raise Refusal(f"Invalid value: '{kind}'. Supported values are: "
                                  f"{', '.join(sorted(_PARTS[role]))}.", f"messages[{i}].content[{j}].type",
                                  "invalid_value")
                if kind == "image_url" and not model.vision:
                    raise Refusal("Invalid content type. image_url is only supported by certain models.",
                                  f"messages.[{i}].content.[{j}].type")
                extra = set(part) - {"type", kind}
                if extra:
                    raise Refusal(f"Additional properties are not allowed ({', '.join(sorted(extra))!r} was "
                                  f"unexpected) - 'messages.{i}.content.{j}'", f"messages.[{i}].content.[{j}]")
        elif content is None and not (role == "assistant" and m.get("tool_calls")):
            raise Refusal("Invalid value for 'content': expected a string, got null.", f"messages.[{i}].content")
        if role == "assistant":
            pending = [c["id"] for c in m.get("tool_calls") or []]
    if pending:
        raise Refusal("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                      f"'tool_call_id'. The following tool_call_ids did not have response messages: "
                      f"{', '.join(pending)}", "messages")


def check(body: dict[str, Any]) -> Model:
    """The model's rules applied to `body` (raises Refusal)."""
    name = str(body.get("model"))
    model = MODELS.get(name)
    if model is None:
        raise Refusal(f"The model `{name}` does not exist or you do not have access to it.", None,
                      "model_not_found")
    for key in body:
        if key not in PARAMS:
            raise Refusal(f"Unrecognized request argument supplied: {key}")
    if "reasoning_effort" in body and not model.reasoning:
        raise Refusal("Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                      "reasoning_effort", "unsupported_parameter")
    if "max_tokens" in body and model.reasoning:
        raise Refusal("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                      "'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if isinstance(value, int) and value > model.max_output:
            raise Refusal(f"{key} is too large: {value}. This model supports at most {model.max_output} completion "
                          f"tokens, whereas you provided {value}.", key, "invalid_value")
    for key in ("temperature", "top_p"):
        if model.reasoning and body.get(key, 1) != 1:
            raise Refusal(f"Unsupported value: '{key}' does not support {body[key]} with this model. Only the default "
                          "(1) value is supported.", key, "unsupported_value")
    if "stop" in body and not model.stop:
        raise Refusal("Unsupported parameter: 'stop' is not supported with this model.", "stop",
                      "unsupported_parameter")
    if isinstance(body.get("stop"), list) and len(body["stop"]) > 4:
        raise Refusal("Invalid 'stop': array too long. Expected an array with maximum length 4.", "stop")
    if "stream_options" in body and body.get("stream") is not True:
        raise Refusal("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
    for i, tool in enumerate(body.get("tools") or []):
        extra = set(tool) - {"type", "function"}
        fn = tool.get("function") or {}
        extra |= set(fn) - {"name", "description", "parameters", "strict"}
        if extra or tool.get("type") != "function":
            raise Refusal(f"Additional properties are not allowed ({', '.join(sorted(extra))!r} was unexpected) - "
                          f"'tools.{i}'", f"tools[{i}]")
        if not _NAME.match(str(fn.get("name"))):
            raise Refusal(f"Invalid 'tools[{i}].function.name': string does not match pattern.",
                          f"tools[{i}].function.name", "invalid_value")
    _check_messages(body.get("messages"), model)
    return model


@dataclass
class StrictOpenAI(FakeServer):
    refused: list[tuple[str, str]] = field(default_factory=list)
    """(message, param) of every request it refused."""

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    async def answer(self, seen: Seen, send: Any) -> None:
        if seen.headers.get("authorization", "") != "Bearer sk-upstream":
            await self.json(send, 401, {"error": {"message": "Incorrect API key provided.", "type":
                                                  "invalid_request_error", "param": None, "code": "invalid_api_key"}})
            return
        if not seen.path.endswith("/chat/completions") or not isinstance(seen.body, dict):
            await self.json(send, 404, {"error": {"message": "Unknown request URL", "type": "invalid_request_error",
                                                  "param": None, "code": "unknown_url"}})
            return
        try:
            check(seen.body)
        except Refusal as r:
            self.refused.append((r.message, str(r.param)))
            await self.json(send, 400, {"error": {"message": r.message, "type": "invalid_request_error",
                                                  "param": r.param, "code": r.code}})
            return
        offered = {t["function"]["name"] for t in seen.body.get("tools") or []}
        schema = ((seen.body.get("response_format") or {}).get("json_schema") or {}).get("schema")
        reply = reply_for(_turns(seen.body["messages"]), offered, schema)
        if seen.body.get("stream"):
            await self.stream(send, _chunks(seen.body, reply))
        else:
            await self.json(send, 200, _completion(seen.body, reply))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def _turns(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(kind, text) of the conversation: kind `user`, `tool` (a result) or `assistant`."""
    return [("tool" if m["role"] == "tool" else m["role"], _text(m.get("content"))) for m in messages
            if m["role"] in ("user", "tool", "assistant")]


_USAGE = {"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38,
          "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}


def _completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.call:
        msg["tool_calls"] = [{"id": "call_" + reply.call[0].lower(), "type": "function",
                              "function": {"name": reply.call[0], "arguments": json.dumps(reply.call[1])}}]
    return {"id": "chatcmpl-strict", "object": "chat.completion", "created": 1700000000, "model": body["model"],
            "choices": [{"index": 0, "message": msg, "logprobs": None,
                         "finish_reason": "tool_calls" if reply.call else "stop"}], "usage": _USAGE}


def _chunks(body: dict[str, Any], reply: Reply) -> bytes:
    base = {"id": "chatcmpl-strict", "object": "chat.completion.chunk", "created": 1700000000, "model": body["model"]}
    usage = (body.get("stream_options") or {}).get("include_usage") is True
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if reply.text:
        deltas += [{"content": reply.text[i : i + 5]} for i in range(0, len(reply.text), 5)]
    if reply.call:
        name, args = reply.call
        deltas.append({"tool_calls": [{"index": 0, "id": "call_" + name.lower(), "type": "function",
                                       "function": {"name": name, "arguments": ""}}]})
        raw = json.dumps(args)
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": raw[i : i + 7]}}]}
                   for i in range(0, len(raw), 7)]
    events = [{**base, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": None}],
               **({"usage": None} if usage else {})} for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "tool_calls" if reply.call else "stop"}]})
    if usage:
        events.append({**base, "choices": [], "usage": _USAGE})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
