"""A fake Amazon Bedrock runtime: `POST /model/{modelId}/converse` (JSON) and `/converse-stream`
(`application/vnd.amazon.eventstream` binary frames), with an encoder for those frames.

Wire examples follow https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html,
https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html,
https://docs.aws.amazon.com/bedrock/latest/userguide/tool-use-examples.html (toolUse answers) and the
event stream encoding (https://docs.aws.amazon.com/transcribe/latest/dg/streaming-setting-up.html:
prelude total/headers lengths + CRC32, headers, payload, message CRC32).

Behaviour by the model id (`mode[:anything]`):
  ok (default)  text; with tools, one toolUse per tool (up to two: parallel calls)
  throttled   HTTP 429 ThrottlingException     context  HTTP 400 ValidationException (input too long)
  fail-500    HTTP 500 InternalServerException  denied   HTTP 403 AccessDeniedException
  stream-error  a stream that ends in a `throttlingException` exception frame
Unsigned requests (no SigV4 or bearer `Authorization`) get 403 like the real service.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

from tests.support.fake_base import FakeServer, Seen, open_fake

__all__ = ["CONVERSE_TEXT", "CONVERSE_TOOL", "FakeBedrock", "encode_frame", "event_frame", "exception_frame",
           "open_fake_bedrock", "stream_events"]

# https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html (response syntax)
CONVERSE_TEXT: dict[str, Any] = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Hi there!"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 30, "outputTokens": 4, "totalTokens": 44, "cacheReadInputTokens": 10,
              "cacheWriteInputTokens": 0},
    "metrics": {"latencyMs": 300},
}

# https://docs.aws.amazon.com/bedrock/latest/userguide/tool-use-examples.html
CONVERSE_TOOL: dict[str, Any] = {
    "output": {"message": {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song", "input": {"sign": "WZPZ"}}}]}},
    "stopReason": "tool_use",
    "usage": {"inputTokens": 375, "outputTokens": 36, "totalTokens": 411},
    "metrics": {"latencyMs": 2196},
}


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event stream message: prelude (total length, headers length, CRC32), headers (string
    values), payload, and the CRC32 of everything before it."""
    header_bytes = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 16 + len(header_bytes) + len(payload), len(header_bytes))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + header_bytes + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    return encode_frame({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                        json.dumps(payload).encode())


def exception_frame(kind: str, message: str) -> bytes:
    return encode_frame({":exception-type": kind, ":content-type": "application/json",
                         ":message-type": "exception"}, json.dumps({"message": message}).encode())


def stream_events(calls: list[tuple[str, str, list[str]]], text: str = "Hi there!") -> list[bytes]:
    """ConverseStream frames: a text block, then one toolUse block per (id, name, input pieces)."""
    frames = [event_frame("messageStart", {"role": "assistant"})]
    if text:
        for piece in (text[:2], text[2:]):
            frames.append(event_frame("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0}))
        frames.append(event_frame("contentBlockStop", {"contentBlockIndex": 0}))
    for n, (call_id, name, pieces) in enumerate(calls, start=1):
        frames.append(event_frame("contentBlockStart", {
            "start": {"toolUse": {"toolUseId": call_id, "name": name}}, "contentBlockIndex": n}))
        for piece in pieces:
            frames.append(event_frame("contentBlockDelta", {"delta": {"toolUse": {"input": piece}},
                                                            "contentBlockIndex": n}))
        frames.append(event_frame("contentBlockStop", {"contentBlockIndex": n}))
    frames.append(event_frame("messageStop", {"stopReason": "tool_use" if calls else "end_turn"}))
    frames.append(event_frame("metadata", {"usage": {"inputTokens": 30, "outputTokens": 4, "totalTokens": 34},
                                           "metrics": {"latencyMs": 300}}))
    return frames


_ERRORS = {
    "throttled": (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    "context": (400, "ValidationException", "Input is too long for requested model."),
    "fail-500": (500, "InternalServerException", "The server encountered an internal error."),
    "denied": (403, "AccessDeniedException", "You don't have access to the model with the specified model ID."),
}


class FakeBedrock(FakeServer):
    step: int = 13

    @property
    def base_url(self) -> str:
        return self.root

    async def answer(self, seen: Seen, send: Any) -> None:
        parts = seen.path.split("/")  # ['', 'model', '{modelId}', 'converse']
        model, action = parts[2], parts[-1]
        mode = model.split(":")[0]
        authorization = seen.headers.get("authorization", "")
        if not authorization.startswith(("AWS4-HMAC-SHA256 ", "Bearer ")):
            mode = "denied"
        if mode in _ERRORS:
            status, kind, message = _ERRORS[mode]
            await self.json(send, status, {"message": message},
                            [(b"x-amzn-errortype", f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/".encode())])
            return
        body = seen.body or {}
        if action == "invoke":
            await self._embed(model, body, send)
            return
        names = [t["toolSpec"]["name"] for t in (body.get("toolConfig") or {}).get("tools") or [] if "toolSpec" in t]
        calls = [(f"tooluse_{i}", n, ['{"location":', ' "Paris"}']) for i, n in enumerate(names[:2])]
        if action == "converse-stream":
            frames = stream_events(calls)
            if mode == "stream-error":
                frames = [*frames[:3], exception_frame("throttlingException", "Too many tokens, please wait.")]
            await self.stream(send, b"".join(frames), b"application/vnd.amazon.eventstream")
            return
        if calls:
            content = [{"toolUse": {"toolUseId": i, "name": n, "input": {"location": "Paris"}}} for i, n, _ in calls]
            await self.json(send, 200, {**CONVERSE_TOOL, "output": {"message": {"role": "assistant",
                                                                               "content": content}}})
            return
        await self.json(send, 200, CONVERSE_TEXT)


    async def _embed(self, model: str, body: dict[str, Any], send: Any) -> None:
        """InvokeModel for embedding models: Titan Text Embeddings (one `inputText`; v2 takes
        `dimensions`) and Cohere Embed (`texts` with `input_type`), per their model-parameter pages."""
        if model.startswith("amazon.titan-embed"):
            if not isinstance(body.get("inputText"), str) or set(body) - {"inputText", "dimensions", "normalize",
                                                                          "embeddingTypes"}:
                await self.json(send, 400, {"message": "Malformed input request: extraneous key"},
                                [(b"x-amzn-errortype", b"ValidationException:http://internal.amazon.com/")])
                return
            vector = [round(0.01 * (i + 1), 2) for i in range(int(body.get("dimensions") or 4))]
            await self.json(send, 200, {"embedding": vector, "inputTextTokenCount": len(body["inputText"].split()),
                                        "embeddingsByType": {"float": vector}})
            return
        texts = body.get("texts")
        if not isinstance(texts, list) or body.get("input_type") not in ("search_document", "search_query",
                                                                         "classification", "clustering"):
            await self.json(send, 400, {"message": "Malformed input request: #: required key [input_type] not found"},
                            [(b"x-amzn-errortype", b"ValidationException:http://internal.amazon.com/")])
            return
        await self.json(send, 200, {"embeddings": [[0.5, -0.25, float(i)] for i in range(len(texts))],
                                    "id": "emb-1", "response_type": "embeddings_floats", "texts": texts})


def open_fake_bedrock():  # type: ignore[no-untyped-def]
    return open_fake(FakeBedrock())
