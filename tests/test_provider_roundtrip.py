"""Property: an OpenAI chat request translated to each provider keeps every message, tool call and
argument; and that provider's answer, synthesised from the request (text plus the tool calls found
in it), comes back as an OpenAI completion — whole and streamed — with the same text, tool call ids,
names and arguments."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidegate.runtime.upstream.providers import AnthropicAdapter, BedrockAdapter, CohereAdapter, GeminiAdapter
from sidegate.runtime.upstream.providers.gemini import THOUGHT_SEPARATOR
from tests.support.fake_anthropic import tool_stream
from tests.support.fake_base import assemble, feed_split, native_provider, sse
from tests.support.fake_bedrock import stream_events as bedrock_frames
from tests.support.fake_cohere import stream_events as cohere_events
from tests.support.plans import target

text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
scalar = st.one_of(st.integers(-1000, 1000), st.booleans(), text, st.none())
arguments = st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=6), scalar, max_size=4)
NAMES = ["get_weather", "search", "lookup_user"]


@st.composite
def conversations(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(text)})
    counter = 0
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(text)})
        if draw(st.booleans()):
            calls = []
            for _ in range(draw(st.integers(1, 3))):
                counter += 1
                calls.append({"id": f"call_{counter}", "type": "function", "function": {
                    "name": draw(st.sampled_from(NAMES)), "arguments": json.dumps(draw(arguments))}})
            messages.append({"role": "assistant", "content": draw(st.one_of(st.none(), text)), "tool_calls": calls})
            for call in calls:
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": "r:" + draw(text)})
        else:
            messages.append({"role": "assistant", "content": draw(text)})
    messages.append({"role": "user", "content": draw(text)})
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in NAMES]
    return {"model": "public", "messages": messages, "tools": tools}


def expected(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The conversation as flat items: (role, text), (call, id, name, args), (result, id, content)."""
    out: list[tuple[Any, ...]] = []
    for m in body["messages"]:
        if m["role"] == "tool":
            out.append(("result", m["tool_call_id"], m["content"]))
            continue
        if m.get("content"):
            out.append((m["role"], m["content"]))
        for c in m.get("tool_calls") or []:
            out.append(("call", c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])))
    return out


