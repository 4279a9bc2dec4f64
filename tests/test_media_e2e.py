"""The media routes end to end: the official `openai` SDK (images generate and edit, speech streamed,
transcriptions and translations uploading a WAV, moderations) and the official `cohere` SDK
(`ClientV2.rerank`) against sidegate compiled from a spec and served in-process, in front of fake
OpenAI and Cohere upstreams that refuse what the real APIs refuse. Spend rows carry the cost at the
price table's unit prices; a key's rpm refuses; bad input gets the right status in OpenAI's envelope."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cohere
import httpx
import openai
import pytest
import trio

from sidegate.compiler.pipeline import compile_text
from tests.support.fake_base import open_fake
from tests.support.fake_media import (
    SPEECH_FIRST,
    SPEECH_REST,
    FakeCohereRerank,
    FakeJinaRerank,
    FakeOpenAIMedia,
    form_parts,
)
from tests.support.gateway import open_gateway
from tests.support.spend_logs import spend_row

SPEC = """\
version: 1
server: {{max_upload: 64KiB}}
providers:
  oa: {{type: openai, base_url: "{oa}/v1", api_key: "${{MEDIA_OA_KEY}}"}}
  co: {{type: cohere, base_url: "{co}/v2", api_key: "${{MEDIA_CO_KEY}}"}}
  oa-hasty: {{type: openai, base_url: "{oa}/v1", api_key: "${{MEDIA_OA_KEY}}", timeouts: {{first_byte: 300ms}}}}
  jina: {{type: openai-compatible, base_url: "{jina}/v1", api_key: "${{MEDIA_CO_KEY}}"}}
models:
  dall-e-3: {{targets: [{{provider: oa, model: dall-e-3}}]}}
  gpt-image-1: {{targets: [{{provider: oa, model: gpt-image-1}}]}}
  tts-1: {{targets: [{{provider: oa, model: tts-1}}]}}
  tts-cut: {{targets: [{{provider: oa, model: tts-1, headers: {{X-Fake-Mode: cut}}}}]}}
  tts-hasty:
    targets: [{{provider: oa-hasty, model: tts-1, headers: {{X-Fake-Mode: stall}}}}]
    fallbacks: [tts-1]
    retry: {{attempts: 1}}
  whisper-1: {{targets: [{{provider: oa, model: whisper-1}}]}}
  gpt-4o-transcribe: {{targets: [{{provider: oa, model: gpt-4o-transcribe}}]}}
  whisper-ha: {{targets: [{{provider: oa, model: whisper-1}}], retry: {{attempts: 2, backoff: 10ms}}}}
  omni-moderation-latest: {{targets: [{{provider: oa, model: omni-moderation-latest}}]}}
  rerank-v3.5: {{targets: [{{provider: co, model: rerank-v3.5}}]}}
  cohere-images: {{targets: [{{provider: co, model: rerank-v3.5}}]}}
  jina-reranker-v2-base-multilingual:
    targets: [{{provider: jina, model: jina-reranker-v2-base-multilingual, price: {{input: 0.05, output: 0}}}}]
auth:
  master_key: "${{MEDIA_MASTER}}"
  keys:
    - {{name: ci, key: "${{MEDIA_KEY}}"}}
    - {{name: slow, key: "${{MEDIA_SLOW_KEY}}", limits: {{rpm: 1}}}}
    - {{name: thrifty, key: "${{MEDIA_THRIFTY_KEY}}", budget: {{amount: 0.01, period: 30d}}}}
