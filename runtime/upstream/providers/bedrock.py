"""Amazon Bedrock Converse / ConverseStream
(https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html): OpenAI chat
requests to Converse JSON, answers and `application/vnd.amazon.eventstream` frames (decoded with
botocore's `EventStreamBuffer`) back to OpenAI's shape; exception frames become errors.

URL (see `BedrockAdapter.url`): `{base_url}/model/{modelId}/converse` with `base_url`
`bedrock_base_url(region)`; streams go to `/converse-stream`. Requests are signed with SigV4 by
`runtime.upstream.providers.bedrock_auth.BedrockSigner` after translation (or carry a Bedrock API key as a bearer
token through the provider's auth scheme).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, cast

import httpx
import orjson

from sidegate.runtime.errors import BadRequest, GatewayError, UpstreamError
from sidegate.runtime.plan import Provider, Target
from sidegate.runtime.upstream.openai_wire import Usage, thaw
from sidegate.runtime.upstream.providers.chat import (
    EFFORT_BUDGET,
    Chat,
    Image,
    Text,
    ToolCall,
    ToolResult,
    parse_chat,
    thinking_budget,
)
from sidegate.runtime.upstream.providers.common import (
    ChunkWriter,
    NativeAdapterBase,
    NativeStream,
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

__all__ = ["BedrockAdapter", "BedrockStream", "bedrock_base_url", "bedrock_request_body", "error_from_bedrock"]

SUPPORTED = frozenset(
    {"max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop", "tools", "tool_choice",
     "response_format", "reasoning_effort"}
)
FINISH = {
    "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "model_context_window_exceeded": "length",
    "tool_use": "tool_calls", "guardrail_intervened": "content_filter", "content_filtered": "content_filter",
}
EXCEPTION_STATUS = {
    "throttlingException": 429, "validationException": 400, "accessDeniedException": 403,
    "resourceNotFoundException": 404, "modelTimeoutException": 408, "serviceUnavailableException": 503,
    "internalServerException": 500, "modelStreamErrorException": 502, "modelErrorException": 502,
    "modelNotReadyException": 503, "serviceQuotaExceededException": 429,
}
_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
_CACHE_POINT = {"cachePoint": {"type": "default"}}


def bedrock_base_url(region: str) -> str:
    """The bedrock-runtime endpoint of `region`."""
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def _image(part: Image) -> dict[str, Any]:
    media = part.media_type or guess_media_type(part.url) or ""
    fmt = _FORMATS.get(media)
    if fmt is None:
        raise unsupported("bedrock", f"image type '{media or 'unknown'}'")
    if part.data is not None:
        return {"image": {"format": fmt, "source": {"bytes": part.data}}}
    if part.url.startswith("s3://"):
        return {"image": {"format": fmt, "source": {"s3Location": {"uri": part.url}}}}
    raise unsupported("bedrock", "an image by http(s) URL (send a data URL or s3:// URL)")


def _blocks(parts: list[Text | Image | ToolCall | ToolResult]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text):
            out.append({"text": part.text})
            if part.cache_control is not None:
                out.append(_CACHE_POINT)
        elif isinstance(part, Image):
            out.append(_image(part))
        elif isinstance(part, ToolCall):
            if not isinstance(part.arguments, dict):
                raise BadRequest(f"arguments of tool call '{part.name}' must be a JSON object", param="messages")
            out.append({"toolUse": {"toolUseId": part.id, "name": part.name, "input": part.arguments}})
        else:
            out.append({"toolResult": {"toolUseId": part.call_id, "content": [{"text": part.content}]}})
    return out


def _thinking(payload: dict[str, Any], chat: Chat, model: str, drop: bool) -> None:
    """`reasoning_effort` for Claude on Bedrock: Anthropic's `thinking` in additionalModelRequestFields
    (the budget below maxTokens, which gets room for it when unset). Other Bedrock models take no
    thinking budget through Converse."""
    if "anthropic." not in model and "claude" not in model:
        if chat.reasoning_effort != "none" and not drop:
            raise unsupported("bedrock", f"'reasoning_effort' on model '{model}'", param="reasoning_effort")
        return
    inference = payload.setdefault("inferenceConfig", {})
    wanted = EFFORT_BUDGET.get(str(chat.reasoning_effort))
    if wanted is not None and "maxTokens" not in inference:
        inference["maxTokens"] = wanted + 4096
    budget = thinking_budget(chat, int(inference.get("maxTokens") or 0), "bedrock")
    if budget is not None:
        payload.setdefault("additionalModelRequestFields", {})["thinking"] = {"type": "enabled",
                                                                            "budget_tokens": budget}
    if not inference:
        del payload["inferenceConfig"]


def embed_body(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """InvokeModel's native body for an embeddings request: Amazon Titan Text Embeddings take one
    `inputText` a request (`dimensions` on v2); Cohere Embed on Bedrock takes `texts` in batches."""
    texts = embedding_inputs(body, "bedrock")
    dims = body.get("dimensions")
    if "cohere." in model:
        if dims is not None:
            raise unsupported("bedrock", f"'dimensions' on model '{model}'", param="dimensions")
        return {"texts": texts, "input_type": "search_document"}
    if "titan-embed" not in model:
        raise unsupported("bedrock", f"embeddings with model '{model}' (Titan or Cohere embedding models)",
                          param="model")
    if len(texts) != 1:
        raise BadRequest("Titan embedding models on Bedrock take one input a request", param="input")
    out: dict[str, Any] = {"inputText": texts[0]}
    if isinstance(dims, int):
        out["dimensions"] = dims
    return out


def embeddings_answer(obj: Any, model: str, request: Mapping[str, Any]) -> tuple[bytes, Usage | None]:
    """Titan's `embedding` (+ `inputTextTokenCount`) or Cohere's `embeddings` as OpenAI's list."""
    if not isinstance(obj, dict):
        raise upstream_error("bedrock", 502, "answer is not a JSON object")
    if isinstance(obj.get("embedding"), list):
        vectors = [[float(v) for v in obj["embedding"]]]
        tokens: Any = obj.get("inputTextTokenCount")
    else:
        raw = obj.get("embeddings")
        if isinstance(raw, dict):  # embedding_types asked: {"float": [[...]]}
            raw = raw.get("float")
        if not isinstance(raw, list):
            raise upstream_error("bedrock", 502, "answer without embeddings")
        vectors = [[float(v) for v in e] for e in raw]
        tokens = ((obj.get("meta") or {}).get("billed_units") or {}).get("input_tokens")
    fmt = request.get("encoding_format")
    usage = or_absent(lambda: Usage(prompt=token_count(tokens)))
    return embeddings_body(vectors, model, usage.prompt if usage else 0, fmt if isinstance(fmt, str) else None), usage


