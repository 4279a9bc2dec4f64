"""Gemini `generateContent` (https://ai.google.dev/api/generate-content) for Google AI Studio and
Vertex AI: OpenAI chat requests to Gemini's `contents`, answers, `?alt=sse` streams and errors back.

URLs (see `GeminiAdapter.url`): `{base_url}/models/{model}:generateContent` for chat (the stream
variant `:streamGenerateContent?alt=sse` is derived), `:batchEmbedContents` (AI Studio) or
`:predict` (Vertex) for embeddings. AI Studio's base URL is
`https://generativelanguage.googleapis.com/v1beta` with an `x-goog-api-key` header; Vertex's is
`vertex_base_url(project, region)` with an OAuth2 bearer token added by `VertexTokenSource`.

Gemini does not return tool call ids: they are made up here. A function call's `thoughtSignature`
(which Gemini 3 wants back in the next turn) rides inside the id after `__thought__`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import orjson

from sidegate.runtime.errors import BadRequest, GatewayError
from sidegate.runtime.plan import Provider, Target
from sidegate.runtime.retry_after import seconds_value
from sidegate.runtime.upstream.openai_wire import Usage, thaw
from sidegate.runtime.upstream.providers.chat import EFFORT_BUDGET, Chat, Image, Text, ToolCall, ToolResult, parse_chat
from sidegate.runtime.upstream.providers.common import (
    ChunkWriter,
    NativeAdapterBase,
    NativeStream,
    SseParser,
    completion_body,
    embedding_inputs,
    embeddings_body,
    guess_media_type,
    json_body,
    loads_upstream,
    retry_after_seconds,
    unsupported,
    upstream_error,
)
from sidegate.runtime.upstream.transport import UpstreamRequest
from sidegate.runtime.upstream.urlpath import path_segment
from sidegate.runtime.upstream.usage_check import or_absent, token_count

__all__ = [
    "THOUGHT_SEPARATOR",
    "GeminiAdapter",
    "GeminiStream",
    "error_from_gemini",
    "gemini_request_body",
    "vertex_base_url",
]

THOUGHT_SEPARATOR = "__thought__"
SUPPORTED = frozenset(
    {"max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop", "tools", "tool_choice",
     "response_format", "seed", "presence_penalty", "frequency_penalty", "reasoning_effort"}
)
FINISH = {
    "STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter", "LANGUAGE": "content_filter",
}


def vertex_base_url(project: str, region: str) -> str:
    """The Vertex AI base URL for Google's publisher models in `project` / `region` (`global` too)."""
    host = "aiplatform.googleapis.com" if region == "global" else f"{region}-aiplatform.googleapis.com"
    return f"https://{host}/v1/projects/{project}/locations/{region}/publishers/google"


def _part(part: Text | Image | ToolCall | ToolResult) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"text": part.text}
    if isinstance(part, Image):
        if part.data is not None:
            return {"inlineData": {"mimeType": part.media_type, "data": part.data}}
        ref: dict[str, Any] = {"fileUri": part.url}
        media = guess_media_type(part.url)
        if media:
            ref["mimeType"] = media
        return {"fileData": ref}
    if isinstance(part, ToolCall):
        if not isinstance(part.arguments, dict):
            raise BadRequest(f"arguments of tool call '{part.name}' must be a JSON object", param="messages")
        out: dict[str, Any] = {"functionCall": {"name": part.name, "args": part.arguments}}
        _, sep, signature = part.id.partition(THOUGHT_SEPARATOR)
        if sep and signature:
            out["thoughtSignature"] = signature
        return out
    try:
        value = orjson.loads(part.content)
    except orjson.JSONDecodeError:
        value = None
    response = value if isinstance(value, dict) else {"result": part.content}
    return {"functionResponse": {"name": part.name, "response": response}}


def gemini_request_body(chat: Chat) -> dict[str, Any]:
    """The `generateContent` body for a parsed chat request."""
    out: dict[str, Any] = {
        "contents": [
            {"role": "model" if t.role == "assistant" else "user", "parts": [_part(p) for p in t.parts]}
            for t in chat.turns
        ]
    }
    if chat.system:
        out["systemInstruction"] = {"parts": [{"text": t.text} for t in chat.system]}
    if chat.tools:
        declarations = []
        for tool in chat.tools:
            spec: dict[str, Any] = {"name": tool.name, "parametersJsonSchema": tool.parameters}
            if tool.description:
                spec["description"] = tool.description
            declarations.append(spec)
        out["tools"] = [{"functionDeclarations": declarations}]
        if chat.tool_choice:
            mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}[chat.tool_choice]
            config: dict[str, Any] = {"mode": mode}
            if chat.tool_name:
                config["allowedFunctionNames"] = [chat.tool_name]
            out["toolConfig"] = {"functionCallingConfig": config}
    generation: dict[str, Any] = {}
    for key, value in (
        ("maxOutputTokens", chat.max_tokens), ("temperature", chat.temperature), ("topP", chat.top_p),
        ("topK", chat.top_k), ("seed", chat.seed), ("presencePenalty", chat.presence_penalty),
        ("frequencyPenalty", chat.frequency_penalty),
    ):
        if value is not None:
            generation[key] = value
    if chat.stop:
        generation["stopSequences"] = chat.stop
    if chat.response_format is not None:
        generation["responseMimeType"] = "application/json"
        if chat.response_format.schema is not None:
            generation["responseJsonSchema"] = chat.response_format.schema
    if chat.reasoning_effort is not None:
        # Gemini's budget is its own, apart from maxOutputTokens; 0 turns thinking off.
        generation["thinkingConfig"] = {"thinkingBudget": EFFORT_BUDGET.get(chat.reasoning_effort, 0)}
    if generation:
        out["generationConfig"] = generation
    return out