def calls_of(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [i[1:] for i in items if i[0] == "call"]


def from_anthropic(p: dict[str, Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [("system", b["text"]) for b in p.get("system", [])]
    for m in p["messages"]:
        for b in m["content"]:
            if b["type"] == "text":
                out.append((m["role"], b["text"]))
            elif b["type"] == "tool_use":
                out.append(("call", b["id"], b["name"], b["input"]))
            else:
                out.append(("result", b["tool_use_id"], b["content"]))
    return out


def from_bedrock(p: dict[str, Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [("system", b["text"]) for b in p.get("system", [])]
    for m in p["messages"]:
        for b in m["content"]:
            if "text" in b:
                out.append((m["role"], b["text"]))
            elif "toolUse" in b:
                out.append(("call", b["toolUse"]["toolUseId"], b["toolUse"]["name"], b["toolUse"]["input"]))
            else:
                out.append(("result", b["toolResult"]["toolUseId"], b["toolResult"]["content"][0]["text"]))
    return out


def from_gemini(p: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Gemini has no call ids: calls and results are compared by name and position."""
    out: list[tuple[Any, ...]] = [("system", b["text"]) for b in p.get("systemInstruction", {}).get("parts", [])]
    for c in p["contents"]:
        role = "assistant" if c["role"] == "model" else "user"
        for part in c["parts"]:
            if "text" in part:
                out.append((role, part["text"]))
            elif "functionCall" in part:
                out.append(("call", None, part["functionCall"]["name"], part["functionCall"]["args"]))
            else:
                out.append(("result", None, part["functionResponse"]["response"]["result"]))
    return out


def from_cohere(p: dict[str, Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for m in p["messages"]:
        if m["role"] == "tool":
            out.append(("result", m["tool_call_id"], m["content"]))
            continue
        content = m.get("content") or m.get("tool_plan")
        if content:
            out.append((m["role"], content))
        for c in m.get("tool_calls") or []:
            out.append(("call", c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])))
    return out


def without_ids(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(i[0], None, *i[2:]) if i[0] in ("call", "result") else i for i in items]


def request(adapter: Any, body: dict[str, Any], url: str) -> dict[str, Any]:
    req = adapter.request(native_provider(), target("p", "m"), url, (), "chat", "model-x", body)
    return json.loads(req.body)  # type: ignore[no-any-return]


def check_answer(body: bytes, reply: str, calls: list[tuple[Any, ...]], ids: bool = True) -> None:
    message = json.loads(body)["choices"][0]["message"]
    assert message["content"] == reply
    got = [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls") or []]
    if ids:
        assert got == calls
    else:
        assert [g[1:] for g in got] == [c[1:] for c in calls] and len({g[0] for g in got}) == len(got)


def check_stream(out: bytes, calls: list[tuple[Any, ...]], ids: bool = True) -> None:
    got = assemble(out)
    assert got.done and got.finish == ("tool_calls" if calls else "stop")
    streamed = [(c["id"], c["name"], json.loads(c["arguments"])) for c in got.calls.values()]
    assert (streamed if ids else [s[1:] for s in streamed]) == (calls if ids else [c[1:] for c in calls])


def pieces(args: Any) -> list[str]:
    raw = json.dumps(args)
    cut = len(raw) // 2
    return [raw[:cut], raw[cut:]]


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(conversations())
def test_anthropic_round_trip(body: dict[str, Any]) -> None:
    payload = request(AnthropicAdapter(), body, "https://a.test/v1/messages")
    want = expected(body)
    assert from_anthropic(payload) == want
    reply, calls = body["messages"][-1]["content"], calls_of(from_anthropic(payload))
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "tool_use",
              "content": [{"type": "text", "text": reply}, *({"type": "tool_use", "id": i, "name": n, "input": a}
                                                             for i, n, a in calls)], "usage": {}}
    check_answer(AnthropicAdapter().response("chat", json.dumps(answer).encode())[0], reply, calls)
    events = tool_stream([(i, n, pieces(a)) for i, n, a in calls], reply)
    check_stream(feed_split(AnthropicAdapter().stream("chat", False), sse(events), 29), calls)


@SETTINGS
@given(conversations())
def test_bedrock_round_trip(body: dict[str, Any]) -> None:
    payload = request(BedrockAdapter(), body, "https://b.test/model/m/converse")
    assert from_bedrock(payload) == expected(body)
    reply, calls = body["messages"][-1]["content"], calls_of(from_bedrock(payload))
    content = [{"text": reply}, *({"toolUse": {"toolUseId": i, "name": n, "input": a}} for i, n, a in calls)]
    answer = {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": "tool_use",
              "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}}
    check_answer(BedrockAdapter().response("chat", json.dumps(answer).encode())[0], reply, calls)
    frames = b"".join(bedrock_frames([(i, n, pieces(a)) for i, n, a in calls], reply))
    check_stream(feed_split(BedrockAdapter().stream("chat", False), frames, 17), calls)


@SETTINGS
@given(conversations())
def test_gemini_round_trip(body: dict[str, Any]) -> None:
    payload = request(GeminiAdapter(), body, "https://g.test/v1beta/models/m:generateContent")
    want = expected(body)
    assert from_gemini(payload) == without_ids(want)
    names = {i[1]: i[2] for i in want if i[0] == "call"}
    responses = [p["functionResponse"]["name"] for c in payload["contents"] for p in c["parts"] if "functionResponse" in p]
    assert responses == [names[i[1]] for i in want if i[0] == "result"], "results name the function they answer"
    reply, calls = body["messages"][-1]["content"], calls_of(from_gemini(payload))
    parts = [{"text": reply}, *({"functionCall": {"name": n, "args": a}, "thoughtSignature": "sig"} for _, n, a in calls)]
    answer = {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}]}
    check_answer(GeminiAdapter().response("chat", json.dumps(answer).encode())[0], reply, calls, ids=False)
    out = GeminiAdapter().stream("chat", False).feed(sse([(None, answer)]))
    check_stream(out, calls, ids=False)
    for call in assemble(out).calls.values():
        assert call["id"].endswith(f"{THOUGHT_SEPARATOR}sig"), "the signature rides back in the id"


@SETTINGS
@given(conversations())
def test_cohere_round_trip(body: dict[str, Any]) -> None:
    payload = request(CohereAdapter(), body, "https://c.test/v2/chat")
    assert from_cohere(payload) == expected(body)
    reply, calls = body["messages"][-1]["content"], calls_of(from_cohere(payload))
    message: dict[str, Any] = {"role": "assistant", "content": [{"type": "text", "text": reply}]}
    if calls:
        message = {"role": "assistant", "tool_plan": reply, "tool_calls": [
            {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for i, n, a in calls]}
    answer = {"id": "x", "finish_reason": "TOOL_CALL" if calls else "COMPLETE", "message": message}
    check_answer(CohereAdapter().response("chat", json.dumps(answer).encode())[0], reply, calls)
    events = cohere_events([(i, n, pieces(a)) for i, n, a in calls])
    check_stream(feed_split(CohereAdapter().stream("chat", False), sse(events), 31), calls)
