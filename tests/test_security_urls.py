"""Client model names never shape an upstream URL (issue 15, case 2).

Every adapter (OpenAI, Azure, Gemini, Vertex, Bedrock, Anthropic, Cohere) serves a wildcard group in
front of one fake upstream that records the raw request target (before any percent-decoding).
Path traversal, query and fragment injection arrive as one percent-encoded path segment (or stay in
the JSON body); whitespace, CR/LF, control characters and over-long names are refused with a 400
naming `model` (OpenAI and Anthropic envelopes) before routing, and never echoed whole in the log."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anthropic
import openai
import pytest
import trio

from sidegate.runtime.plan import Family, Secret, SecretPart, SecretSource
from sidegate.runtime.upstream.urlpath import MAX_MODEL_NAME, check_model_name, path_segment
from tests.support.fake_base import lifespan, open_fake, read_all
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import group, native_provider, openai_provider, plan, target
from tests.test_provider_auth import FakeTokenEndpoint, _service_account

VERTEX = "/v1/projects/proj/locations/us-central1/publishers/google"
# prefix -> (path before the model segment, path after it, query) ; None: the model goes in the body
SHAPES: dict[str, tuple[str, str, str] | None] = {
    "oa": None,
    "az": ("/openai/deployments/", "/chat/completions", "api-version=2024-10-21"),
    "gem": ("/v1beta/models/", ":generateContent", ""),
    "vx": (f"{VERTEX}/models/", ":generateContent", ""),
    "br": ("/model/", "/converse", ""),
    "an": None,
    "co": None,
}
BODY_PATHS = {"oa": "/v1/chat/completions", "an": "/v1/messages", "co": "/v2/chat"}
INJECTIONS = ["../../../admin/secret?x=", "x?key=attacker&", "x#frag", "..", ".", "%2e%2e%2fadmin",
              "a:streamGenerateContent", "m/../../x", "caf\u00e9@v1"]
REFUSED = ["a b", "a\r\nX-Injected: 1", "a\nb", "tab\there", "nul\x00", "del\x7f", "x" * 900_000]


@dataclass
class Raw:
    target: str
    query: str
    model: Any


@dataclass
class RawRecorder:
    """Records the raw request target of everything it receives; answers 404 in OpenAI's shape."""

    port: int = 0
    seen: list[Raw] = field(default_factory=list)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        raw = await read_all(receive)
        body = json.loads(raw) if raw else {}
        self.seen.append(Raw(scope["raw_path"].decode("latin-1"), scope["query_string"].decode("latin-1"),
                             body.get("model")))
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"error": {"message": "no such thing", "code": 404}}'})


def _plan(root: str, key_file: Path) -> Any:
    sa = Secret(parts=(SecretPart(source=SecretSource.FILE, value=str(key_file)),))
    providers = [
        openai_provider("oa", f"{root}/v1", "K"),
        openai_provider("az", root, "K", family=Family.AZURE, api_version="2024-10-21"),
        native_provider("gem", Family.GEMINI, f"{root}/v1beta", "K"),
        native_provider("vx", Family.VERTEX, f"{root}{VERTEX}", credentials=sa, project="proj", region="us-central1"),
        native_provider("br", Family.BEDROCK, root, "K", region="us-east-1"),
        native_provider("an", Family.ANTHROPIC, f"{root}/v1", "K"),
        native_provider("co", Family.COHERE, f"{root}/v2", "K"),
    ]
    return plan(providers, [group(f"{p}/*", target(p, "*")) for p in SHAPES])


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K", "sk-test-key-for-url-tests")


def _check(prefix: str, name: str, seen: Raw) -> None:
    shape = SHAPES[prefix]
    if shape is None:
        assert seen.target == BODY_PATHS[prefix] and seen.query == "", seen
        assert seen.model == name, "the model name travels in the JSON body only"
        return
    head, tail, query = shape
    assert seen.target.startswith(head) and seen.target.endswith(tail), seen
    segment = seen.target[len(head) : len(seen.target) - len(tail)]
    assert not set(segment) & set("/?#: \r\n"), f"{segment!r} is one opaque path segment"
    assert segment not in (".", ".."), "no dot segment"
    assert unquote(segment) == name, "the upstream decodes exactly the client's name"
    assert seen.query == query, f"no query injected: {seen.query!r}"