store: {{database: "sqlite:///{db}"}}
"""
KEYS = {"MEDIA_OA_KEY": "sk-oa-upstream", "MEDIA_CO_KEY": "co-upstream", "MEDIA_MASTER": "sk-media-master",
        "MEDIA_KEY": "sk-media-ci", "MEDIA_SLOW_KEY": "sk-media-slow",
        "MEDIA_THRIFTY_KEY": "sk-media-thrifty"}


@dataclass
class Stack:
    root: str
    oa: FakeOpenAIMedia
    co: FakeCohereRerank
    jina: FakeJinaRerank

    def client(self, key: str = KEYS["MEDIA_KEY"]) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.root}/v1", api_key=key, max_retries=0)

    async def spend(self, rid: str) -> dict[str, Any]:
        """The spend row of request `rid`, once the spend writer has stored it."""
        return await spend_row(self.root, KEYS["MEDIA_MASTER"], rid)


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


@asynccontextmanager
async def stack(tmp_path: Path, auth: bool = True) -> AsyncIterator[Stack]:
    async with open_fake(FakeOpenAIMedia()) as oa, open_fake(FakeCohereRerank()) as co, \
            open_fake(FakeJinaRerank()) as jina:
        spec = SPEC.format(oa=oa.root, co=co.root, jina=jina.root, db=tmp_path / "media.db")
        if not auth:
            spec = spec[:spec.index("auth:")] + spec[spec.index("store:"):]
        result = compile_text(spec, "media.yaml")
        assert result.plan is not None, [d.format_text() for d in result.diagnostics]
        assert not [d for d in result.diagnostics if d.code.startswith("cost.")], "media models are priced"
        async with open_gateway(result.plan) as gw:
            yield Stack(f"http://127.0.0.1:{gw.port}", oa, co, jina)


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * int(rate * seconds))
    return out.getvalue()


async def test_images_generate_and_edit_priced_per_image(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        c = s.client()
        r = await c.images.with_raw_response.generate(model="dall-e-3", prompt="A cat", size="1024x1024",
                                                      extra_headers={"x-request-id": "img-1"})
        images = r.parse().data
        assert images is not None and images[0].url == "https://images.example/one.png"
        assert r.headers["x-sidegate-deployment"] == "oa/dall-e-3"
        assert s.oa.seen[-1].headers["authorization"] == "Bearer sk-oa-upstream"
        assert (await s.spend("img-1"))["cost"] == pytest.approx(0.04)
        hd = await c.images.generate(model="dall-e-3", prompt="A cat", size="1792x1024", quality="hd",
                                     extra_headers={"x-request-id": "img-hd"})
        assert hd.data is not None and len(hd.data) == 1
        assert (await s.spend("img-hd"))["cost"] == pytest.approx(0.12)  # priced by quality and size

        edit = await c.images.edit(model="gpt-image-1", image=("cat.png", b"\x89PNG fake", "image/png"),
                                   prompt="Add a hat", n=2, extra_headers={"x-request-id": "img-2"})
        assert edit.data is not None and len(edit.data) == 2 and edit.data[0].b64_json == "aGVsbG8="
        parts = form_parts(s.oa.seen[-1])
        assert ("image", "cat.png", b"\x89PNG fake") in parts and ("model", None, b"gpt-image-1") in parts
        assert (await s.spend("img-2"))["cost"] == pytest.approx(50 * 5e-06 + 50 * 4e-05)  # its usage's tokens
        two = await c.images.edit(model="gpt-image-1", prompt="Merge", image=[("a.png", b"A", "image/png"),
                                                                            ("b.png", b"B", "image/png")],
                                  mask=("m.png", b"M", "image/png"))
        assert two.data is not None and len(two.data) == 1
        sent = [(n, f) for n, f, _ in form_parts(s.oa.seen[-1]) if f is not None]
        assert sent == [("image[]", "a.png"), ("image[]", "b.png"), ("mask", "m.png")]

        # what OpenAI refuses, refused upstream and relayed as a 400
        with pytest.raises(openai.BadRequestError, match="n=1"):
            await c.images.generate(model="dall-e-3", prompt="A cat", n=2)
        with pytest.raises(openai.BadRequestError, match="size"):
            await c.images.generate(model="dall-e-3", prompt="A cat", size="256x256")
        with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: colour"):
            await c.images.generate(model="dall-e-3", prompt="A cat", extra_body={"colour": "red"})


async def test_speech_bytes_arrive_as_the_upstream_sends_them(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        c = s.client()
        got = b""
        async with c.audio.speech.with_streaming_response.create(
                model="tts-1", voice="alloy", input="Hello world", extra_headers={"x-request-id": "tts-1"}) as r:
            assert r.headers["content-type"] == "audio/mpeg"
            chunks = r.iter_bytes().__aiter__()
            with trio.fail_after(5):
                while len(got) < len(SPEECH_FIRST):
                    got += await chunks.__anext__()
            assert got == SPEECH_FIRST and not s.oa.release.is_set()  # before the upstream sent the rest
            s.oa.release.set()
            async for chunk in chunks:
                got += chunk
        assert got == SPEECH_FIRST + SPEECH_REST
        assert "stream" not in s.oa.seen[-1].body  # sidegate's own marker never goes upstream
        assert (await s.spend("tts-1"))["cost"] == pytest.approx(len("Hello world") * 1.5e-05)

        # a hung upstream is cut at its first_byte deadline; the fallback group answers
        s.oa.release = trio.Event()
        s.oa.release.set()
        r2 = await c.audio.speech.with_raw_response.create(model="tts-hasty", voice="alloy", input="Hi")
        assert r2.headers["x-sidegate-attempts"] == "2" and r2.headers["x-sidegate-deployment"] == "oa/tts-1"
        assert r2.content == SPEECH_FIRST + SPEECH_REST

        # a stream broken mid-way reaches the client cut (not as a whole answer), and is charged
        with pytest.raises(Exception, match="incomplete chunked read"):  # (the SDK's transport's own error)
            async with c.audio.speech.with_streaming_response.create(
                    model="tts-cut", voice="alloy", input="Hello", extra_headers={"x-request-id": "tts-cut"}) as r3:
                async for _ in r3.iter_bytes():
                    pass
        cut = await s.spend("tts-cut")
        assert cut["status"] == 502 and cut["cost"] == pytest.approx(5 * 1.5e-05)

        with pytest.raises(openai.BadRequestError, match="4096"):
            await c.audio.speech.create(model="tts-1", voice="alloy", input="x" * 5000)


def log_line(err: str, rid: str) -> dict[str, Any]:
    """The request log line of request `rid` in the gateway's JSON logs."""
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    found: list[dict[str, Any]] = [x for x in lines if x.get("event") == "request" and x.get("request_id") == rid]
    assert found, rid
    return found[0]