def _usage(meta: Any) -> Usage | None:
    """Usage from `usageMetadata`; raises InvalidUsage for a count that is not one."""
    if not isinstance(meta, dict):
        return None
    thoughts = token_count(meta.get("thoughtsTokenCount"))
    return Usage(
        prompt=token_count(meta.get("promptTokenCount")) + token_count(meta.get("toolUsePromptTokenCount")),
        completion=token_count(meta.get("candidatesTokenCount")) + thoughts,
        cached=token_count(meta.get("cachedContentTokenCount")),
        reasoning=thoughts,
    )


def _call_id(call: Mapping[str, Any], signature: Any) -> str:
    base = str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}")
    return f"{base}{THOUGHT_SEPARATOR}{signature}" if isinstance(signature, str) and signature else base


def _candidate(obj: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(obj.get("error"), dict):
        err = obj["error"]
        raise upstream_error("gemini", int(err.get("code") or 500), str(err.get("message") or "stream error"))
    candidates = obj.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        return candidates[0]
    feedback = obj.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        raise BadRequest(f"gemini blocked the prompt: {feedback['blockReason']}", code="content_policy_violation")
    return None


def error_from_gemini(status: int, headers: httpx.Headers | Mapping[str, str], body: bytes) -> GatewayError:
    """Google's `{"error": {"code", "message", "status", "details"}}` mapped by status."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):  # streamGenerateContent without alt=sse
        err = obj[0].get("error")
    if not isinstance(err, dict):
        return upstream_error("gemini", status, body[:300].decode("utf-8", "replace") or "no body")
    retry, auth = retry_after_seconds(headers), err.get("status") in ("UNAUTHENTICATED", "PERMISSION_DENIED")
    for detail in err.get("details") or []:
        if not isinstance(detail, dict):
            continue
        if detail.get("reason") == "API_KEY_INVALID":
            auth = True
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            parsed = seconds_value(delay[:-1])
            retry = retry if parsed is None else parsed
    return upstream_error("gemini", status, str(err.get("message") or err.get("status")), retry_after=retry, auth=auth)


class GeminiAdapter(NativeAdapterBase):
    """OpenAI chat and embeddings <-> Gemini (`vertex=True` for Vertex AI's embeddings format)."""

    def __init__(
        self, *, vertex: bool = False, drop_unsupported: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(drop_unsupported=drop_unsupported, clock=clock)
        self.vertex = vertex

    def url(self, base_url: str, model: str, op: str) -> str:
        """`{base_url}/models/{model}:{method}` for `op`."""
        method = "generateContent"
        if op == "embeddings":
            method = "predict" if self.vertex else "batchEmbedContents"
        return f"{base_url.rstrip('/')}/models/{path_segment(model)}:{method}"

    @staticmethod
    def stream_url(url: str) -> str:
        """The streaming variant of a `:generateContent` URL (`:streamGenerateContent?alt=sse`)."""
        return url.replace(":generateContent", ":streamGenerateContent?alt=sse")

    def request(
        self,
        provider: Provider,
        target: Target,
        url: str,
        headers: tuple[tuple[str, str], ...],
        op: str,
        model: str,
        body: dict[str, Any],
    ) -> UpstreamRequest:
        """POST the translated body; streams go to `:streamGenerateContent?alt=sse`."""
        extra = {k: thaw(v) for k, v in target.extra_body.items()}
        if op == "embeddings":
            payload = {**extra, **self._embed_body(body, model)}
        elif op == "chat":
            chat = parse_chat(body, "gemini", SUPPORTED, self.drop_unsupported)
            payload = {**extra, **gemini_request_body(chat)}
            if chat.max_tokens is None and target.max_output_tokens:
                payload.setdefault("generationConfig", {})["maxOutputTokens"] = target.max_output_tokens
            if chat.stream:
                url = self.stream_url(url)
        else:
            raise unsupported("gemini", f"the '{op}' operation", param="model")
        return UpstreamRequest("POST", url, headers, json_body(payload), provider.connect_timeout)

    def _embed_body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        texts = embedding_inputs(body, "gemini")
        dims = body.get("dimensions")
        if self.vertex:
            out: dict[str, Any] = {"instances": [{"content": t} for t in texts]}
            if isinstance(dims, int):
                out["parameters"] = {"outputDimensionality": dims}
            return out
        requests = []
        for text in texts:
            item: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
            if isinstance(dims, int):
                item["outputDimensionality"] = dims
            requests.append(item)
        return {"requests": requests}

    def response(
        self, op: str, body: bytes, *, model: str = "", request: Mapping[str, Any] | None = None
    ) -> tuple[bytes, Usage | None]:
        """A Gemini answer as a `chat.completion` (or an embeddings list)."""
        obj = loads_upstream(body)
        if not isinstance(obj, dict):
            raise upstream_error("gemini", 502, "answer is not a JSON object")
        if op == "embeddings":
            return self._embeddings(obj, model, request or {})
        candidate = _candidate(obj) or {}
        text: list[str] = []
        reasoning: list[str] = []
        calls: list[tuple[str, str, str]] = []
        for part in (candidate.get("content") or {}).get("parts") or []:
            if isinstance(part.get("functionCall"), dict):
                call = part["functionCall"]
                args = orjson.dumps(call.get("args") or {}).decode()
                calls.append((_call_id(call, part.get("thoughtSignature")), str(call.get("name")), args))
            elif isinstance(part.get("text"), str):
                (reasoning if part.get("thought") else text).append(part["text"])
        finish = FINISH.get(str(candidate.get("finishReason")), "stop")
        if calls and finish == "stop":
            finish = "tool_calls"
        usage = or_absent(lambda: _usage(obj.get("usageMetadata")))
        out = completion_body(
            id=str(obj.get("responseId") or "gemini"), model=str(obj.get("modelVersion") or model),
            created=int(self._clock()), text="".join(text), reasoning="".join(reasoning), tool_calls=calls,
            finish_reason=finish, usage=usage,
        )
        return out, usage

    def _embeddings(self, obj: dict[str, Any], model: str,
                    request: Mapping[str, Any]) -> tuple[bytes, Usage | None]:
        vectors: list[list[float]] = []
        counts: list[Any] = []
        if self.vertex:
            for prediction in obj.get("predictions") or []:
                emb = prediction.get("embeddings") or {}
                vectors.append([float(v) for v in emb.get("values") or []])
                counts.append((emb.get("statistics") or {}).get("token_count"))
        else:
            vectors = [[float(v) for v in e.get("values") or []] for e in obj.get("embeddings") or []]
        fmt = request.get("encoding_format")
        usage = or_absent(lambda: Usage(prompt=sum(token_count(c) for c in counts)))
        body = embeddings_body(vectors, model, usage.prompt if usage else 0, fmt if isinstance(fmt, str) else None)
        return body, usage

    def stream(self, op: str, keep_usage: bool, *, model: str = "") -> GeminiStream:
        """A translator for one `?alt=sse` stream."""
        return GeminiStream(keep_usage, int(self._clock()), model)

    def error(self, status: int, headers: httpx.Headers, body: bytes) -> GatewayError:
        """Google's error envelope mapped by status."""
        return error_from_gemini(status, headers, body)


class GeminiStream(NativeStream):
    """Gemini SSE chunks (each a whole `GenerateContentResponse`) -> OpenAI chunk events."""

    __slots__ = ("_parser", "_tools", "_writer")

    def __init__(self, keep_usage: bool, created: int, model: str) -> None:
        super().__init__(keep_usage, created, model)
        self._parser = SseParser()
        self._writer: ChunkWriter | None = None
        self._tools = 0

    def feed(self, data: bytes) -> bytes:
        """OpenAI chunk bytes for these upstream bytes."""
        out: list[bytes] = []
        for _, obj in self._parser.objects(data, "gemini", lambda: self.done):
            if isinstance(obj, dict):
                out.append(self._chunk(obj))
        return b"".join(out)

    def _chunk(self, obj: dict[str, Any]) -> bytes:
        candidate = _candidate(obj)
        w = self._writer
        if w is None:
            w = self._writer = ChunkWriter(
                str(obj.get("responseId") or "gemini"), str(obj.get("modelVersion") or self._model), self._created,
                self.keep_usage,
            )
        self.take_usage(_usage, obj.get("usageMetadata"))
        out = [w.role()]
        if candidate is None:
            return b"".join(out)
        for part in (candidate.get("content") or {}).get("parts") or []:
            if isinstance(part.get("functionCall"), dict):
                call = part["functionCall"]
                index, self._tools = self._tools, self._tools + 1
                out.append(w.tool_start(index, _call_id(call, part.get("thoughtSignature")), str(call.get("name"))))
                out.append(w.tool_args(index, orjson.dumps(call.get("args") or {}).decode()))
            elif isinstance(part.get("text"), str):
                out.append(w.reasoning(part["text"]) if part.get("thought") else w.text(part["text"]))
        reason = candidate.get("finishReason")
        if reason:
            finish = FINISH.get(str(reason), "stop")
            out.append(w.finish("tool_calls" if self._tools and finish == "stop" else finish))
            out.append(w.end(self.usage))
            self.done = True
        return b"".join(out)
