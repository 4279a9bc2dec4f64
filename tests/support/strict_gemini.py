"""A strict fake Gemini API (`/v1beta/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`): it refuses what Google's API refuses, as Google does.

Rules (https://ai.google.dev/api/generate-content, https://ai.google.dev/gemini-api/docs/thinking,
https://ai.google.dev/gemini-api/docs/function-calling), per model in `MODELS`:
  * an unknown field at the top or in `generationConfig` -> 400 `Invalid JSON payload received.
    Unknown name "x"` (so `top_k` where `topK` belongs);
  * `maxOutputTokens` outside 1..the model's output limit -> 400 INVALID_ARGUMENT;
  * `thinkingConfig` on a model that does not think -> 400;
  * content roles only `user` / `model`; a `functionResponse` turn must follow a `functionCall` turn
    and answer each of its calls.

It answers by the shared script (`tests.support.script`), with `functionCall` parts for tool calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.support.fake_base import FakeServer, Seen, sse
from tests.support.fake_gemini import error_body
from tests.support.script import Reply, reply_for

__all__ = ["StrictGemini"]

MODELS = {"gemini-2.5-flash": (65536, True), "gemini-exp-1114": (8192, False)}
"""Model -> (output limit, thinks)."""

TOP = frozenset({"contents", "tools", "toolConfig", "safetySettings", "systemInstruction", "generationConfig",
                 "cachedContent", "labels"})
GENERATION = frozenset({"stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
                        "responseModalities", "candidateCount", "maxOutputTokens", "temperature", "topP", "topK",
                        "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs",
                        "enableEnhancedCivicAnswers", "speechConfig", "thinkingConfig", "mediaResolution"})
PARTS = frozenset({"text", "inlineData", "fileData", "functionCall", "functionResponse", "thought",
                   "thoughtSignature", "executableCode", "codeExecutionResult", "videoMetadata"})


class Refusal(Exception):
    pass


def _unknown(name: str, where: str) -> Refusal:
    return Refusal(f'Invalid JSON payload received. Unknown name "{name}" at \'{where}\': Cannot find field.')


def check(model: str, body: dict[str, Any]) -> None:
    if model not in MODELS:
        raise Refusal(f"models/{model} is not found for API version v1beta, or is not supported for generateContent.")
    limit, thinks = MODELS[model]
    for key in body:
        if key not in TOP:
            raise _unknown(key, "")
    config = body.get("generationConfig") or {}
    for key in config:
        if key not in GENERATION:
            raise _unknown(key, "generation_config")
    tokens = config.get("maxOutputTokens")
    if tokens is not None and not 1 <= tokens <= limit:
        raise Refusal(f"Unable to submit request because it has a maxOutputTokens value of {tokens} but the "
                      f"supported range is from 1 (inclusive) to {limit + 1} (exclusive). Update the value and try "
                      "again.")
    if "thinkingConfig" in config and not thinks:
        raise Refusal("Thinking is not supported by this model.")
    calls = 0
    for i, content in enumerate(body.get("contents") or []):
        role = content.get("role")
        if role not in ("user", "model"):
            raise Refusal(f"Please use a valid role: user, model. (contents[{i}].role: {role})")
        parts = content.get("parts") or []
        if not parts:
            raise Refusal(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        for part in parts:
            for key in part:
                if key not in PARTS:
                    raise _unknown(key, f"contents[{i}].parts[0]")
        responses = sum(1 for p in parts if "functionResponse" in p)
        if responses and responses != calls:
            raise Refusal("Please ensure that the number of function response parts is equal to the number of "
                          "function call parts of the function call turn.")
        calls = sum(1 for p in parts if "functionCall" in p) if role == "model" else 0


def _turns(body: dict[str, Any]) -> list[tuple[str, str]]:
    turns: list[tuple[str, str]] = []
    for content in body.get("contents") or []:
        for part in content["parts"]:
            if "functionResponse" in part:
                turns.append(("tool", str(part["functionResponse"].get("response", {}).get("result", ""))))
            elif "text" in part:
                turns.append(("user" if content["role"] == "user" else "assistant", part["text"]))
            elif "functionCall" in part:
                turns.append(("assistant", ""))
    return turns


@dataclass
class StrictGemini(FakeServer):
    refused: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1beta"

    async def answer(self, seen: Seen, send: Any) -> None:
        model, _, method = seen.path.rsplit("/", 1)[-1].rpartition(":")
        if seen.headers.get("x-goog-api-key") != "AIza-upstream":
            await self.json(send, 400, error_body(400, "INVALID_ARGUMENT", "API key not valid.", []))
            return
        try:
            check(model, seen.body if isinstance(seen.body, dict) else {})
        except Refusal as r:
            self.refused.append(str(r))
            await self.json(send, 400, error_body(400, "INVALID_ARGUMENT", str(r), []))
            return
        offered = {d["name"] for t in seen.body.get("tools") or [] for d in t.get("functionDeclarations") or []}
        schema = (seen.body.get("generationConfig") or {}).get("responseJsonSchema")
        reply = reply_for(_turns(seen.body), offered, schema)
        answer = _answer(model, reply)
        if method == "streamGenerateContent":
            first = {**answer, "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "index": 0}]}
            first.pop("usageMetadata")
            await self.stream(send, sse([(None, first), (None, answer)], sep="\r\n\r\n"))
        else:
            await self.json(send, 200, answer)


def _answer(model: str, reply: Reply) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if reply.text:
        parts.append({"text": reply.text})
    if reply.call:
        parts.append({"functionCall": {"name": reply.call[0], "args": reply.call[1]}})
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 6, "totalTokenCount": 46},
            "modelVersion": model, "responseId": "strict-1"}