def bedrock_request_body(chat: Chat, drop: bool = False) -> dict[str, Any]:
    """The Converse body for a parsed chat request."""
    out: dict[str, Any] = {"messages": [{"role": t.role, "content": _blocks(t.parts)} for t in chat.turns]}
    if chat.system:
        out["system"] = _blocks(list(chat.system))
    inference: dict[str, Any] = {}
    for key, value in (("maxTokens", chat.max_tokens), ("temperature", chat.temperature), ("topP", chat.top_p)):
        if value is not None:
            inference[key] = value
    if chat.stop:
        inference["stopSequences"] = chat.stop
    if inference:
        out["inferenceConfig"] = inference
    if chat.top_k is not None:
        out["additionalModelRequestFields"] = {"top_k": chat.top_k}
    if chat.tools:
        tools: list[dict[str, Any]] = []
        for tool in chat.tools:
            spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": tool.parameters}}
            if tool.description:
                spec["description"] = tool.description
            tools.append({"toolSpec": spec})
            if tool.cache_control is not None:
                tools.append(_CACHE_POINT)
        config: dict[str, Any] = {"tools": tools}
        if chat.tool_name:
            config["toolChoice"] = {"tool": {"name": chat.tool_name}}
        elif chat.tool_choice in ("auto", "required"):
            config["toolChoice"] = {"any": {}} if chat.tool_choice == "required" else {"auto": {}}
        elif chat.tool_choice == "none" and not drop:
            raise unsupported("bedrock", "tool_choice 'none'", param="tool_choice")
        out["toolConfig"] = config
    if chat.response_format is not None:
        schema = chat.response_format.schema or {"type": "object"}
        structure: dict[str, Any] = {"schema": orjson.dumps(schema).decode()}
        if chat.response_format.name:
            structure["name"] = chat.response_format.name
        out["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": structure}}}
    return out


