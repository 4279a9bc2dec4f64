"""The media routes' pieces: which family serves which route at what URL, the units an answer is
priced by, a WAV's length from its header, the per-unit prices (table and spec) and their cost."""

from __future__ import annotations

import io
import wave
from types import MappingProxyType

import pytest

from sidegate.compiler.data.media_prices import media_price
from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.errors import BadRequest, UpstreamError
from sidegate.runtime.governance.gate import cost_of
from sidegate.runtime.governance.reserve import Basis, bases, estimate
from sidegate.runtime.http.media import MediaDialect
from sidegate.runtime.http.multipart_form import parse_form
from sidegate.runtime.plan import Family, Price
from sidegate.runtime.upstream.media_wire import TranscriptRelay, media_url, units, wav_seconds
from sidegate.runtime.upstream.multipart import Upload
from sidegate.runtime.upstream.openai_wire import Usage
from tests.support.plans import mock_provider, native_provider, openai_provider


def _wav(frames: int, rate: int, channels: int = 1) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * channels * frames)
    return out.getvalue()


def test_wav_length_from_its_header() -> None:
    assert wav_seconds(_wav(16000, 16000)) == pytest.approx(1.0)
    assert wav_seconds(_wav(11025, 22050, channels=2)) == pytest.approx(0.5)
    assert wav_seconds(b"ID3\x04 an mp3") is None and wav_seconds(b"") is None
    assert wav_seconds(_wav(16000, 16000)[:40]) is None  # cut before the data chunk


def test_urls_per_family() -> None:
    oa = openai_provider("oa", "https://api.openai.com/v1")
    assert media_url(oa, "dall-e-3", "images") == "https://api.openai.com/v1/images/generations"
    assert media_url(oa, "jina-reranker", "rerank") == "https://api.openai.com/v1/rerank"
    az = openai_provider("az", "https://r.openai.azure.com", family=Family.AZURE, api_version="2025-04-01-preview")
    assert media_url(az, "my whisper", "transcriptions") == (
        "https://r.openai.azure.com/openai/deployments/my%20whisper/audio/transcriptions?api-version=2025-04-01-preview")
    co = native_provider("co", Family.COHERE, "https://api.cohere.com/v2")
    assert media_url(co, "rerank-v3.5", "rerank") == "https://api.cohere.com/v2/rerank"
    for provider, op in [(az, "moderations"), (az, "rerank"), (co, "images"), (mock_provider("m"), "speech"),
                         (native_provider("an", Family.ANTHROPIC, "https://api.anthropic.com/v1"), "rerank")]:
        with pytest.raises(BadRequest) as refused:
            media_url(provider, "m", op)
        assert refused.value.code == "unsupported_by_provider"


def test_units_of_each_answer() -> None:
    assert units("images", b'{"data":[{"url":"a"},{"url":"b"}]}')[1] == Usage(images=2)
    gpt_image = b'{"data":[{"b64_json":"x"}],"usage":{"input_tokens":50,"output_tokens":70}}'
    assert units("image_edits", gpt_image)[1] == Usage(images=1, prompt=50, completion=70)
    assert units("transcriptions", b'{"text":"a","usage":{"type":"duration","seconds":7}}')[1] == Usage(seconds=7)
    tokens = b'{"text":"a","usage":{"type":"tokens","input_tokens":14,"output_tokens":45}}'
    assert units("transcriptions", tokens)[1] == Usage(prompt=14, completion=45)
    assert units("translations", b'{"text":"a","duration":2.25}')[1] == Usage(seconds=2.25)
    assert units("translations", b'{"text":"a","duration":true}')[1] == Usage()  # not a number
    assert units("rerank", b'{"results":[],"meta":{"billed_units":{"search_units":3}}}')[1] == Usage(search_units=3)
    assert units("rerank", b'{"results":[],"usage":{"total_tokens":12}}')[1] == Usage(prompt=12)
    assert units("moderations", b'{"results":[]}')[1] == Usage()
    assert units("transcriptions", b"plain text", as_json=False) == (b"plain text", Usage())
    with pytest.raises(UpstreamError):
        units("images", b"<html>")


def test_a_text_transcript_is_priced_by_the_wav_length() -> None:
    dialect = MediaDialect("transcriptions", {"model": "whisper-1", "response_format": "srt"}, [], 4.5)
    body, usage = dialect.response(None, "whisper-1", b"1\n00:00:00,000 --> ...")  # type: ignore[arg-type]
    assert usage == Usage(seconds=4.5) and body.startswith(b"1\n")


def test_the_upload_is_reencoded_with_repeated_fields() -> None:
    dialect = MediaDialect("transcriptions", {"model": "public", "timestamp_granularities[]": ["word", "segment"]},
                           [Upload("file", "a.wav", b"RIFF", "audio/wav")])
    dep = type("Dep", (), {"provider": openai_provider("oa", "https://x.test/v1"),
                           "headers": (("content-type", "application/json"), ("authorization", "Bearer k"))})()
    request = dialect.request(dep, "whisper-1")
    content_type = dict(request.headers)["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=") and ("authorization", "Bearer k") in request.headers
    form = parse_form(content_type.encode(), request.body)
    assert [(p.name, p.data) for p in form.parts] == [
        ("model", b"whisper-1"), ("timestamp_granularities[]", b"word"), ("timestamp_granularities[]", b"segment"),
        ("file", b"RIFF")]
    assert form.parts[-1].filename == "a.wav" and form.parts[-1].content_type == "audio/wav"


