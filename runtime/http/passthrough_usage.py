"""Usage read from a passed-through answer as it is relayed: a whole JSON body (kept up to a bound)
or a server-sent event stream, in the provider's own shape: OpenAI's `usage` (`prompt_tokens`...),
Anthropic's `usage` (`input_tokens`..., `message_start` then `message_delta` on streams), the
Responses API's `response.completed`, and Gemini's `usageMetadata`."""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.runtime.upstream.openai_wire import Usage, usage_from
from sidegate.runtime.upstream.providers.anthropic import message_usage
from sidegate.runtime.upstream.providers.common import SseParser
from sidegate.runtime.upstream.usage_check import InvalidUsage, token_count

__all__ = ["MAX_KEPT", "UsageTap", "usage_in"]

MAX_KEPT = 8 << 20
"""Bytes of a whole JSON answer kept to read its usage (a larger answer is relayed, not metered)."""


def _gemini(meta: dict[str, Any]) -> Usage:
    thoughts = token_count(meta.get("thoughtsTokenCount"))
    return Usage(
        prompt=token_count(meta.get("promptTokenCount")) + token_count(meta.get("toolUsePromptTokenCount")),
        completion=token_count(meta.get("candidatesTokenCount")) + thoughts,
        cached=token_count(meta.get("cachedContentTokenCount")), reasoning=thoughts,
    )


def usage_in(obj: Any, previous: Usage | None = None) -> Usage | None:
    """The usage an answer object (or one stream event) reports, over what earlier events did; None
    when it reports none. Raises InvalidUsage for a count that is not one."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("usageMetadata"), dict):
        return _gemini(obj["usageMetadata"])
    kind = obj.get("type")
    if kind == "message_start" and isinstance(obj.get("message"), dict):
        obj = obj["message"]
    elif kind == "response.completed" and isinstance(obj.get("response"), dict):
        obj = obj["response"]
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage:
        return usage_from(obj)
    if "input_tokens" in usage or "output_tokens" in usage:
        return message_usage(usage, previous)
    return None


class UsageTap:
    """Watches the answer's bytes on their way to the client and keeps the last usage seen."""

    __slots__ = ("_kept", "_parser", "_size", "usage")

    def __init__(self, content_type: str) -> None:
        self.usage: Usage | None = None
        sse = content_type.startswith("text/event-stream")
        json = "json" in content_type
        self._parser = SseParser() if sse else None
        self._kept: list[bytes] | None = [] if json and not sse else None
        self._size = 0

    def feed(self, data: bytes) -> None:
        """Look at one piece of the answer (never raises: metering must not break the relay)."""
        if self._parser is not None:
            for event in self._parser.feed(data):
                if event.data and event.data[:1] in "{[":
                    self._take(event.data)
        elif self._kept is not None:
            self._size += len(data)
            if self._size > MAX_KEPT:
                self._kept = None
            else:
                self._kept.append(data)

    def finish(self) -> Usage | None:
        """The answer is whole: its usage, if it reported one."""
        if self._kept:
            self._take(b"".join(self._kept))
            self._kept = None
        return self.usage

    def _take(self, text: str | bytes) -> None:
        try:
            found = usage_in(orjson.loads(text), self.usage)
        except (orjson.JSONDecodeError, InvalidUsage):
            return
        if found is not None:
            self.usage = found
