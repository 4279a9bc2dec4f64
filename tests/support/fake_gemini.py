"""A fake Gemini API: Google AI Studio (`/v1beta/models/{model}:method`) and Vertex AI
(`/v1/projects/{p}/locations/{r}/publishers/google/models/{model}:method`) on one server.

Wire examples follow https://ai.google.dev/api/generate-content (GenerateContentResponse,
usageMetadata, `streamGenerateContent?alt=sse`), https://ai.google.dev/gemini-api/docs/function-calling
(functionCall parts), https://ai.google.dev/api/embeddings (batchEmbedContents),
https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/text-embeddings-api (predict) and
https://ai.google.dev/gemini-api/docs/troubleshooting (error envelope).

Behaviour by the model in the URL (`mode[:anything]`):
  ok (default)  text; with tools, one functionCall per tool (up to two: parallel calls)
  fail-500  HTTP 500 INTERNAL        rate-429  HTTP 429 RESOURCE_EXHAUSTED with RetryInfo 7s
  context   HTTP 400 input token count exceeds the maximum     blocked  prompt blocked for SAFETY
  bad-key   HTTP 400 API_KEY_INVALID  stream-error  a stream whose second chunk is an error object
Requests with neither `x-goog-api-key` nor `Authorization: Bearer` get 403 PERMISSION_DENIED.
"""

from __future__ import annotations

from typing import Any

from tests.support.fake_base import FakeServer, Seen, open_fake, sse

__all__ = ["GENERATE_TEXT", "GENERATE_TOOLS", "STREAM_TEXT", "FakeGemini", "open_fake_gemini"]

USAGE = {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 21, "cachedContentTokenCount": 4,
         "thoughtsTokenCount": 4}

# https://ai.google.dev/api/generate-content#v1beta.GenerateContentResponse
GENERATE_TEXT: dict[str, Any] = {
    "candidates": [{"content": {"parts": [{"text": "Hi there!"}], "role": "model"}, "finishReason": "STOP",
                    "index": 0}],
    "usageMetadata": USAGE,
    "modelVersion": "gemini-2.5-flash",
    "responseId": "mAitaLmkHPPlz7IPvtfUqQ4",
}

# https://ai.google.dev/gemini-api/docs/function-calling (parallel function calls; thought signature on the first).
GENERATE_TOOLS: dict[str, Any] = {
    "candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "power_disco_ball", "args": {"power": True}}, "thoughtSignature": "c2lnLTE="},
        {"functionCall": {"name": "start_music", "args": {"energetic": True, "loud": True}}},
    ]}, "finishReason": "STOP", "index": 0}],
    "usageMetadata": USAGE,
    "modelVersion": "gemini-2.5-flash",
}

# streamGenerateContent?alt=sse: each event a whole GenerateContentResponse, usage on the last.
STREAM_TEXT: list[dict[str, Any]] = [
    {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "index": 0}],
     "modelVersion": "gemini-2.5-flash", "responseId": "r1"},
    {"candidates": [{"content": {"parts": [{"text": " there!"}], "role": "model"}, "index": 0}],
     "modelVersion": "gemini-2.5-flash", "responseId": "r1"},
    {"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "STOP", "index": 0}],
     "usageMetadata": USAGE, "modelVersion": "gemini-2.5-flash", "responseId": "r1"},
]

_ERRORS: dict[str, tuple[int, str, str, list[dict[str, Any]]]] = {
    "fail-500": (500, "INTERNAL", "An internal error has occurred.", []),
    "rate-429": (429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.",
                 [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]),
    "context": (400, "INVALID_ARGUMENT",
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).", []),
    "bad-key": (400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                  "domain": "googleapis.com"}]),
    "denied": (403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.", []),
}


def error_body(status: int, kind: str, message: str, details: list[dict[str, Any]]) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": kind, "details": details}}


class FakeGemini(FakeServer):
    @property
    def base_url(self) -> str:
        return f"{self.root}/v1beta"

    def vertex_base_url(self, project: str = "proj", region: str = "us-central1") -> str:
        return f"{self.root}/v1/projects/{project}/locations/{region}/publishers/google"

    async def answer(self, seen: Seen, send: Any) -> None:
        model, _, method = seen.path.rsplit("/", 1)[-1].rpartition(":")
        mode = model.split(":")[0]
        body = seen.body or {}
        authorization = seen.headers.get("authorization", "")
        if "x-goog-api-key" not in seen.headers and not authorization.startswith("Bearer "):
            mode = "denied"
        if mode in _ERRORS:
            status, kind, message, details = _ERRORS[mode]
            await self.json(send, status, error_body(status, kind, message, details))
            return
        if method == "batchEmbedContents":
            await self.json(send, 200, {"embeddings": [{"values": [0.5, -0.25, 0.125]} for _ in body["requests"]]})
            return
        if method == "predict":
            await self.json(send, 200, {"predictions": [
                {"embeddings": {"values": [0.5, -0.25, 0.125], "statistics": {"token_count": 3, "truncated": False}}}
                for _ in body["instances"]]})
            return
        if mode == "blocked":
            await self.json(send, 200, {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": USAGE})
            return
        names = [d["name"] for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []][:2]
        parts = [{"functionCall": {"name": n, "args": {"location": "Paris"}}} for n in names]
        if method == "streamGenerateContent":
            chunks = STREAM_TEXT
            if parts:
                chunks = [{"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP",
                                           "index": 0}], "usageMetadata": USAGE, "modelVersion": model}]
            if mode == "stream-error":
                chunks = [STREAM_TEXT[0], error_body(500, "INTERNAL", "stream broke", [])]
            await self.stream(send, sse([(None, c) for c in chunks], sep="\r\n\r\n"))
            return
        if parts:
            answer = {**GENERATE_TOOLS, "candidates": [{"content": {"role": "model", "parts": parts},
                                                        "finishReason": "STOP", "index": 0}]}
        else:
            answer = GENERATE_TEXT
        await self.json(send, 200, {**answer, "modelVersion": model})


def open_fake_gemini():  # type: ignore[no-untyped-def]
    return open_fake(FakeGemini())