def test_cost_and_worst_case_of_units() -> None:
    price = Price(input=1e-6, output=0.0, cached_input=None, per_image=0.04, per_second=0.0001,
                  per_character=1.5e-05, per_search_unit=0.002)
    assert cost_of(Usage(images=3), price) == pytest.approx(0.12)
    by_kind = Price(input=0.0, output=0.0, cached_input=None, per_image=0.04,
                    per_image_by=MappingProxyType({"hd/1024x1024": 0.08}))
    assert cost_of(Usage(images=2, image_kind="hd/1024x1024"), by_kind) == pytest.approx(0.16)
    assert cost_of(Usage(images=2, image_kind="low/256x256"), by_kind) == pytest.approx(0.08)
    assert cost_of(Usage(seconds=60), price) == pytest.approx(0.006)
    assert cost_of(Usage(characters=1000), price) == pytest.approx(0.015)
    assert cost_of(Usage(search_units=2, prompt=10), price) == pytest.approx(0.004 + 10e-6)
    basis = Basis(input=0.0, output=0.0, output_limit=None, default_output=4096, unpriced=False, per_image=0.04,
                  per_character=1.5e-05, per_search_unit=0.002)
    assert estimate(basis, {"prompt": "a cat", "n": 4}, "images")[1] == pytest.approx(0.16)
    assert estimate(basis, {"prompt": "a cat", "n": "2"}, "image_edits")[1] == pytest.approx(0.08)
    assert estimate(basis, {"input": "x" * 100}, "speech")[1] == pytest.approx(0.0015)
    assert estimate(basis, {"query": "q", "documents": ["d"] * 250}, "rerank")[1] == pytest.approx(0.006)
    assert estimate(basis, {"model": "whisper-1"}, "transcriptions")[0] == 0  # no output tokens reserved


def test_prices_from_the_table_and_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    assert media_price(("openai",), "whisper-1") is not None
    assert media_price(("cohere_chat", "cohere"), "rerank-v3.5") is not None
    assert media_price(("openai",), "gpt-4o") is None
    monkeypatch.setenv("K", "sk-test")
    spec = """\
version: 1
providers: {oa: {type: openai, api_key: "${K}"}}
models:
  dall-e-3: {targets: [{provider: oa, model: dall-e-3}]}
  gpt-image-1: {targets: [{provider: oa, model: gpt-image-1}]}
  tts-1-hd: {targets: [{provider: oa, model: tts-1-hd}]}
  custom:
    targets:
      - {provider: oa, model: my-image-model, price: {input: 0, output: 0, per_image: 0.5,
                                                       per_image_by: {hd/1024x1024: 0.9}}}
"""
    result = compile_text(spec, "s.yaml")
    assert result.plan is not None, [d.format_text() for d in result.diagnostics]
    prices = {g.name: g.targets[0].price for g in result.plan.models}
    dalle = prices["dall-e-3"]
    assert dalle is not None and dalle.per_image == 0.04 and dalle.per_image_by["hd/1024x1792"] == 0.12
    assert prices["gpt-image-1"] == Price(input=5e-06, output=4e-05, cached_input=None)  # billed by tokens
    assert prices["tts-1-hd"] == Price(input=0.0, output=0.0, cached_input=None, per_character=3e-05)
    custom = prices["custom"]
    assert custom is not None and custom.per_image == 0.5 and dict(custom.per_image_by) == {"hd/1024x1024": 0.9}
    assert not [d for d in result.diagnostics if d.code.startswith("cost.")]
    assert bases(result.plan)["dall-e-3"].per_image == 0.12  # a budget holds the dearest kind


def test_a_streamed_transcript_relays_whole_events_and_takes_the_last_ones_usage() -> None:
    events = (b'data: {"type":"transcript.text.delta","delta":"Hi "}\r\n\r\n'
              b'data: {"type":"transcript.text.delta","delta":"there"}\n\n'
              b'data: {"type":"transcript.text.done","text":"Hi there","usage":{"type":"tokens",'
              b'"input_tokens":14,"output_tokens":45,"total_tokens":59}}\n\n')
    relay = TranscriptRelay(Usage(seconds=2.0))
    out = b"".join(relay.feed(events[i:i + 7]) for i in range(0, len(events), 7))
    assert out == events.replace(b"\r\n", b"\n") and relay.done and relay.usage == Usage(prompt=14, completion=45)
    cut = TranscriptRelay(Usage(seconds=2.0))
    assert cut.feed(events[:60]).startswith(b"data: ") and not cut.done
    assert cut.usage == Usage(seconds=2.0)  # a stream cut before its end is charged the upload's length
    bare = TranscriptRelay(Usage(seconds=1.5))
    bare.feed(b'data: {"type":"transcript.text.done","text":"x"}\n\n')
    assert bare.done and bare.usage == Usage(seconds=1.5)
