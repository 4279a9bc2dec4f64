"""A fake OpenAI (or Azure OpenAI) Files and Batch API on 127.0.0.1, speaking the documented wire
format and refusing what the real one refuses.

OpenAI (https://platform.openai.com/docs/api-reference/files, .../batch): `POST /files` takes
multipart `file` + `purpose` (one of PURPOSES; anything else is a 400 naming `purpose`); `GET
/files`, `GET /files/{id}`, `GET /files/{id}/content`, `DELETE /files/{id}` (an unknown id is a 404
"No such File object"); `POST /batches` needs an existing `input_file_id` of purpose `batch`, an
endpoint of ENDPOINTS and `completion_window: 24h`, and every input line must name a model this
account serves (`models`). A batch moves one step per retrieve: validating -> in_progress ->
completed, then it has an output file of one answered line per request, with usage.
Azure (https://learn.microsoft.com/azure/ai-services/openai/how-to/batch): the same under
`/openai/`, every call needs `?api-version=` and an `api-key` header, endpoints without `/v1`.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import trio

from tests.support.fake_base import FakeServer, Seen

__all__ = ["ENDPOINTS", "PURPOSES", "FakeFiles"]

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/moderations")


def _error(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


@dataclass
class FakeFiles(FakeServer):
    key: str = "sk-upstream"
    azure: bool = False
    models: tuple[str, ...] = ("gpt-4o-mini",)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    content: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    content_fetches: int = 0
    stall: bool = False
    """Answer nothing (a hung upstream)."""
    cut_after: int | None = None
    """Drop the connection after this many bytes of a file's content (once)."""

    @property
    def base_url(self) -> str:
        return self.root if self.azure else self.root + "/v1"

    async def answer(self, seen: Seen, send: Any) -> None:
        if self.stall:
            await trio.sleep_forever()
        path = seen.path
        prefix = "/openai/" if self.azure else "/v1/"
        if not path.startswith(prefix):
            await self.json(send, 404, _error(f"Invalid URL ({seen.method} {path})"))
            return
        if self.azure:
            if "api-version=" not in seen.query:
                await self.json(send, 404, {"error": {"code": "404", "message": "Resource not found"}})
                return
            if seen.headers.get("api-key") != self.key:
                await self.json(send, 401, {"error": {"code": "401", "message": "Access denied due to invalid "
                                                      "subscription key or wrong API endpoint."}})
                return
        elif seen.headers.get("authorization") != f"Bearer {self.key}":
            await self.json(send, 401, _error("Incorrect API key provided.", code="invalid_api_key"))
            return
        parts = path[len(prefix):].strip("/").split("/")
        status, obj, raw = self.route(seen, parts)
        if raw is not None:
            self.content_fetches += 1
            if self.cut_after is not None:
                cut, self.cut_after = self.cut_after, None
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/octet-stream")]})
                await send({"type": "http.response.body", "body": raw[:cut], "more_body": True})
                raise ConnectionAbortedError("the fake drops the connection mid-content")
            await self.stream(send, raw, b"application/octet-stream")
        else:
            await self.json(send, status, obj)

    def route(self, seen: Seen, parts: list[str]) -> tuple[int, Any, bytes | None]:
        m = seen.method
        if parts == ["files"] and m == "POST":
            return (*self.upload(seen), None)
        if parts == ["files"] and m == "GET":
            return 200, {"object": "list", "data": list(self.files.values()), "has_more": False}, None
        if parts[0] == "files" and len(parts) >= 2:
            file = self.files.get(parts[1])
            if file is None:
                return 404, _error(f"No such File object: {parts[1]}", "id"), None
            if len(parts) == 3 and parts[2] == "content" and m == "GET":
                return 200, None, self.content[parts[1]]
            if len(parts) == 2 and m == "GET":
                return 200, file, None
            if len(parts) == 2 and m == "DELETE":
                del self.files[parts[1]]
                return 200, {"id": parts[1], "object": "file", "deleted": True}, None
        if parts == ["batches"] and m == "POST":
            return (*self.create_batch(seen.body), None)
        if parts == ["batches"] and m == "GET":
            return 200, {"object": "list", "data": list(self.batches.values()), "has_more": False}, None
        if parts[0] == "batches" and len(parts) >= 2:
            batch = self.batches.get(parts[1])
            if batch is None:
                return 404, _error(f"No batch found with id '{parts[1]}'.", "batch_id"), None
            if len(parts) == 2 and m == "GET":
                self.advance(batch)
                return 200, batch, None
            if len(parts) == 3 and parts[2] == "cancel" and m == "POST":
                if batch["status"] in ("completed", "failed", "expired", "cancelled"):
                    return 409, _error(f"Cannot cancel a batch with status '{batch['status']}'."), None
                batch["status"] = "cancelling"
                return 200, batch, None
        return 404, _error(f"Invalid URL ({m} {seen.path})"), None

    def upload(self, seen: Seen) -> tuple[int, Any]:
        kind = seen.headers.get("content-type", "")
        if not kind.startswith("multipart/form-data"):
            return 415, _error("Invalid Content-Type header, expected multipart/form-data")
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {kind}\r\n\r\n".encode() + seen.raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
        if "purpose" not in fields:
            return 400, _error("Missing required parameter: 'purpose'.", "purpose")
        purpose = fields["purpose"][1].decode()
        if purpose not in PURPOSES:
            return 400, _error(f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'", "purpose")
        if "file" not in fields or fields["file"][0] is None:
            return 400, _error("Missing required parameter: 'file'.", "file")
        filename, data = fields["file"]
        file_id = "file-" + secrets.token_hex(12)
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                               "filename": filename, "purpose": purpose, "status": "processed", "expires_at": None,
                               "status_details": None}
        self.content[file_id] = data
        return 200, self.files[file_id]

    def create_batch(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 400, _error("We could not parse the JSON body of your request.")
        file = self.files.get(str(body.get("input_file_id")))
        if file is None:
            return 404, _error(f"No such File object: {body.get('input_file_id')}", "input_file_id")
        if file["purpose"] != "batch":
            return 400, _error("The input file must have purpose 'batch'.", "input_file_id")
        endpoints = tuple(e[3:] for e in ENDPOINTS) if self.azure else ENDPOINTS
        if body.get("endpoint") not in endpoints:
            return 400, _error(f"Invalid value for 'endpoint': expected one of {list(endpoints)}.", "endpoint")
        if body.get("completion_window") != "24h":
            return 400, _error("Invalid value for 'completion_window': only '24h' is supported.", "completion_window")
        for line in self.content[file["id"]].splitlines():
            request = json.loads(line)
            if request["body"].get("model") not in self.models or request["url"] != body["endpoint"]:
                return 400, _error(f"The model '{request['body'].get('model')}' does not exist or the url does not "
                                   "match the batch's endpoint.", "input_file_id", "invalid_batch_line")
        batch_id = "batch_" + secrets.token_hex(12)
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": file["id"], "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
            "in_progress_at": None, "expires_at": None, "completed_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }
        return 200, self.batches[batch_id]

    def advance(self, batch: dict[str, Any]) -> None:
        """One step of the batch's life per retrieve."""
        if batch["status"] == "validating":
            batch["status"], batch["in_progress_at"] = "in_progress", int(time.time())
        elif batch["status"] == "cancelling":
            batch["status"], batch["cancelled_at"] = "cancelled", int(time.time())
        elif batch["status"] == "in_progress":
            lines = [json.loads(x) for x in self.content[batch["input_file_id"]].splitlines()]
            out = []
            for i, line in enumerate(lines):
                usage = {"prompt_tokens": 10 + i, "completion_tokens": 5, "total_tokens": 15 + i}
                body = {"id": f"chatcmpl-{i}", "object": "chat.completion", "model": line["body"]["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer {i}"},
                                     "finish_reason": "stop"}], "usage": usage}
                out.append(json.dumps({"id": f"batch_req_{i}", "custom_id": line["custom_id"],
                                       "response": {"status_code": 200, "request_id": f"req_{i}", "body": body},
                                       "error": None}))
            output_id = "file-" + secrets.token_hex(12)
            data = ("\n".join(out) + "\n").encode()
            self.files[output_id] = {"id": output_id, "object": "file", "bytes": len(data),
                                     "created_at": int(time.time()), "filename": "batch_output.jsonl",
                                     "purpose": "batch_output", "status": "processed", "expires_at": None,
                                     "status_details": None}
            self.content[output_id] = data
            batch.update(status="completed", output_file_id=output_id, completed_at=int(time.time()),
                         request_counts={"total": len(lines), "completed": len(lines), "failed": 0})