async def test_injection_forms_stay_one_segment_in_every_adapter(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_fake(FakeTokenEndpoint()) as tokens, open_fake(RawRecorder()) as up:
            key_file = tmp_path / "sa.json"
            key_file.write_text(json.dumps(_service_account(f"{tokens.root}/token")))
            async with open_gateway(_plan(up.root, key_file)) as gw:
                client = openai.AsyncOpenAI(base_url=base_url(gw), api_key="unused", max_retries=0)
                for prefix in SHAPES:
                    for name in INJECTIONS:
                        before = len(up.seen)
                        with pytest.raises(openai.APIStatusError):
                            await client.chat.completions.create(model=f"{prefix}/{name}",
                                                                 messages=[{"role": "user", "content": "hi"}])
                        assert len(up.seen) == before + 1, (prefix, name)
                        _check(prefix, name, up.seen[-1])
                    with pytest.raises(openai.APIStatusError):  # a stream's URL too
                        await client.chat.completions.create(model=f"{prefix}/x?key=attacker&", stream=True,
                                                             messages=[{"role": "user", "content": "hi"}])
                    seen = up.seen[-1]
                    assert "key=attacker" not in seen.query and "attacker" not in unquote(seen.query)


async def test_refused_names_get_400_before_routing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(60):
        async with open_fake(FakeTokenEndpoint()) as tokens, open_fake(RawRecorder()) as up:
            key_file = tmp_path / "sa.json"
            key_file.write_text(json.dumps(_service_account(f"{tokens.root}/token")))
            async with open_gateway(_plan(up.root, key_file)) as gw:
                client = openai.AsyncOpenAI(base_url=base_url(gw), api_key="unused", max_retries=0)
                claude = anthropic.AsyncAnthropic(base_url=base_url(gw)[: -len("/v1")], api_key="unused",
                                                  max_retries=0)
                for prefix in SHAPES:
                    for name in REFUSED:
                        with pytest.raises(openai.BadRequestError) as caught:
                            await client.chat.completions.create(model=f"{prefix}/{name}",
                                                                 messages=[{"role": "user", "content": "hi"}])
                        body: Any = caught.value.body
                        assert body["param"] == "model" and body["code"] == "invalid_model"
                        assert name not in body["message"]
                for name in REFUSED:
                    with pytest.raises(anthropic.BadRequestError) as refused:
                        await claude.messages.create(model=f"an/{name}", max_tokens=5,
                                                     messages=[{"role": "user", "content": "hi"}])
                    error = refused.value.response.json()
                    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
                    assert "model" in error["error"]["message"]
                    with pytest.raises(anthropic.BadRequestError):
                        await claude.messages.count_tokens(model=f"an/{name}",
                                                           messages=[{"role": "user", "content": "hi"}])
    assert up.seen == [], "nothing refused reached an upstream"
    logged = capsys.readouterr().err
    assert logged.count('"status":400') >= len(SHAPES) * len(REFUSED) + len(REFUSED)
    longest = max(len(line) for line in logged.splitlines())
    assert longest < 4096, f"no log line echoes the 900 KB name ({longest} characters)"


def test_helpers() -> None:
    assert path_segment("../a?b#c d") == "..%2Fa%3Fb%23c%20d"
    assert path_segment("..") == "%2E%2E" and path_segment(".") == "%2E"
    assert path_segment("claude-sonnet-4-5@20250929") == "claude-sonnet-4-5@20250929"
    assert path_segment("arn:aws:bedrock:us-east-1:1:inference-profile/us.x") == \
        "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x"
    check_model_name("x" * MAX_MODEL_NAME)
    for bad in ("x" * (MAX_MODEL_NAME + 1), "a\u2028b", "a\u00a0b", "a\tb"):
        with pytest.raises(Exception) as caught:
            check_model_name(bad)
        assert getattr(caught.value, "param", None) == "model"
