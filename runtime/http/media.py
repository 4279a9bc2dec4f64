"""The media routes: `/v1/images/generations`, `/v1/images/edits`, `/v1/audio/speech`,
`/v1/audio/transcriptions`, `/v1/audio/translations`, `/v1/moderations` and `/v1/rerank` (Cohere's
v2 shape, also `/v2/rerank`).

Each request is read and checked here (JSON under `server.max_body`, multipart uploads under
`server.max_upload`), then served by the routing loop like a chat call (the same auth, limits,
budgets, retries, fallbacks and spend rows) through :class:`MediaDialect`, which builds each
attempt's upstream request for the deployment picked and prices its answer by unit
(:mod:`runtime.upstream.media_wire`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from httpx import Headers

from sidegate.runtime.asgi import Receive, Scope, read_body
from sidegate.runtime.errors import BadRequest, GatewayError, UpstreamError
from sidegate.runtime.http.multipart_form import Form, read_form
from sidegate.runtime.http.request_guard import check_depth
from sidegate.runtime.plan import Family, Server
from sidegate.runtime.routing.call import json_object
from sidegate.runtime.upstream.media_wire import (
    ByteRelay,
    TranscriptRelay,
    json_request,
    media_url,
    multipart_request,
    units,
    voyage_rerank_answer,
    voyage_rerank_body,
    wav_seconds,
)
from sidegate.runtime.upstream.multipart import Upload
from sidegate.runtime.upstream.openai_wire import Usage
from sidegate.runtime.upstream.urlpath import check_model_name

if TYPE_CHECKING:
    from sidegate.runtime.routing.state import Deployment
    from sidegate.runtime.upstream.adapter import StreamTranslator
    from sidegate.runtime.upstream.transport import UpstreamRequest

__all__ = ["MEDIA_OPS", "MEDIA_ROUTES", "MediaDialect", "read_media"]

MEDIA_ROUTES = {"/images/generations": "images", "/images/edits": "image_edits", "/audio/speech": "speech",
                "/audio/transcriptions": "transcriptions", "/audio/translations": "translations",
                "/moderations": "moderations", "/rerank": "rerank", "/v2/rerank": "rerank"}
"""Path (without `/v1`) -> media operation."""
MEDIA_OPS = frozenset(MEDIA_ROUTES.values())
"""The media operations (the app reads their bodies through the media route)."""

_UPLOADS = frozenset({"image_edits", "transcriptions", "translations"})
_TEXT_FORMATS = frozenset({"text", "srt", "vtt"})
_REQUIRED = {"images": ("prompt",), "speech": ("input", "voice"), "moderations": ("input",),
             "rerank": ("query", "documents"), "image_edits": ("prompt",)}


class MediaDialect:
    """One media request: its upstream request per attempt, its answer's type and units."""

    def __init__(self, op: str, data: dict[str, Any], files: list[Upload] | None = None,
                 audio_seconds: float | None = None, extra: dict[str, Any] | None = None) -> None:
        self.op = op
        self.extra = extra if extra is not None else {}
        """The request's log line fields (the units an answer is priced by go there as `units`)."""
        self.data = data
        """The client's fields (the routing loop and pre_call guardrails read and mask them here)."""
        self.files = files
        """The uploaded files of a multipart request (None: a JSON request)."""
        self.audio_seconds = audio_seconds
        """The upload's length when sidegate can tell (a WAV file), for a transcript without a duration."""
        self.text_answer = op in ("transcriptions", "translations") and data.get("response_format") in _TEXT_FORMATS
        self.streamed = op == "transcriptions" and data.get("stream") is True

    def request(self, dep: Deployment, model: str) -> UpstreamRequest:
        """The upstream request for `dep` (upstream model `model`)."""
        url = media_url(dep.provider, model, self.op)
        body = {k: v for k, v in self.data.items() if k != "stream" or self.op != "speech"}
        if self.files is None:
            if self.op == "rerank" and dep.provider.family is Family.VOYAGE:
                body = voyage_rerank_body(body)
            return json_request(url, dep.headers, body, model, dep.provider.connect_timeout)
        fields = [(k, "true" if item is True else item) for k, v in body.items()
                  for item in (v if isinstance(v, list) else [v])]
        return multipart_request(url, dep.headers, fields, self.files, model, dep.provider.connect_timeout)

    def response(self, dep: Deployment, model: str, body: bytes) -> tuple[bytes, Usage | None]:
        """The upstream's answer as it is, and the units it is priced by."""
        if self.op == "rerank" and dep.provider.family is Family.VOYAGE:
            answer, usage = voyage_rerank_answer(body)
        else:
            answer, usage = units(self.op, body, as_json=not self.text_answer)
        if usage.images:
            usage.image_kind = f"{self.data.get('quality') or 'standard'}/{self.data.get('size') or '1024x1024'}"
        if self.op in ("transcriptions", "translations") and not usage.seconds and not usage.prompt:
            usage.seconds = self.audio_seconds or 0.0
        self._log_units(usage)
        return answer, usage

    def _log_units(self, usage: Usage) -> None:
        shown = {"images": usage.images, "audio_seconds": usage.seconds, "characters": usage.characters,
                 "search_units": usage.search_units}
        self.extra["units"] = {k: v for k, v in shown.items() if v}

    def media_type(self, headers: Headers) -> bytes:
        """The client's content type: the upstream's for audio and text transcripts, else JSON."""
        kind: str = headers.get("content-type", "")
        if self.op == "speech":
            if not kind.startswith(("audio/", "application/octet-stream", "text/event-stream")):
                raise UpstreamError(f"upstream answered speech with {kind[:60]!r}, not audio")
            return kind.encode("latin-1")
        if self.streamed:
            if not kind.startswith("text/event-stream"):
                raise BadRequest(f"the upstream answered a streamed transcript with {kind[:60]!r}, not events "
                                 "(whisper-1 does not stream: stream gpt-4o-transcribe models)", param="stream",
                                 code="stream_unsupported")  # (the client's choice: no retry, no breaker failure)
            return b"text/event-stream; charset=utf-8"
        if self.text_answer and kind.startswith("text/"):
            return kind.encode("latin-1")
        return b"application/json"

    def stream(self, dep: Deployment, model: str) -> StreamTranslator:
        """Speech: the audio bytes as they arrive, priced by the input's characters; a streamed
        transcript: its events, priced by the tokens its last one reports."""
        if self.streamed:
            relay = TranscriptRelay(Usage(seconds=self.audio_seconds or 0.0))
            self._log_units(Usage())
            return relay
        usage = Usage(characters=len(str(self.data.get("input", ""))))
        self._log_units(usage)
        return ByteRelay(usage)

    def error_event(self, err: GatewayError) -> bytes:
        """Audio cannot carry an error event: `err` is raised instead, so the answer ends without its
        last chunk and the client sees it cut rather than whole (the call is accounted as `err`)."""
        raise err

    async def complete(self) -> None:
        """Nothing is kept of a media answer."""


