"""Fake upstreams of the media routes, speaking the documented wire formats and refusing what the
real APIs refuse.

OpenAI (https://platform.openai.com/docs/api-reference): `POST /v1/images/generations` (JSON; unknown
parameters, n > 1 for dall-e-3, a size the model does not make and a missing prompt are 400s),
`POST /v1/images/edits` (multipart: image and prompt required), `POST /v1/audio/speech` (JSON:
model, input <= 4096 characters and voice required; the audio comes in two pieces, the second only
once `release` is set, so a test can see the first arrive before the upstream has finished; with
`x-fake-mode: stall` it never answers, with `cut` the connection breaks after the first piece),
`POST /v1/audio/transcriptions` and `/translations` (multipart: file and model required; the
response_format json, verbose_json, text, srt or vtt), `POST /v1/moderations`.

Cohere v2 (https://docs.cohere.com/reference/rerank): `POST /v2/rerank`: model, query and documents
required ({"message"} errors), an answer with `meta.billed_units.search_units`.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from dataclasses import dataclass, field
from typing import Any

import trio

from tests.support.fake_base import FakeServer, Seen

SPEECH_FIRST = b"ID3\x04\x00" + bytes(range(200))
SPEECH_REST = bytes(range(255, 0, -1)) * 4
_IMAGE_PARAMS = {"model", "prompt", "n", "quality", "response_format", "size", "style", "user", "background",
                 "moderation", "output_compression", "output_format"}
_SIZES = {"dall-e-2": {"256x256", "512x512", "1024x1024"}, "dall-e-3": {"1024x1024", "1792x1024", "1024x1792"},
          "gpt-image-1": {"auto", "1024x1024", "1536x1024", "1024x1536"}}
_SPEECH_PARAMS = {"model", "input", "voice", "instructions", "response_format", "speed", "stream_format"}
_AUDIO_PARAMS = {"model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]",
                 "include[]", "chunking_strategy", "stream"}
TRANSCRIPT_USAGE = {"type": "tokens", "input_tokens": 14, "input_token_details": {"text_tokens": 0, "audio_tokens": 14},
                    "output_tokens": 45, "total_tokens": 59}
_TRANSCRIPT = "The quick brown fox jumped over the lazy dog."


def form_parts(seen: Seen) -> list[tuple[str, str | None, bytes]]:
    """(name, filename, data) of each part of a multipart body (parsed by the standard library)."""
    head = f"Content-Type: {seen.headers.get('content-type', '')}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + seen.raw)
    if not message.is_multipart():
        return []
    out = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        out.append((str(name), part.get_filename(), payload if isinstance(payload, bytes) else b""))
    return out


def _error(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


@dataclass
class FakeOpenAIMedia(FakeServer):
    release: trio.Event = field(default_factory=trio.Event)
    """Set by a test to let a speech answer's second piece go."""
    fail_next: int = 0
    """Answer this many requests with a 500 first (failover tests)."""

    async def answer(self, seen: Seen, send: Any) -> None:
        if self.fail_next:
            self.fail_next -= 1
            await self.json(send, 500, {"error": {"message": "The server had an error", "type": "server_error"}})
            return
        route = {"/v1/images/generations": self.images, "/v1/images/edits": self.edits,
                 "/v1/audio/speech": self.speech, "/v1/audio/transcriptions": self.audio,
                 "/v1/audio/translations": self.audio, "/v1/moderations": self.moderations}.get(seen.path)
        if route is None or seen.method != "POST":
            await self.json(send, 404, _error(f"Invalid URL ({seen.method} {seen.path})"))
            return
        await route(seen, send)

    async def images(self, seen: Seen, send: Any) -> None:
        body = seen.body if isinstance(seen.body, dict) else {}
        unknown = sorted(set(body) - _IMAGE_PARAMS)
        if unknown:
            await self.json(send, 400, _error(f"Unrecognized request argument supplied: {unknown[0]}"))
            return
        if not isinstance(body.get("prompt"), str):
            await self.json(send, 400, _error("Missing required parameter: 'prompt'.", "prompt"))
            return
        model = body.get("model", "dall-e-2")
        n = body.get("n", 1)
        if model == "dall-e-3" and n != 1:
            await self.json(send, 400, _error("You must provide n=1 for this model.", "n"))
            return
        size = body.get("size", "1024x1024")
        if model in _SIZES and size not in _SIZES[model]:
            await self.json(send, 400, _error(f"'{size}' is not one of {sorted(_SIZES[model])} - 'size'", "size"))
            return
        await self.json(send, 200, self._images(model, n, body.get("response_format", "url")))

    def _images(self, model: str, n: int, fmt: str) -> dict[str, Any]:
        one = {"b64_json": "aGVsbG8="} if fmt == "b64_json" or model.startswith("gpt-image") else {
            "url": "https://images.example/one.png"}
        answer: dict[str, Any] = {"created": 1713833628, "data": [
            {**one, **({"revised_prompt": "A cat."} if model == "dall-e-3" else {})} for _ in range(n)]}
        if model.startswith("gpt-image"):
            answer["usage"] = {"total_tokens": 100, "input_tokens": 50, "output_tokens": 50,
                               "input_tokens_details": {"text_tokens": 10, "image_tokens": 40}}
        return answer

    async def edits(self, seen: Seen, send: Any) -> None:
        parts = form_parts(seen)
        names = {name for name, _, _ in parts}
        images = [p for p in parts if p[0] in ("image", "image[]") and p[1] is not None]
        if not images:
            await self.json(send, 400, _error("Missing required parameter: 'image'.", "image"))
            return
        if "prompt" not in names:
            await self.json(send, 400, _error("Missing required parameter: 'prompt'.", "prompt"))
            return
        fields = {name: data.decode() for name, filename, data in parts if filename is None}
        await self.json(send, 200, self._images(fields.get("model", "dall-e-2"), int(fields.get("n", "1")),
                                                fields.get("response_format", "url")))

    async def speech(self, seen: Seen, send: Any) -> None:
        body = seen.body if isinstance(seen.body, dict) else {}
        unknown = sorted(set(body) - _SPEECH_PARAMS)
        if unknown:
            await self.json(send, 400, _error(f"Unrecognized request argument supplied: {unknown[0]}"))
            return
        for name in ("model", "input", "voice"):
            if name not in body:
                await self.json(send, 400, _error(f"Missing required parameter: '{name}'.", name))
                return
        if seen.headers.get("x-fake-mode") == "stall":  # a hung upstream: no answer until sidegate gives up
            await trio.sleep_forever()
        if len(body["input"]) > 4096:
            await self.json(send, 400, _error("string too long (maximum 4096 characters)", "input"))
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"audio/mpeg")]})
        await send({"type": "http.response.body", "body": SPEECH_FIRST, "more_body": True})
        if seen.headers.get("x-fake-mode") == "cut":
            raise RuntimeError("the connection breaks mid-answer")
        with trio.fail_after(10):
            await self.release.wait()
        await send({"type": "http.response.body", "body": SPEECH_REST, "more_body": False})

    async def audio(self, seen: Seen, send: Any) -> None:
        parts = form_parts(seen)
        if not parts:
            await self.json(send, 400, _error("Invalid Content-Type header, expected multipart/form-data"))
            return
        fields = {name: data.decode() for name, filename, data in parts if filename is None}
        files = [p for p in parts if p[1] is not None]
        unknown = sorted(set(fields) - _AUDIO_PARAMS)
        if unknown:
            await self.json(send, 400, _error(f"Unrecognized request argument supplied: {unknown[0]}"))
            return
        if not any(name == "file" for name, _, _ in files):
            await self.json(send, 400, _error("Missing required parameter: 'file'.", "file"))
            return
        if "model" not in fields:
            await self.json(send, 400, _error("Missing required parameter: 'model'.", "model"))
            return
        fmt = fields.get("response_format", "json")
        translate = seen.path.endswith("translations")
        tokens = fields["model"].startswith("gpt-4o")
        if fields.get("stream") == "true" and tokens and not translate:  # (whisper-1 ignores `stream`)
            words = _TRANSCRIPT.split(" ")
            events = [{"type": "transcript.text.delta", "delta": w + " ", "logprobs": []} for w in words]
            events.append({"type": "transcript.text.done", "text": _TRANSCRIPT, "logprobs": [],
                           "usage": TRANSCRIPT_USAGE})
            await self.stream(send, b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events))
            return
        if fmt == "text":
            await self._text(send, _TRANSCRIPT + "\n", b"text/plain; charset=utf-8")
        elif fmt in ("srt", "vtt"):
            cue = f"1\n00:00:00,000 --> 00:00:02,500\n{_TRANSCRIPT}\n\n"
            await self._text(send, cue if fmt == "srt" else "WEBVTT\n\n" + cue.replace(",", "."),
                             b"text/plain; charset=utf-8")
        elif fmt == "verbose_json":
            await self.json(send, 200, {"task": "translate" if translate else "transcribe", "language": "english",
                                        "duration": 2.5, "text": _TRANSCRIPT, "segments": []})
        elif translate:
            await self.json(send, 200, {"text": _TRANSCRIPT})
        else:
            usage = TRANSCRIPT_USAGE if tokens else {"type": "duration", "seconds": 3}
            await self.json(send, 200, {"text": _TRANSCRIPT, "usage": usage})

    async def _text(self, send: Any, text: str, kind: bytes) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": text.encode()})

    async def moderations(self, seen: Seen, send: Any) -> None:
        body = seen.body if isinstance(seen.body, dict) else {}
        if "input" not in body:
            await self.json(send, 400, _error("Missing required parameter: 'input'.", "input"))
            return
        flagged = "kill" in json.dumps(body["input"])
        await self.json(send, 200, {"id": "modr-1", "model": body.get("model", "omni-moderation-latest"), "results": [{
            "flagged": flagged, "categories": {"violence": flagged, "hate": False},
            "category_scores": {"violence": 0.9 if flagged else 0.01, "hate": 0.0},
            "category_applied_input_types": {"violence": ["text"], "hate": ["text"]}}]})