async def test_transcriptions_and_translations_upload_a_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = wav(2.0)
    async with stack(tmp_path) as s:
        c = s.client()
        t = await c.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio, "audio/wav"),
                                                extra_headers={"x-request-id": "stt-1"})
        assert t.text.startswith("The quick brown fox")
        parts = form_parts(s.oa.seen[-1])
        assert ("file", "a.wav", audio) in parts and ("model", None, b"whisper-1") in parts
        assert (await s.spend("stt-1"))["cost"] == pytest.approx(3 * 0.0001)  # the answer's usage.seconds
        assert log_line(capsys.readouterr().err, "stt-1")["units"] == {"audio_seconds": 3}

        text = await c.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), response_format="text",
                                                   extra_headers={"x-request-id": "stt-2"})
        assert isinstance(text, str) and text.startswith("The quick")
        assert (await s.spend("stt-2"))["cost"] == pytest.approx(2.0 * 0.0001)  # the WAV's own length

        verbose = await c.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio),
                                                      response_format="verbose_json",
                                                      extra_headers={"x-request-id": "stt-3"})
        assert verbose.duration == 2.5
        assert (await s.spend("stt-3"))["cost"] == pytest.approx(2.5 * 0.0001)

        tr = await c.audio.translations.create(model="whisper-1", file=("a.wav", audio, "audio/wav"),
                                               extra_headers={"x-request-id": "tr-1"})
        assert tr.text.startswith("The quick") and s.oa.seen[-1].path == "/v1/audio/translations"
        assert (await s.spend("tr-1"))["cost"] == pytest.approx(2.0 * 0.0001)

        # a streamed transcript (gpt-4o-transcribe): its events as they come, priced by the tokens of the last
        events = [e async for e in await c.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("a.wav", audio), stream=True, extra_headers={"x-request-id": "stt-s"})]
        assert "".join(getattr(e, "delta", "") for e in events).strip() == "The quick brown fox jumped over the lazy dog."
        assert events[-1].type == "transcript.text.done" and ("stream", None, b"true") in form_parts(s.oa.seen[-1])
        assert (await s.spend("stt-s"))["cost"] == pytest.approx(14 * 2.5e-06 + 45 * 1e-05)
        whole = await c.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", audio),
                                                    extra_headers={"x-request-id": "stt-t"})
        assert whole.text.startswith("The quick")
        assert (await s.spend("stt-t"))["cost"] == pytest.approx(14 * 2.5e-06 + 45 * 1e-05)
        with pytest.raises(openai.BadRequestError) as no_stream:  # whisper-1 ignores `stream`: told, not retried
            async for _ in await c.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), stream=True):
                pass
        assert no_stream.value.code == "stream_unsupported"

        s.oa.fail_next = 1  # the upload is sent again to the next attempt
        r = await c.audio.transcriptions.with_raw_response.create(model="whisper-ha", file=("a.wav", audio))
        assert r.headers["x-sidegate-attempts"] == "2" and r.parse().text.startswith("The quick")
        assert ("file", "a.wav", audio) in form_parts(s.oa.seen[-1])