def _usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    read = token_count(usage.get("cacheReadInputTokens"))
    written = token_count(usage.get("cacheWriteInputTokens"))
    return Usage(prompt=token_count(usage.get("inputTokens")) + read + written,
                 completion=token_count(usage.get("outputTokens")), cached=read)


def error_from_bedrock(status: int, headers: httpx.Headers | Mapping[str, str], body: bytes) -> GatewayError:
    """A Bedrock error (`x-amzn-ErrorType` header, `{"message": ...}` body) mapped by status."""
    kind = (headers.get("x-amzn-errortype") or "").split(":", 1)[0]
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    message = ""
    if isinstance(obj, dict):
        message = str(obj.get("message") or obj.get("Message") or "")
    message = message or body[:300].decode("utf-8", "replace") or kind or "no message"
    label = f"bedrock {kind}" if kind else "bedrock"
    auth = kind in ("AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException")
    return upstream_error(label, status, message, retry_after=retry_after_seconds(headers), auth=auth)


class BedrockAdapter(NativeAdapterBase):
    """OpenAI chat <-> Bedrock Converse."""

    stream_content_type = "application/vnd.amazon.eventstream"

    @staticmethod
    def url(base_url: str, model: str, op: str) -> str:
        """`{base_url}/model/{modelId}/converse` (`/invoke` for embeddings), the model id (or ARN)
        percent-encoded."""
        action = "invoke" if op == "embeddings" else "converse"
        return f"{base_url.rstrip('/')}/model/{path_segment(model)}/{action}"

    @staticmethod
    def stream_url(url: str) -> str:
        """The ConverseStream URL for a Converse URL."""
        return url.removesuffix("/converse") + "/converse-stream"

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
        """POST the Converse body, or an embedding model's InvokeModel body (unsigned: the signer
        adds SigV4 afterwards)."""
        if op == "embeddings":
            payload = {**{k: thaw(v) for k, v in target.extra_body.items()}, **embed_body(body, model)}
            return UpstreamRequest("POST", url, headers, json_body(payload), provider.connect_timeout)
        if op != "chat":
            raise unsupported("bedrock", f"the '{op}' operation", param="model")
        chat = parse_chat(body, "bedrock", SUPPORTED, self.drop_unsupported)
        payload = {**{k: thaw(v) for k, v in target.extra_body.items()},
                   **bedrock_request_body(chat, self.drop_unsupported)}
        if chat.max_tokens is None and target.max_output_tokens:
            payload.setdefault("inferenceConfig", {})["maxTokens"] = target.max_output_tokens
        if chat.reasoning_effort is not None:
            _thinking(payload, chat, model, self.drop_unsupported)
        if chat.stream:
            url = self.stream_url(url)
        return UpstreamRequest("POST", url, headers, json_body(payload), provider.connect_timeout)

    def response(
        self, op: str, body: bytes, *, model: str = "", request: Mapping[str, Any] | None = None
    ) -> tuple[bytes, Usage | None]:
        """A Converse answer as a `chat.completion` (an InvokeModel embedding answer as OpenAI's list)."""
        obj = loads_upstream(body)
        if op == "embeddings":
            return embeddings_answer(obj, model, request or {})
        message = (obj.get("output") or {}).get("message") if isinstance(obj, dict) else None
        if not isinstance(message, dict):
            raise upstream_error("bedrock", 502, "answer without output.message")
        text: list[str] = []
        reasoning: list[str] = []
        calls: list[tuple[str, str, str]] = []
        for block in message.get("content") or []:
            if isinstance(block.get("text"), str):
                text.append(block["text"])
            elif isinstance(block.get("toolUse"), dict):
                use = block["toolUse"]
                calls.append((str(use.get("toolUseId")), str(use.get("name")),
                              orjson.dumps(use.get("input") or {}).decode()))
            elif isinstance(block.get("reasoningContent"), dict):
                reasoning.append(str((block["reasoningContent"].get("reasoningText") or {}).get("text") or ""))
        usage = or_absent(lambda: _usage(obj.get("usage")))
        out = completion_body(
            id=f"bedrock-{uuid.uuid4().hex}", model=model, created=int(self._clock()), text="".join(text),
            reasoning="".join(reasoning), tool_calls=calls,
            finish_reason=FINISH.get(str(obj.get("stopReason")), "stop"), usage=usage,
        )
        return out, usage

    def stream(self, op: str, keep_usage: bool, *, model: str = "") -> BedrockStream:
        """A translator for one ConverseStream event stream."""
        return BedrockStream(keep_usage, int(self._clock()), model)

    def error(self, status: int, headers: httpx.Headers, body: bytes) -> GatewayError:
        """Bedrock's error answer mapped by status."""
        return error_from_bedrock(status, headers, body)