def _check_model(data: dict[str, Any]) -> None:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string", param="model")
    check_model_name(model)


def _json_body(op: str, raw: bytes) -> dict[str, Any]:
    data = json_object(raw)
    _check_model(data)
    for name in _REQUIRED[op]:
        if name not in data:
            raise BadRequest(f"'{name}' is required", param=name)
    text = _REQUIRED[op][0]
    if op in ("images", "speech") and not isinstance(data[text], str):
        raise BadRequest(f"'{text}' must be a string", param=text)
    if op == "rerank":
        if not isinstance(data["query"], str) or not data["query"]:
            raise BadRequest("'query' must be a non-empty string", param="query")
        docs = data["documents"]
        if not isinstance(docs, list) or not docs:
            raise BadRequest("'documents' must be a non-empty array", param="documents")
    if op == "speech" and "stream" in data:
        raise BadRequest("'stream' is not a parameter of audio/speech (the audio is always relayed as it "
                         "arrives; stream_format picks audio or server-sent events)", param="stream")
    if data.get("stream") not in (None, False):
        raise BadRequest(f"streamed answers of {op} are not supported by this gateway", param="stream")
    return data


def _form_fields(op: str, form: Form) -> tuple[dict[str, Any], list[Upload]]:
    fields: dict[str, Any] = {}
    files: list[Upload] = []
    for part in form.parts:
        if part.filename is not None:
            files.append(Upload(part.name, part.filename, part.data, part.content_type or "application/octet-stream"))
        elif part.name in fields:  # repeated fields (`timestamp_granularities[]`) go on as a list
            previous = fields[part.name]
            fields[part.name] = [*(previous if isinstance(previous, list) else [previous]), part.text()]
        else:
            fields[part.name] = part.text()
    _check_model(fields)
    wanted = ("image", "image[]") if op == "image_edits" else ("file",)
    if not any(f.name in wanted for f in files):
        raise BadRequest(f"'{wanted[0]}' is required: upload it as a file part", param=wanted[0])
    for name in _REQUIRED.get(op, ()):
        if name not in fields:
            raise BadRequest(f"'{name}' is required", param=name)
    stream = fields.pop("stream", None)
    if op == "transcriptions" and stream == "true":
        fields["stream"] = True  # relayed as events (sent upstream as the field it came as)
    elif stream not in (None, "false"):
        raise BadRequest(f"'stream' must be true or false, and only transcriptions stream (not {op})", param="stream")
    return fields, files


async def read_media(op: str, scope: Scope, receive: Receive, server: Server,
                     extra: dict[str, Any]) -> tuple[dict[str, Any], MediaDialect]:
    """The request's fields (what routing, limits and guardrails read) and its dialect (`extra`: the
    request's log line fields)."""
    if op in _UPLOADS:
        form = await read_form(scope, receive, server.max_upload, server.body_timeout)
        fields, files = _form_fields(op, form)
        seconds = None
        if op != "image_edits":
            audio = next(f for f in files if f.name == "file")
            seconds = wav_seconds(audio.data)
        return fields, MediaDialect(op, fields, files, seconds, extra)
    raw = await read_body(scope, receive, server.max_body, server.body_timeout)
    data = _json_body(op, raw)
    check_depth(data, server.max_json_depth, raw)
    if op == "speech":
        data["stream"] = True  # the audio is relayed as it arrives (the marker is not sent upstream)
    return data, MediaDialect(op, data, extra=extra)