async def test_moderations(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        m = await s.client().moderations.create(model="omni-moderation-latest", input="I will kill it",
                                                extra_headers={"x-request-id": "mod-1"})
        assert m.results[0].flagged is True and m.results[0].categories.violence is True
        row = await s.spend("mod-1")
        assert row["cost"] == 0.0 and row["status"] == 200 and row["model"] == "omni-moderation-latest"


async def test_rerank_with_the_cohere_sdk(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        co = cohere.AsyncClientV2(base_url=s.root, api_key=KEYS["MEDIA_KEY"])
        docs = ["Carson City is the capital of Nevada.", "Washington, D.C. is the capital of the United States.",
                "Capital punishment exists in some states."]
        r = await co.rerank(model="rerank-v3.5", query="What is the capital of the United States?", documents=docs,
                            top_n=2, request_options={"additional_headers": {"x-request-id": "rr-1"}})
        assert [x.index for x in r.results] == [1, 0]
        seen = s.co.seen[-1]
        assert seen.path == "/v2/rerank" and seen.headers["authorization"] == "Bearer co-upstream"
        assert seen.body["top_n"] == 2 and seen.body["model"] == "rerank-v3.5"
        assert (await s.spend("rr-1"))["cost"] == pytest.approx(0.002)  # one search unit
        # an OpenAI-compatible rerank backend (Jina): the same request at {base_url}/rerank, priced per token
        j = await co.rerank(model="jina-reranker-v2-base-multilingual", query="capital", documents=docs[:2],
                            request_options={"additional_headers": {"x-request-id": "rr-2"}})
        assert [x.index for x in j.results] == [0, 1] and s.jina.seen[-1].path == "/v1/rerank"
        tokens = sum(len(d.split()) for d in docs[:2]) + 1
        row = await s.spend("rr-2")
        assert row["prompt_tokens"] == tokens and row["cost"] == pytest.approx(tokens * 0.05e-6)
        async with httpx.AsyncClient(base_url=s.root) as h:  # the /v1 path answers the same
            same = await h.post("/v1/rerank", headers={"authorization": f"Bearer {KEYS['MEDIA_KEY']}"},
                                json={"model": "rerank-v3.5", "query": "capital", "documents": docs})
            assert same.status_code == 200 and same.json()["meta"]["billed_units"]["search_units"] == 1
            missing = await h.post("/v1/rerank", headers={"authorization": f"Bearer {KEYS['MEDIA_KEY']}"},
                                   json={"model": "rerank-v3.5", "query": "capital"})
            assert missing.status_code == 400 and missing.json()["error"]["param"] == "documents"


async def test_limits_and_bad_input(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        slow = s.client(KEYS["MEDIA_SLOW_KEY"])
        await slow.moderations.create(model="omni-moderation-latest", input="hello")
        with pytest.raises(openai.RateLimitError) as limited:
            await slow.images.generate(model="dall-e-3", prompt="A cat")
        assert limited.value.response.headers.get("retry-after")
        with pytest.raises(openai.AuthenticationError):
            await s.client("sk-wrong").moderations.create(model="omni-moderation-latest", input="x")

        c = s.client()
        with pytest.raises(openai.APIStatusError) as big:  # server.max_upload: 64KiB
            await c.audio.transcriptions.create(model="whisper-1", file=("long.wav", wav(5.0)))
        assert big.value.status_code == 413 and big.value.body["code"] == "request_too_large"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError) as unknown:
            await c.images.generate(model="no-such-model", prompt="A cat")
        assert unknown.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as unsupported:
            await c.images.generate(model="cohere-images", prompt="A cat")
        assert unsupported.value.code == "unsupported_by_provider"

        auth = {"authorization": f"Bearer {KEYS['MEDIA_KEY']}"}
        async with httpx.AsyncClient(base_url=s.root) as h:
            wrong = await h.post("/v1/audio/transcriptions", headers=auth, json={"model": "whisper-1"})
            assert wrong.status_code == 415 and wrong.json()["error"]["code"] == "unsupported_media_type"
            no_file = await h.post("/v1/audio/transcriptions", headers=auth, data={"model": "whisper-1"},
                                   files={"prompt": (None, "hi")})
            assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
            no_model = await h.post("/v1/audio/translations", headers=auth, files={"file": ("a.wav", wav(0.1))})
            assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
            no_prompt = await h.post("/v1/images/generations", headers=auth, json={"model": "dall-e-3"})
            assert no_prompt.status_code == 400 and no_prompt.json()["error"]["param"] == "prompt"
            no_image = await h.post("/v1/images/edits", headers=auth, files={"model": (None, "gpt-image-1"),
                                                                              "prompt": (None, "Add a hat")})
            assert no_image.status_code == 400 and no_image.json()["error"]["param"] == "image"
            streamed = await h.post("/v1/audio/speech", headers=auth,
                                    json={"model": "tts-1", "voice": "alloy", "input": "x", "stream": True})
            assert streamed.status_code == 400 and streamed.json()["error"]["param"] == "stream"
        assert all(seen.path != "/v1/audio/transcriptions" or form_parts(seen) for seen in s.oa.seen)


async def test_a_budget_holds_the_worst_case_of_a_media_call_in_flight(tmp_path: Path) -> None:
    """1,000 characters of speech at $0.000015 each ($0.015) are held while the audio streams: a second
    call on a $0.01 budget is refused before the first has finished, and the spend is the price."""
    async with stack(tmp_path) as s:
        c = s.client(KEYS["MEDIA_THRIFTY_KEY"])
        async with c.audio.speech.with_streaming_response.create(
                model="tts-1", voice="alloy", input="a" * 1000, extra_headers={"x-request-id": "held"}) as r:
            chunks = r.iter_bytes().__aiter__()
            assert await chunks.__anext__()
            with pytest.raises(openai.RateLimitError) as refused:
                await c.moderations.create(model="omni-moderation-latest", input="x")
            assert refused.value.code == "budget_exceeded"
            s.oa.release.set()
            async for _ in chunks:
                pass
        assert (await s.spend("held"))["cost"] == pytest.approx(1000 * 1.5e-05)


async def test_without_auth_uploads_are_refused_json_is_served(tmp_path: Path) -> None:
    """A spec without `auth` takes only JSON POSTs (cross-site form posts from web pages cannot send
    JSON): an upload gets 415, a JSON media call is served."""
    async with stack(tmp_path, auth=False) as s:
        c = s.client("unused")
        with pytest.raises(openai.APIStatusError) as refused:
            await c.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(0.1)))
        assert refused.value.status_code == 415
        m = await c.moderations.create(model="omni-moderation-latest", input="hello")
        assert m.results[0].flagged is False