@dataclass
class FakeCohereRerank(FakeServer):
    async def answer(self, seen: Seen, send: Any) -> None:
        if seen.path != "/v2/rerank":
            await self.json(send, 404, {"message": f"path {seen.path} not found"})
            return
        body = seen.body if isinstance(seen.body, dict) else {}
        for name in ("model", "query", "documents"):
            if name not in body:
                await self.json(send, 400, {"id": "e1", "message": f"invalid request: {name} must be provided"})
                return
        docs = body["documents"]
        if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
            await self.json(send, 400, {"id": "e2", "message": "invalid request: documents must be strings"})
            return
        query = set(body["query"].lower().split())
        scored = sorted(((len(query & set(d.lower().split())) / (1 + len(query)), i) for i, d in enumerate(docs)),
                        reverse=True)
        top = body.get("top_n", len(docs))
        await self.json(send, 200, {
            "id": "07734bd2-2473-4f07-94e1-0d9f0e6843cf",
            "results": [{"index": i, "relevance_score": round(s, 4)} for s, i in scored[:top]],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1 + (len(docs) - 1) // 100}},
        })


@dataclass
class FakeJinaRerank(FakeServer):
    """Jina's rerank (https://api.jina.ai/redoc#tag/rerank), an OpenAI-compatible server's route:
    `POST /v1/rerank` in Cohere's shape, billed in tokens (`usage.total_tokens`)."""

    async def answer(self, seen: Seen, send: Any) -> None:
        body = seen.body if isinstance(seen.body, dict) else {}
        if seen.path != "/v1/rerank" or not isinstance(body.get("query"), str) or "documents" not in body:
            await self.json(send, 422, {"detail": "query and documents are required"})
            return
        docs = body["documents"]
        tokens = sum(len(str(d).split()) for d in docs) + len(body["query"].split())
        await self.json(send, 200, {"model": body.get("model"), "usage": {"total_tokens": tokens},
                                    "results": [{"index": i, "relevance_score": 1.0 / (i + 1),
                                                 "document": {"text": d}} for i, d in enumerate(docs)]})
