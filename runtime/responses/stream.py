"""A chat-completions stream as a Responses API stream: OpenAI chunk SSE bytes in, the Responses
event sequence out (https://platform.openai.com/docs/api-reference/responses-streaming).

`response.created` and `response.in_progress` open it; reasoning text becomes a `reasoning` item
with `response.reasoning_summary_text.delta` events, text a `message` item with
`response.output_text.delta` events, each tool call a `function_call` item with
`response.function_call_arguments.delta` events; each item closes with its `.done` events and
`response.output_item.done`, and `response.completed` (or `response.incomplete` when the answer
hit its token limit) carries the whole response. Every event has a `sequence_number`.
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.runtime.errors import GatewayError
from sidegate.runtime.responses.items import new_id
from sidegate.runtime.responses.output import response_usage, status_of
from sidegate.runtime.upstream.openai_wire import Usage, usage_from
from sidegate.runtime.upstream.providers.common import SseParser

__all__ = ["ChatToResponsesStream", "sse_event"]


def sse_event(payload: dict[str, Any]) -> bytes:
    """One Responses SSE event (its `event:` line is its type)."""
    kind: str = payload["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class ChatToResponsesStream:
    """OpenAI chat chunk bytes -> Responses events; `final` is the whole response once done."""

    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self.usage: Usage | None = None
        self.done = False
        self.final: dict[str, Any] | None = None
        self._parser = SseParser()
        self._seq = 0
        self._started = False
        self._items: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        """The reasoning or message item being written (tool calls stay open until the end)."""
        self._tools: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None

    @property
    def started(self) -> bool:
        """Whether events went out (an error must then end the stream in-band)."""
        return self._started

    def _emit(self, out: list[bytes], kind: str, **fields: Any) -> None:
        out.append(sse_event({"type": kind, "sequence_number": self._seq, **fields}))
        self._seq += 1

    def feed(self, data: bytes) -> bytes:
        """Responses events for these chat chunk bytes."""
        out: list[bytes] = []
        for obj in self._parser.chunks(data):
            if self.done:
                continue
            if not self._started:
                self._started = True
                self._emit(out, "response.created", response=self.base)
                self._emit(out, "response.in_progress", response=self.base)
            if obj is None:
                self._end(out)
            else:
                self._chunk(obj, out)
        return b"".join(out)

    def _chunk(self, obj: dict[str, Any], out: list[bytes]) -> None:
        usage = usage_from(obj)
        if usage is not None:
            self.usage = usage
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                self._text(out, "reasoning", str(delta["reasoning_content"]))
            if delta.get("content"):
                self._text(out, "message", str(delta["content"]))
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    self._tool(out, call)
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])

    def _add(self, out: list[bytes], item: dict[str, Any]) -> int:
        self._items.append(item)
        index = len(self._items) - 1
        self._emit(out, "response.output_item.added", output_index=index, item={**item})
        return index

    def _text(self, out: list[bytes], kind: str, text: str) -> None:
        item = self._open
        if item is None or item["type"] != kind:
            self._close_open(out)
            if kind == "message":
                item = {"type": "message", "id": new_id("msg"), "status": "in_progress", "role": "assistant",
                        "content": []}
            else:
                item = {"type": "reasoning", "id": new_id("rs"), "summary": []}
            item["_text"] = []
            index = self._add(out, {k: v for k, v in item.items() if k != "_text"})
            item["_index"] = index
            self._items[index] = item
            self._open = item
            if kind == "message":
                self._emit(out, "response.content_part.added", item_id=item["id"], output_index=index,
                           content_index=0, part={"type": "output_text", "text": "", "annotations": []})
            else:
                self._emit(out, "response.reasoning_summary_part.added", item_id=item["id"], output_index=index,
                           summary_index=0, part={"type": "summary_text", "text": ""})
        item["_text"].append(text)
        if kind == "message":
            self._emit(out, "response.output_text.delta", item_id=item["id"], output_index=item["_index"],
                       content_index=0, delta=text, logprobs=[])
        else:
            self._emit(out, "response.reasoning_summary_text.delta", item_id=item["id"], output_index=item["_index"],
                       summary_index=0, delta=text)

    def _close_open(self, out: list[bytes]) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        index, text = item.pop("_index"), "".join(item.pop("_text"))
        if item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            self._emit(out, "response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                       text=text, logprobs=[])
            self._emit(out, "response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                       part=part)
            item.update(status="completed", content=[part])
        else:
            part = {"type": "summary_text", "text": text}
            self._emit(out, "response.reasoning_summary_text.done", item_id=item["id"], output_index=index,
                       summary_index=0, text=text)
            self._emit(out, "response.reasoning_summary_part.done", item_id=item["id"], output_index=index,
                       summary_index=0, part=part)
            item["summary"] = [part]
        self._emit(out, "response.output_item.done", output_index=index, item=item)

    def _tool(self, out: list[bytes], call: dict[str, Any]) -> None:
        position = call.get("index", 0)
        fn = call.get("function") or {}
        item = self._tools.get(position)
        if item is None:
            self._close_open(out)
            item = {"type": "function_call", "id": new_id("fc"), "call_id": str(call.get("id") or new_id("call")),
                    "name": str(fn.get("name") or ""), "arguments": "", "status": "in_progress"}
            item["_index"] = self._add(out, dict(item))
            self._items[item["_index"]] = item
            self._tools[position] = item
        fragment = fn.get("arguments")
        if isinstance(fragment, str) and fragment:
            item["arguments"] += fragment
            self._emit(out, "response.function_call_arguments.delta", item_id=item["id"],
                       output_index=item["_index"], delta=fragment)

    def _end(self, out: list[bytes]) -> None:
        self._close_open(out)
        for item in self._tools.values():
            index = item.pop("_index")
            item["status"] = "completed"
            self._emit(out, "response.function_call_arguments.done", item_id=item["id"], output_index=index,
                       name=item["name"], arguments=item["arguments"])
            self._emit(out, "response.output_item.done", output_index=index, item=item)
        status, incomplete = status_of(self._finish)
        self.final = {**self.base, "status": status, "incomplete_details": incomplete, "output": self._items,
                      "usage": response_usage(self.usage)}
        self._emit(out, f"response.{status}", response=self.final)
        self.done = True

    def failed(self, err: GatewayError) -> bytes:
        """The `response.failed` event that ends this stream with an error."""
        out: list[bytes] = []
        if not self._started:
            self._started = True
            self._emit(out, "response.created", response=self.base)
        failed = {**self.base, "status": "failed", "output": [i for i in self._items if "_index" not in i],
                  "error": {"code": err.code or "server_error", "message": err.message}}
        self._emit(out, "response.failed", response=failed)
        return b"".join(out)
