"""Token counting with the shipped o200k_base encoding: loads without the network, known counts,
prompt and answer counting in OpenAI's and Anthropic's shapes, the cheap-or-exact prompt estimate,
and answers metered locally (spend row flagged `estimated`) when the upstream reports no usage."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio

from sidegate.runtime.plan import Auth, Price, StaticKey, Store
from sidegate.runtime.routing.call import estimate_tokens
from sidegate.runtime.upstream import tokens
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import env, group, openai_provider, plan, target, text
from tests.support.upstream import open_fake_openai

FOX = "The quick brown fox jumps over the lazy dog."


def test_encoding_loads_without_network_and_counts_known_text() -> None:
    # A fresh interpreter with every socket connection refused and no tiktoken cache dir: the
    # shipped file is the only source the encoding can come from.
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse\nsocket.create_connection = refuse\n"
        "from sidegate.runtime.upstream import tokens\n"
        f"print(tokens.count({FOX!r}), tokens.count('hello world'), tokens.load().size)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"TIKTOKEN_CACHE_DIR": "/nonexistent", "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["10", "2", "199998"]


def test_counts_are_o200k_base() -> None:
    enc = tokens.load()
    assert tokens.ENCODING == "o200k_base"
    assert (enc.rank(b"hello"), enc.rank(b" world")) == (24912, 2375) and tokens.count("hello world") == 2
    assert tokens.count("<|endoftext|>") > 1, "special markers in text are ordinary text"
    assert tokens.count("") == 0


def test_prompt_tokens_in_both_shapes() -> None:
    chat = {"model": "m", "messages": [{"role": "system", "content": FOX}, {"role": "user", "content": FOX}]}
    assert tokens.prompt_tokens(chat) == 10 + 10 + 2 * tokens.MESSAGE_OVERHEAD + tokens.REPLY_OVERHEAD
    parts = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": FOX}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}
    assert tokens.prompt_tokens(parts) == 10 + tokens.IMAGE_TOKENS + 3 + 3
    anthropic = {"model": "m", "system": FOX, "messages": [{"role": "user", "content": FOX}]}
    assert tokens.prompt_tokens(anthropic) == 10 + 10 + 3 + 3
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    assert tokens.prompt_tokens({**chat, "tools": tools}) > tokens.prompt_tokens(chat)
    assert tokens.prompt_tokens({"model": "m", "prompt": FOX}) == 10
    assert tokens.prompt_tokens({"model": "m", "input": [FOX, FOX]}) == tokens.count(FOX + "\n" + FOX)
    assert tokens.prompt_tokens({"model": "m", "input": [[1, 2, 3]]}) == 3


def _sse(*objs: Any) -> bytes:
    return b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs) + b"data: [DONE]\n\n"


def test_text_of_answers() -> None:
    whole = {"id": "c", "object": "chat.completion", "model": "gpt-4o", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": FOX}, "finish_reason": "stop"}]}
    assert tokens.text_of_answer(json.dumps(whole).encode()) == FOX
    stream = _sse(*({"id": "c", "choices": [{"index": 0, "delta": {"content": w}}]} for w in ["The quick", " brown"]))
    assert tokens.text_of_answer(stream) == "The quick brown"
    tool = _sse({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {
        "name": "get_weather", "arguments": ""}}]}}]}, {"choices": [{"delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "{\"city\": \"Paris\"}"}}]}}]})
    assert tokens.text_of_answer(tool) == "get_weather{\"city\": \"Paris\"}"
    claude = b"event: content_block_delta\ndata: " + json.dumps(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": FOX}}).encode() + b"\n\n"
    assert tokens.text_of_answer(claude) == FOX
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
               "content": [{"type": "text", "text": FOX}, {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}]}
    assert tokens.text_of_answer(json.dumps(message).encode()) == FOX + "f" + '{"a":1}'
    assert tokens.text_of_answer(b"not json") == ""


def test_estimate_tokens_counts_exactly_only_near_a_context_window() -> None:
    data = {"model": "m", "messages": [{"role": "user", "content": "word " * 400}]}
    cheap, completion = estimate_tokens(data)
    assert cheap == len(json.dumps(data["messages"], separators=(",", ":"))) // 4 and completion == 256
    assert estimate_tokens(data, window=100_000)[0] == cheap, "a prompt shorter in bytes than the window fits"
    exact = estimate_tokens(data, window=100)[0]
    assert exact == tokens.prompt_tokens(data) and 400 <= exact <= 410


PRICE = Price(input=1e-3, output=2e-3, cached_input=None)
ASK = [{"role": "user", "content": FOX}]


async def test_answers_without_usage_are_metered_locally_and_flagged(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOK_MASTER", "sk-master-tok")
    monkeypatch.setenv("TOK_KEY", "sk-user-tok")
    await trio.to_thread.run_sync(tokens.load)  # exact metering (see the next test for before the load)
    async with open_fake_openai() as fake:
        p = plan([openai_provider("up", fake.base_url)], [
            group("bare", target("up", "no-usage", price=PRICE)), group("metered", target("up", "ok", price=PRICE))],
            auth=Auth(master_key=env("TOK_MASTER"), keys=(StaticKey(
                name="app", key=env("TOK_KEY"), team=None, user=None, models=(), budget=None, limits=None),),
                refresh=5.0, jwt=None))
        p = replace(p, store=Store(database=text(f"sqlite:///{tmp_path}/spend.db")))
        with trio.fail_after(20):
            async with open_gateway(p) as gw:
                c = openai.AsyncOpenAI(base_url=base_url(gw), api_key="sk-user-tok", max_retries=0)
                whole = await c.chat.completions.create(model="bare", messages=ASK)  # type: ignore[arg-type]
                stream = await c.chat.completions.create(model="bare", messages=ASK, stream=True)  # type: ignore[arg-type]
                streamed = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
                await c.chat.completions.create(model="metered", messages=ASK)  # type: ignore[arg-type]
                async with httpx.AsyncClient() as h:
                    completion = await h.post(f"{base_url(gw)}/completions", json={"model": "bare", "prompt": FOX},
                                              headers={"authorization": "Bearer sk-user-tok"})
    assert whole.choices[0].message.content == "Hi there!" and streamed == "Hi there!"
    assert completion.status_code == 200
    rows = sqlite3.connect(tmp_path / "spend.db").execute(
        "select model, prompt_tokens, completion_tokens, cost, estimated from spendlog order by created_at").fetchall()
    prompt = tokens.prompt_tokens({"messages": ASK})  # 10 + 3 + 3
    answer = tokens.count("Hi there!")  # 3
    assert prompt == 16 and answer == 3
    cost = prompt * 1e-3 + answer * 2e-3
    assert rows[0] == ("bare", prompt, answer, pytest.approx(cost), 1)
    assert rows[1] == ("bare", prompt, answer, pytest.approx(cost), 1)
    assert rows[2] == ("metered", 11, 2, pytest.approx(11e-3 + 2 * 2e-3), 0), "reported usage is used as is"
    assert rows[3] == ("bare", 10, answer, pytest.approx(10e-3 + answer * 2e-3), 1)


async def test_the_encoding_loads_on_first_need_and_metering_is_rough_until_then(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing loads the encoding at start (it costs ~75 MB); the first answer without usage starts
    the load in a worker thread and is metered at ~4 characters a token meanwhile."""
    monkeypatch.setattr(tokens, "_encoding", None)
    monkeypatch.setattr(tokens, "_loading", False)
    answer = b'{"choices": [{"message": {"content": "Hi there, how are you today?"}}]}'
    usage = tokens.estimate_usage({"messages": ASK}, answer, "chat")
    assert usage.completion == tokens.rough("Hi there, how are you today?") == 7
    assert usage.prompt == tokens.rough(FOX) + 6
    with trio.fail_after(10):
        while not tokens.is_loaded():
            await trio.sleep(0.01)
    exact = tokens.estimate_usage({"messages": ASK}, answer, "chat")
    assert exact.completion == tokens.count("Hi there, how are you today?") and exact.prompt == 16


async def test_long_prompts_are_counted_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import sidegate.runtime.routing.call as call_module

    big = {"model": "m", "messages": [{"role": "user", "content": "word " * 20_000}]}
    in_worker: list[bool] = []
    real = tokens.prompt_tokens

    def spy(data: dict[str, Any]) -> int:
        try:
            trio.lowlevel.current_trio_token()
            in_worker.append(False)
        except RuntimeError:  # no Trio run in this thread: a worker thread
            in_worker.append(True)
        return real(data)

    monkeypatch.setattr(call_module, "prompt_tokens", spy)
    exact = await call_module.estimate_tokens_off_loop(big, window=8_000)
    cheap = await call_module.estimate_tokens_off_loop(big, window=None)
    assert in_worker == [True], "counted once, in a worker thread"
    assert 20_000 <= exact[0] <= 20_010 and cheap[0] == len(json.dumps(big["messages"], separators=(",", ":"))) // 4
