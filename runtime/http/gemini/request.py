"""A Gemini `generateContent` request in OpenAI's chat shape (https://ai.google.dev/api/generate-content).

What a backend cannot be told (safety settings, labels) is dropped and named in
`x-sidegate-dropped`; what changes the answer and has no OpenAI equivalent (cached content, several
candidates, Google's built-in tools) is refused with 400, never silently ignored."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from sidegate.runtime.errors import BadRequest

__all__ = ["DROPPED", "gemini_to_openai"]

DROPPED = frozenset({"safetySettings", "labels"})
"""Top-level fields a translated request leaves out (they only steer Google's own filters/billing)."""
_KNOWN = frozenset({"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "model"})
_GENERATION = {
    "maxOutputTokens": "max_tokens", "temperature": "temperature", "topP": "top_p", "topK": "top_k",
    "seed": "seed", "presencePenalty": "presence_penalty", "frequencyPenalty": "frequency_penalty",
}
_MODES = {"AUTO": "auto", "NONE": "none", "ANY": "required"}


def _bad(message: str) -> BadRequest:
    return BadRequest(message, param="contents")


def _schema(value: Any) -> Any:
    """Gemini's OpenAPI-style `Schema` (upper-case types, `nullable`) as JSON Schema."""
    if isinstance(value, list):
        return [_schema(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "type" and isinstance(item, str):
            out[key] = item.lower()
        elif key in ("properties", "$defs", "definitions") and isinstance(item, dict):
            out[key] = {k: _schema(v) for k, v in item.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf", "not", "additionalProperties"):
            out[key] = _schema(item)
        elif key in ("nullable", "propertyOrdering"):
            continue
        else:
            out[key] = item
    if value.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _text(parts: Any, where: str) -> str:
    if isinstance(parts, str):
        return parts
    if isinstance(parts, dict):
        parts = parts.get("parts")
    if not isinstance(parts, list):
        raise _bad(f"{where}: expected {{parts: [...]}}")
    texts = []
    for p in parts:
        if not isinstance(p, dict) or not isinstance(p.get("text"), str):
            raise _bad(f"{where}: only text parts are supported")
        texts.append(p["text"])
    return "\n".join(texts)


def _media(part: dict[str, Any], i: int) -> dict[str, Any]:
    if "inlineData" in part:
        blob = part["inlineData"]
        mime, data = blob.get("mimeType"), blob.get("data")
        if not isinstance(mime, str) or not isinstance(data, str):
            raise _bad(f"contents[{i}]: inlineData needs mimeType and data")
        if not mime.startswith("image/"):
            raise _bad(f"contents[{i}]: inline {mime} data cannot be translated (images only)")
        return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}
    ref = part["fileData"]
    uri = ref.get("fileUri") if isinstance(ref, dict) else None
    if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
        raise _bad(f"contents[{i}]: fileData needs an http(s) fileUri (Google's file store is not reachable)")
    return {"type": "image_url", "image_url": {"url": uri}}


class _Turns:
    """Builds OpenAI messages from Gemini turns, pairing function responses with the calls' ids."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.pending: dict[str, list[str]] = {}

    def add(self, i: int, content: Any) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
            raise _bad(f"contents[{i}]: a Content object with parts is required")
        role = content.get("role", "user")
        if role not in ("user", "model", "function", "tool"):
            raise _bad(f"contents[{i}].role: must be 'user' or 'model'")
        texts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for part in content["parts"]:
            if not isinstance(part, dict):
                raise _bad(f"contents[{i}]: each part must be an object")
            if part.get("thought") is True:
                continue  # a model's thought summary: not replayed to another backend
            if isinstance(part.get("text"), str):
                texts.append({"type": "text", "text": part["text"]})
            elif "inlineData" in part or "fileData" in part:
                texts.append(_media(part, i))
            elif isinstance(part.get("functionCall"), dict):
                fc = part["functionCall"]
                name = fc.get("name")
                if not isinstance(name, str):
                    raise _bad(f"contents[{i}]: functionCall needs a name")
                call_id = str(fc.get("id") or f"call_{uuid.uuid4().hex[:24]}")
                self.pending.setdefault(name, []).append(call_id)
                args = orjson.dumps(fc.get("args") or {}).decode()
                calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": args}})
            elif isinstance(part.get("functionResponse"), dict):
                self._result(i, part["functionResponse"])
            else:
                keys = ", ".join(sorted(part)) or "empty"
                raise _bad(f"contents[{i}]: a part of kind {keys} cannot be translated")
        if role == "model":
            if texts or calls:
                message: dict[str, Any] = {"role": "assistant",
                                           "content": "".join(t.get("text", "") for t in texts) or None}
                if calls:
                    message["tool_calls"] = calls
                self.messages.append(message)
        elif texts:
            self.messages.append({"role": "user", "content": texts})

    def _result(self, i: int, fr: dict[str, Any]) -> None:
        name = fr.get("name")
        if not isinstance(name, str):
            raise _bad(f"contents[{i}]: functionResponse needs a name")
        waiting = self.pending.get(name) or []
        call_id = fr.get("id") or (waiting.pop(0) if waiting else None)
        if not isinstance(call_id, str):
            raise _bad(f"contents[{i}]: functionResponse '{name}' answers no earlier functionCall")
        if call_id in waiting:
            waiting.remove(call_id)
        self.messages.append({"role": "tool", "tool_call_id": call_id,
                              "content": orjson.dumps(fr.get("response", {})).decode()})


def _tools(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise BadRequest("tools: must be an array", param="tools")
    out = []
    for tool in raw:
        if not isinstance(tool, dict) or set(tool) - {"functionDeclarations"}:
            kinds = ", ".join(sorted(tool)) if isinstance(tool, dict) else "?"
            raise BadRequest(f"tools: only functionDeclarations can be translated (got {kinds})", param="tools")
        for fd in tool.get("functionDeclarations") or []:
            if not isinstance(fd, dict) or not isinstance(fd.get("name"), str):
                raise BadRequest("tools: each function declaration needs a name", param="tools")
            params = fd.get("parametersJsonSchema", fd.get("parameters"))
            function: dict[str, Any] = {"name": fd["name"],
                                        "parameters": _schema(params) if params else {"type": "object",
                                                                                      "properties": {}}}
            if fd.get("description"):
                function["description"] = fd["description"]
            out.append({"type": "function", "function": function})
    return out


def _tool_choice(raw: Any) -> Any:
    config = raw.get("functionCallingConfig") if isinstance(raw, dict) else None
    if not isinstance(config, dict):
        raise BadRequest("toolConfig: functionCallingConfig is required", param="toolConfig")
    mode = _MODES.get(str(config.get("mode", "AUTO")))
    if mode is None:
        raise BadRequest(f"toolConfig: mode {config.get('mode')!r} cannot be translated", param="toolConfig")
    names = config.get("allowedFunctionNames")
    if names and mode == "required":
        if not isinstance(names, list) or len(names) != 1:
            raise BadRequest("toolConfig: at most one allowedFunctionNames entry can be translated",
                             param="toolConfig")
        return {"type": "function", "function": {"name": names[0]}}
    return mode


def _generation(raw: Any, out: dict[str, Any]) -> None:
    if not isinstance(raw, dict):
        raise BadRequest("generationConfig: must be an object", param="generationConfig")
    for key, value in raw.items():
        if key in _GENERATION:
            out[_GENERATION[key]] = value
        elif key == "stopSequences":
            out["stop"] = value
        elif key == "candidateCount":
            if value != 1:
                raise BadRequest("generationConfig.candidateCount: only 1 can be translated", param=key)
        elif key == "responseMimeType":
            if value == "application/json":
                out.setdefault("response_format", {"type": "json_object"})
            elif value != "text/plain":
                raise BadRequest(f"generationConfig.responseMimeType: {value!r} cannot be translated", param=key)
        elif key in ("responseJsonSchema", "responseSchema"):
            schema = value if key == "responseJsonSchema" else _schema(value)
            out["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": "response", "schema": schema}}
        elif key == "thinkingConfig":
            budget = value.get("thinkingBudget") if isinstance(value, dict) else None
            if isinstance(budget, int) and budget > 0:
                out["reasoning_effort"] = "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"
        else:
            raise BadRequest(f"generationConfig.{key} cannot be translated to this gateway's backends", param=key)


def gemini_to_openai(body: dict[str, Any], model: str, stream: bool) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The OpenAI chat request for a Gemini request body, and the top-level fields dropped."""
    unknown = set(body) - _KNOWN - DROPPED
    if unknown:
        raise BadRequest(f"{sorted(unknown)[0]}: not supported through sidegate's Gemini ingress",
                         param=sorted(unknown)[0])
    contents = body.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise _bad("contents: at least one Content is required")
    turns = _Turns()
    if "systemInstruction" in body:
        turns.messages.append({"role": "system", "content": _text(body["systemInstruction"], "systemInstruction")})
    for i, content in enumerate(contents):
        turns.add(i, content)
    if not any(m["role"] != "system" for m in turns.messages):
        raise _bad("contents: no content to send")
    out: dict[str, Any] = {"model": model, "messages": turns.messages}
    if stream:
        out["stream"] = True
    if "tools" in body:
        tools = _tools(body["tools"])
        if tools:
            out["tools"] = tools
    if "toolConfig" in body and "tools" in out:
        out["tool_choice"] = _tool_choice(body["toolConfig"])
    if "generationConfig" in body:
        _generation(body["generationConfig"], out)
    return out, tuple(sorted(set(body) & DROPPED))
