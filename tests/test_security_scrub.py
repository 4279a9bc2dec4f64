"""Secrets never leave through what an upstream sends back (issue 15, case 1).

A fake OpenAI upstream answers 401 "Incorrect API key provided: <the key it received>" (as
OpenAI does), echoes the custom header sidegate sent from a secret reference, and quotes another
key-shaped token; whatever the client gets (the official SDKs' exceptions, bodies, stream error
events) and every log line sidegate writes must hold none of them."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import anthropic
import openai
import pytest
import trio

from sidegate.runtime.observe.scrub import MESSAGE_LIMIT, Scrubber, SecretCollector, cap
from sidegate.runtime.plan import Header, Secret, SecretPart, SecretSource
from sidegate.runtime.plan.secrets import resolve
from tests.support.fake_base import FakeServer, Seen, open_fake
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import env, group, openai_provider, plan, target

KEY = "sk-proj-Zx81kQ0vTt2mYb7LsPq4Wn9eRf3Hc6Ud"
HEADER_TOKEN = "tok_5f2c9a1e7b3d4c8f9a0b1c2d"
OTHER = "sk-ant-api03-someone-elses-key-AAAA"


class EchoingOpenAI(FakeServer):
    """OpenAI's wire: 401 quoting the key it received; `stream-echo` starts a stream, then sends an
    error event quoting it; `long` answers 400 with a 50,000-character message."""

    async def answer(self, seen: Seen, send: Any) -> None:
        received = seen.headers.get("authorization", "").removeprefix("Bearer ")
        header = seen.headers.get("x-upstream-token", "")
        model = (seen.body or {}).get("model")
        if model == "stream-echo":
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]}
            err = {"error": {"message": f"key {received} header {header} failed", "type": "server_error"}}
            await self.stream(send, f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(err)}\n\n".encode())
            return
        if model == "long":
            await self.json(send, 400, {"error": {"message": "x" * 50_000, "type": "invalid_request_error"}})
            return
        message = (f"Incorrect API key provided: {received}. Your header was {header}; "
                   f"Authorization: Bearer {received}; also tried {OTHER}. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.")
        await self.json(send, 401, {"error": {"message": message, "type": "invalid_request_error",
                                              "param": None, "code": "invalid_api_key"}})


def _plan(root: str) -> Any:
    provider = replace(openai_provider("up", f"{root}/v1", "UP_KEY"),
                       headers=(Header(name="X-Upstream-Token", value=env("UP_HEADER")),))
    return plan([provider], [group("chat", target("up", "gpt-4o")), group("echo", target("up", "stream-echo")),
                             group("long", target("up", "long"))])


def _clean(text: str) -> None:
    for secret in (KEY, HEADER_TOKEN, OTHER, KEY[3:]):
        assert secret not in text


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", KEY)
    monkeypatch.setenv("UP_HEADER", HEADER_TOKEN)


async def test_echoed_key_reaches_neither_client_nor_log(capsys: pytest.CaptureFixture[str]) -> None:
    seen_by_client: list[str] = []
    with trio.fail_after(20):
        async with open_fake(EchoingOpenAI()) as fake, open_gateway(_plan(fake.root)) as gw:
            client = openai.AsyncOpenAI(base_url=base_url(gw), api_key="unused", max_retries=0)
            for stream in (False, True):
                with pytest.raises(openai.APIStatusError) as caught:
                    await client.chat.completions.create(model="chat", stream=stream,
                                                         messages=[{"role": "user", "content": "hi"}])
                seen_by_client += [str(caught.value), json.dumps(caught.value.body), caught.value.response.text]
            chunks = []
            with pytest.raises(openai.APIError) as mid:
                async for c in await client.chat.completions.create(
                        model="echo", stream=True, messages=[{"role": "user", "content": "hi"}]):
                    chunks.append(c)
            seen_by_client += [str(mid.value), json.dumps(mid.value.body)]
            claude = anthropic.AsyncAnthropic(base_url=base_url(gw)[: -len("/v1")], api_key="unused", max_retries=0)
            with pytest.raises(anthropic.APIStatusError) as ant:
                await claude.messages.create(model="chat", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
            seen_by_client += [str(ant.value), ant.value.response.text]
    assert fake.seen[0].headers["authorization"] == f"Bearer {KEY}", "the upstream did get the key"
    assert fake.seen[0].headers["x-upstream-token"] == HEADER_TOKEN
    assert caught.value.status_code == 502 and "Incorrect API key provided: ***" in str(caught.value)
    assert "Bearer ***" in str(caught.value), "the Bearer form is masked as one"
    assert "platform.openai.com" in str(caught.value), "the rest of the message is kept"
    assert "key *** header *** failed" in str(mid.value.body)
    assert chunks and chunks[0].choices[0].delta.content == "hi"
    assert ant.value.status_code in (502, 503) and "***" in ant.value.response.text
    for text in seen_by_client:
        _clean(text)
    logged = capsys.readouterr().err
    lines = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    errors = [line["error"] for line in lines if line.get("event") == "request" and line.get("error")]
    rejected = [e for e in errors if "Incorrect API key provided: ***" in e]
    assert len(errors) == 4 and len(rejected) == 3, errors
    _clean(logged)


async def test_relayed_upstream_message_is_capped() -> None:
    with trio.fail_after(20):
        async with open_fake(EchoingOpenAI()) as fake, open_gateway(_plan(fake.root)) as gw:
            client = openai.AsyncOpenAI(base_url=base_url(gw), api_key="unused", max_retries=0)
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(model="long", messages=[{"role": "user", "content": "hi"}])
    message = caught.value.body["message"]  # type: ignore[index]
    assert message.startswith("x" * MESSAGE_LIMIT) and "49000 more characters cut" in message
    assert len(message) < MESSAGE_LIMIT + 100


def test_scrubber_masks_values_bearer_forms_and_key_shapes() -> None:
    s = Scrubber(["resolved-secret-value", "short"])
    assert s.text("got resolved-secret-value") == "got ***"
    assert s.text("short stays short") == "short stays short", "values under MIN_SECRET are not masked"
    assert s.text("Authorization: Bearer abc.def-ghi_jkl") == "Authorization: Bearer ***"
    assert s.text("authorization: basic dXNlcjpwYXNzd29yZA==") == "authorization: basic ***"
    for shaped in ("sk-proj-abcdefgh12", "sk-ant-api03-xyzxyzxyz", "AIzaSyA1234567890abcdefghijk",
                   "AKIAIOSFODNN7EXAMPLE", "ya29.a0AfH6SMBexampletoken", "gsk_abcdefghijklmnop1234",
                   "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
                   "-----BEGIN PRIVATE KEY-----\nMIIEv\n-----END PRIVATE KEY-----"):
        assert s.text(f"[{shaped}]") == "[***]", shaped
    for ordinary in ("task-force-one", "risk-assessment", "a model_name_with_underscores", "gpt-4o-mini"):
        assert s.text(ordinary) == ordinary
    assert s.data(b'data: {"m": "resolved-secret-value"}') == b'data: {"m": "***"}'
    assert s.data(b"sk-looks-like-a-key-but-is-content") == b"sk-looks-like-a-key-but-is-content"
    assert cap("y" * 5, 3) == "yyy... (2 more characters cut)"


def test_collector_learns_reference_values_and_dsn_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSN", "postgresql://app:p%40ssw0rd-long@db/x")
    monkeypatch.setenv("TOKEN", "t0ken-value-123")
    collect = SecretCollector(resolve)
    literal = Secret(parts=(SecretPart(source=SecretSource.TEXT, value="not-a-secret-at-all"),))
    mixed = Secret(parts=(SecretPart(source=SecretSource.TEXT, value="Bearer "),
                          SecretPart(source=SecretSource.ENV, value="TOKEN")))
    assert collect(literal) == "not-a-secret-at-all"
    assert collect(mixed) == "Bearer t0ken-value-123"
    collect(Secret(parts=(SecretPart(source=SecretSource.ENV, value="DSN"),)))
    s = collect.scrubber()
    assert s.text("not-a-secret-at-all") == "not-a-secret-at-all"
    assert s.text("token t0ken-value-123") == "token ***"
    assert s.text("auth failed for p@ssw0rd-long and p%40ssw0rd-long") == "auth failed for *** and ***"