class BedrockStream(NativeStream):
    """ConverseStream binary frames -> OpenAI chunk events; exception frames raise."""

    __slots__ = ("_buffer", "_tools", "_writer")

    def __init__(self, keep_usage: bool, created: int, model: str) -> None:
        super().__init__(keep_usage, created, model)
        from botocore.eventstream import EventStreamBuffer  # botocore (~9 MB) only where Bedrock streams

        self._buffer = EventStreamBuffer()
        self._writer = ChunkWriter(f"bedrock-{uuid.uuid4().hex}", model, created, keep_usage)
        self._tools: dict[int, int] = {}
        """contentBlockIndex -> OpenAI tool call index."""

    def feed(self, data: bytes) -> bytes:
        """OpenAI chunk bytes for the frames these bytes complete."""
        from botocore.eventstream import ParserError

        self._buffer.add_data(data)
        out: list[bytes] = []
        try:
            for message in self._buffer:
                # botocore-stubs types `headers` as int; it is the parsed header dict.
                out.append(self._message(cast(dict[str, Any], message.headers), message.payload))
        except ParserError as exc:
            raise UpstreamError(f"unreadable bedrock event stream: {type(exc).__name__}") from None
        return b"".join(out)

    def _message(self, headers: dict[str, Any], payload: bytes) -> bytes:
        kind = headers.get(":message-type")
        if kind == "exception":
            name = str(headers.get(":exception-type") or "exception")
            obj = orjson.loads(payload) if payload else {}
            message = str(obj.get("message") or obj.get("Message") or name) if isinstance(obj, dict) else name
            raise upstream_error(f"bedrock {name}", EXCEPTION_STATUS.get(name, 502), message)
        if kind == "error":
            raise UpstreamError(f"bedrock stream error {headers.get(':error-code')}: {headers.get(':error-message')}")
        if self.done:
            return b""
        event = headers.get(":event-type")
        obj = orjson.loads(payload) if payload else {}
        w = self._writer
        if event == "messageStart":
            return w.role()
        if event == "contentBlockStart":
            use = (obj.get("start") or {}).get("toolUse")
            if isinstance(use, dict):
                index = self._tools[int(obj.get("contentBlockIndex", 0))] = len(self._tools)
                return w.tool_start(index, str(use.get("toolUseId")), str(use.get("name")))
            return b""
        if event == "contentBlockDelta":
            delta = obj.get("delta") or {}
            if isinstance(delta.get("text"), str):
                return w.text(delta["text"])
            if isinstance(delta.get("toolUse"), dict):
                known = self._tools.get(int(obj.get("contentBlockIndex", 0)))
                return w.tool_args(known, str(delta["toolUse"].get("input") or "")) if known is not None else b""
            if isinstance(delta.get("reasoningContent"), dict):
                return w.reasoning(str(delta["reasoningContent"].get("text") or ""))
            return b""
        if event == "messageStop":
            return w.finish(FINISH.get(str(obj.get("stopReason")), "stop"))
        if event == "metadata":
            self.take_usage(_usage, obj.get("usage"))
            self.done = True
            return w.end(self.usage)
        return b""
