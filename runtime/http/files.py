"""`/v1/files` and `/v1/batches` (OpenAI's Files and Batch APIs) relayed to the OpenAI or Azure
deployment that holds them, under the caller's key: every file and batch is remembered in the store
with its owner, so another key's id is a 404 and a list shows only the caller's own. Ids are the
upstream's (a batch names its output file by the upstream's id); the store decides who may use one.

An upload goes to the model group its `model` form field names, else `files.model`; a batch runs
where its input file is. A batch's results are metered once, when its output file's content is
fetched: the usage of every answered line, at the deployment's price times `files.batch_discount`.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import parse_qsl

import orjson
import trio

from sidegate.runtime.asgi import Receive, Scope, Send, read_body, respond
from sidegate.runtime.errors import (
    BadRequest,
    GatewayError,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UpstreamTimeout,
)
from sidegate.runtime.governance.gate import Admission, cost_of
from sidegate.runtime.governance.keys import Grant
from sidegate.runtime.http.access import Access
from sidegate.runtime.http.multipart_form import read_form
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.plan import Family
from sidegate.runtime.routing.call import json_object
from sidegate.runtime.routing.state import Deployment, Runtime
from sidegate.runtime.store import files as records
from sidegate.runtime.store.database import Store
from sidegate.runtime.store.models import StoredBatch, StoredFile
from sidegate.runtime.store.spend import SpendRow
from sidegate.runtime.upstream.files_wire import OutputMeter, api_url, batch_endpoint, point_batch_lines
from sidegate.runtime.upstream.multipart import Upload, encode
from sidegate.runtime.upstream.openai_wire import Usage
from sidegate.runtime.upstream.transport import UpstreamRequest

__all__ = ["FilesApi"]

_JSON = b"application/json"
_FAMILIES = frozenset({Family.OPENAI, Family.AZURE})
_THREAD_AT = 1 << 20


def _owner(grant: Grant | None) -> records.Owner:
    return records.Owner(grant.hash if grant is not None else "", grant.team if grant is not None else None)


def _holder(rt: Runtime, name: str) -> Deployment:
    """The deployment that holds uploads for model group (or alias) `name`: its first OpenAI or Azure one."""
    route = rt.routes.resolve(name)
    if route is None:
        raise ModelNotFound(f"model '{name}' is not served by this gateway", param="model")
    for dep in rt.deployments.get(route.group.name, ()):
        if dep.provider.family in _FAMILIES and dep.target.model != "*":
            return dep
    raise BadRequest(f"model group '{route.group.name}' has no OpenAI or Azure deployment to hold files",
                     param="model", code="files_not_supported")


def _deployment(rt: Runtime, group: str, target: str) -> Deployment:
    for dep in rt.deployments.get(group, ()):
        if dep.target.id == target:
            return dep
    raise Unavailable(f"the deployment that holds this object ({group}: {target}) is no longer in the plan",
                      code="deployment_gone")


def _headers(dep: Deployment, content_type: str | None = "application/json") -> tuple[tuple[str, str], ...]:
    kept = [(k, v) for k, v in dep.headers if k.lower() != "content-type"]
    if content_type is not None:
        kept.append(("content-type", content_type))
    kept.append(("accept-encoding", "identity"))  # a batch output is metered as its bytes go by
    return tuple(kept)


def _query(scope: Scope) -> dict[str, str]:
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def _limit(query: dict[str, str], default: int, most: int) -> int:
    try:
        limit = int(query.get("limit", str(default)))
    except ValueError:
        raise BadRequest("'limit' must be an integer", param="limit") from None
    if not 1 <= limit <= most:
        raise BadRequest(f"'limit' must be between 1 and {most}", param="limit")
    return limit


def _file_missing(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id[:200]}", param="file_id", code="file_not_found")


def _batch_missing(batch_id: str) -> NotFound:
    return NotFound(f"No batch found with id '{batch_id[:200]}'.", param="batch_id", code="batch_not_found")


class FilesApi:
    """The Files and Batch routes; owned by the app (the store and the spend writer come from it)."""

    def __init__(self, access: Access, logger: Logger) -> None:
        self.access = access
        self.logger = logger

    async def handle(self, rt: Runtime, store: Store | None, method: str, path: str, scope: Scope,
                     receive: Receive, send: Send, rid: str) -> None:
        """Answer `method path` (`path` without `/v1`); errors are raised for the app's envelope.
        Each call is one `files_request` log line (the route's shape, never an id: ids are per key)."""
        t0, status = time.perf_counter(), 500
        try:
            await self._handle(rt, store, method, path, scope, receive, send, rid)
            status = 200
        except GatewayError as err:
            status = err.status
            raise
        finally:
            route = "/".join(p if i == 0 or p in ("content", "cancel") else "{id}"
                             for i, p in enumerate(path.strip("/").split("/")[:3]))
            self.logger.info("files_request", request_id=rid, method=method, route=f"/v1/{route}", status=status,
                             latency_ms=round((time.perf_counter() - t0) * 1000, 2))

    async def _handle(self, rt: Runtime, store: Store | None, method: str, path: str, scope: Scope,
                      receive: Receive, send: Send, rid: str) -> None:
        grant = await self.access.authenticate(scope)
        if store is None:
            raise Unavailable("files and batches need the store, which is not open yet", retry_after=1.0)
        parts = path.strip("/").split("/")
        answer: dict[str, Any]
        if parts[0] == "files":
            if len(parts) == 3 and parts[2] == "content" and method == "GET":
                await self._content(rt, store, grant, parts[1], send, rid)
                return
            if len(parts) == 1 and method == "POST":
                answer = await self._upload(rt, store, grant, scope, receive)
            elif len(parts) == 1 and method == "GET":
                query = _query(scope)
                order = query.get("order", "desc")
                if order not in ("asc", "desc"):
                    raise BadRequest("'order' must be asc or desc", param="order")
                answer = await records.page(store, StoredFile, _owner(grant).key, limit=_limit(query, 10_000, 10_000),
                                            after=query.get("after"), order=order, purpose=query.get("purpose"))
            elif len(parts) == 2 and method in ("GET", "DELETE"):
                answer = await self._file(rt, store, grant, parts[1], method)
            else:
                raise NotFound(f"no route for {method} /v1{path}")
        elif parts[0] == "batches":
            if len(parts) == 1 and method == "POST":
                raw = await read_body(scope, receive, rt.plan.server.max_body, rt.plan.server.body_timeout)
                answer = await self._create_batch(rt, store, grant, raw)
            elif len(parts) == 1 and method == "GET":
                query = _query(scope)
                answer = await records.page(store, StoredBatch, _owner(grant).key, limit=_limit(query, 20, 100),
                                            after=query.get("after"))
            elif (len(parts) == 2 and method == "GET") or (len(parts) == 3 and parts[2] == "cancel"
                                                           and method == "POST"):
                answer = await self._batch(rt, store, grant, parts[1], cancel=len(parts) == 3)
            else:
                raise NotFound(f"no route for {method} /v1{path}")
        else:
            raise NotFound(f"no route for {method} /v1{path}")
        await respond(send, 200, orjson.dumps(answer), [(b"x-request-id", rid.encode())], _JSON)

    def _admit(self, grant: Grant | None, group: str) -> Admission:
        """The key's permission for `group` and its rate limits and budgets (released by `_release`)."""
        gate = self.access.gate
        return gate.admit(grant, group, gate.wall())

    def _release(self, admission: Admission, cost: float = 0.0) -> None:
        """Release the call's counters; `cost` (a metered batch) counts against the owner's budgets."""
        gate = self.access.gate
        gate.settle(admission, gate.wall(), None, cost)

    async def _call(self, dep: Deployment, method: str, url: str, body: bytes = b"",
                    content_type: str | None = "application/json") -> dict[str, Any]:
        """One whole exchange with the upstream; its error mapped into the envelope."""
        request = UpstreamRequest(method, url, _headers(dep, content_type if body else None), body,
                                  dep.provider.connect_timeout, max_answer=dep.max_answer)
        if dep.authorizer is not None:
            request = await dep.authorizer.authorize(request)
        with trio.move_on_after(dep.group.timeout) as deadline:
            answer = await dep.transport.send(request)
        if deadline.cancelled_caught:
            raise UpstreamTimeout(f"the upstream did not answer within {dep.group.timeout:g}s (the group's timeout)")
        if answer.status >= 400:
            raise dep.scrubber.error(dep.adapter.error(answer.status, answer.headers, answer.body))
        try:
            obj = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise Unavailable(f"the upstream answered HTTP {answer.status} without the object it should have",
                              code="upstream_invalid_answer")
        return obj

    async def _upload(self, rt: Runtime, store: Store, grant: Grant | None, scope: Scope,
                      receive: Receive) -> dict[str, Any]:
        server = rt.plan.server
        try:
            form = await read_form(scope, receive, server.max_file_size, server.body_timeout)
        except PayloadTooLarge:
            raise PayloadTooLarge(f"the upload is larger than {server.max_file_size:,} bytes (server.max_file_size)",
                                  code="file_too_large") from None
        purpose = form.value("purpose")
        if not purpose:
            raise BadRequest("Missing required parameter: 'purpose'.", param="purpose",
                             code="missing_required_parameter")
        upload = form.get("file")
        if upload is None or upload.filename is None:
            raise BadRequest("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        name = form.value("model") or rt.plan.files.model
        if name is None:
            raise BadRequest("name the model group that holds this file: the form field 'model' (or the spec's "
                             "files.model)", param="model")
        dep = _holder(rt, name)
        data = upload.data
        if purpose == "batch":
            group = dep.group
            args = (data, (group.name, *group.aliases), dep.target.model)
            azure = dep.provider.family is Family.AZURE
            if len(data) >= _THREAD_AT:
                data = await trio.to_thread.run_sync(lambda: point_batch_lines(*args, azure=azure))
            else:
                data = point_batch_lines(*args, azure=azure)
        fields = [(p.name, p.text()) for p in form.parts if p.filename is None and p.name not in ("file", "model")]
        body, content_type = encode(fields, [Upload("file", upload.filename, data,
                                                    upload.content_type or "application/octet-stream")])
        admission = self._admit(grant, dep.group.name)
        try:
            obj = await self._call(dep, "POST", api_url(dep.provider, "files"), body, content_type.decode("latin-1"))
        finally:
            self._release(admission)
        await records.save_file(store, _owner(grant), obj, group=dep.group.name, deployment=dep.target.id)
        return obj

    async def _file(self, rt: Runtime, store: Store, grant: Grant | None, file_id: str,
                    method: str) -> dict[str, Any]:
        owner = _owner(grant).key
        row = await records.get_file(store, owner, file_id)
        if row is None:
            raise _file_missing(file_id)
        dep = _deployment(rt, row.group, row.deployment)
        admission = self._admit(grant, row.group)
        try:
            obj = await self._call(dep, method, api_url(dep.provider, "files", file_id))
        finally:
            self._release(admission)
        if method == "DELETE":
            await records.delete_file(store, owner, file_id)
        else:
            await records.update_file(store, owner, obj)
        return obj

    async def _content(self, rt: Runtime, store: Store, grant: Grant | None, file_id: str, send: Send,
                       rid: str) -> None:
        """Stream a file's content through; a batch output's is metered once it has all gone by."""
        row = await records.get_file(store, _owner(grant).key, file_id)
        if row is None:
            raise _file_missing(file_id)
        dep = _deployment(rt, row.group, row.deployment)
        batch = None
        if row.batch_id is not None:
            batch = await records.get_batch(store, _owner(grant).key, row.batch_id)
        output = batch is not None and orjson.loads(batch.object).get("output_file_id") == file_id
        meter = OutputMeter() if output and batch is not None and batch.metered_at is None else None
        request = UpstreamRequest("GET", api_url(dep.provider, "files", file_id, "content"), _headers(dep, None), b"",
                                  dep.provider.connect_timeout, max_answer=dep.max_answer)
        if dep.authorizer is not None:
            request = await dep.authorizer.authorize(request)
        admission = self._admit(grant, row.group)
        cost, started = 0.0, False
        wait = dep.group.timeout  # for the first byte, and between two pieces of the content
        try:
            try:
                async with AsyncExitStack() as stack:
                    with trio.move_on_after(wait) as opening:
                        upstream = await stack.enter_async_context(dep.transport.stream(request))
                    if opening.cancelled_caught:
                        raise UpstreamTimeout(f"the upstream did not answer within {wait:g}s (the group's timeout)")
                    if upstream.status >= 400:
                        failed = dep.adapter.error(upstream.status, upstream.headers, await upstream.read())
                        raise dep.scrubber.error(failed)
                    kind = upstream.headers.get("content-type", "")
                    if not kind or len(kind) > 200 or not kind.isascii() or not kind.isprintable():
                        kind = "application/octet-stream"  # upstream data: relayed only when it is a plain value
                    started = True
                    await send({"type": "http.response.start", "status": 200, "headers": [
                        (b"content-type", kind.encode("latin-1")), (b"x-request-id", rid.encode())]})
                    pieces = upstream.iter_bytes().__aiter__()
                    while True:
                        with trio.fail_after(wait):
                            chunk = await anext(pieces, None)
                        if chunk is None:
                            break
                        if meter is not None:
                            meter.feed(chunk)
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except Exception as exc:
                if not started:
                    raise
                # the content is cut: the client sees a broken response (never a short file); nothing is metered
                self.logger.warning("file_content_cut", request_id=rid, file_id=file_id, error=repr(exc)[:300])
                return
            if meter is not None and batch is not None:  # metered before the last byte: a client that has
                meter.finish()  # its results whole has had them counted
                try:
                    cost = await self._meter(store, grant, dep, batch, meter, rid, rt.plan.files.batch_discount)
                except Exception as exc:  # the results are good; only their metering failed (said loudly)
                    self.logger.error("batch_metering_failed", request_id=rid, batch_id=batch.id, error=repr(exc)[:300])
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._release(admission, cost)

    async def _meter(self, store: Store, grant: Grant | None, dep: Deployment, batch: StoredBatch,
                     meter: OutputMeter, rid: str, discount: float) -> float:
        """Write the batch's spend row once (whoever claims the mark first); returns its cost here."""
        if not await records.claim_metering(store, batch.id):
            return 0.0
        usage = Usage(prompt=meter.prompt, completion=meter.completion, cached=meter.cached)
        cost = cost_of(usage, dep.target.price) * discount
        self.logger.info("batch_metered", request_id=rid, batch_id=batch.id, group=dep.group.name,
                         deployment=dep.target.id, requests=meter.requests, prompt_tokens=usage.prompt,
                         completion_tokens=usage.completion, cost=round(cost, 8),
                         **({"unpriced": True} if dep.target.price is None else {}))
        if self.access.spend is not None:
            self.access.spend.record_nowait(SpendRow(
                request_id=batch.id, key_hash=grant.hash if grant else None, team=grant.team if grant else None,
                user=grant.user if grant else None, model=dep.group.name, deployment=dep.target.id,
                prompt_tokens=usage.prompt, completion_tokens=usage.completion, cached_tokens=usage.cached,
                reasoning_tokens=0, cost=cost, estimated=False, latency_ms=0.0, status=200, created_at=time.time()))
        await records.set_batch_cost(store, batch.id, cost)  # after the row is queued (and so journaled if need be)
        return cost

    async def _create_batch(self, rt: Runtime, store: Store, grant: Grant | None, raw: bytes) -> dict[str, Any]:
        body = json_object(raw)
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise BadRequest("Missing required parameter: 'input_file_id'.", param="input_file_id",
                             code="missing_required_parameter")
        endpoint = body.get("endpoint")
        if not isinstance(endpoint, str):
            raise BadRequest("Missing required parameter: 'endpoint'.", param="endpoint",
                             code="missing_required_parameter")
        owner = _owner(grant)
        row = await records.get_file(store, owner.key, file_id)
        if row is None:
            raise _file_missing(file_id)
        dep = _deployment(rt, row.group, row.deployment)
        body["endpoint"] = batch_endpoint(endpoint, dep.provider.family is Family.AZURE)
        admission = self._admit(grant, row.group)
        try:
            obj = await self._call(dep, "POST", api_url(dep.provider, "batches"), orjson.dumps(body))
        finally:
            self._release(admission)
        await records.save_batch(store, owner, obj, group=row.group, deployment=row.deployment)
        return obj

    async def _batch(self, rt: Runtime, store: Store, grant: Grant | None, batch_id: str, *,
                     cancel: bool) -> dict[str, Any]:
        owner = _owner(grant)
        row = await records.get_batch(store, owner.key, batch_id)
        if row is None:
            raise _batch_missing(batch_id)
        dep = _deployment(rt, row.group, row.deployment)
        admission = self._admit(grant, row.group)
        try:
            if cancel:
                obj = await self._call(dep, "POST", api_url(dep.provider, "batches", batch_id, "cancel"))
            else:
                obj = await self._call(dep, "GET", api_url(dep.provider, "batches", batch_id))
        finally:
            self._release(admission)
        known = orjson.loads(row.object)
        for key in ("output_file_id", "error_file_id"):
            made = obj.get(key)
            if isinstance(made, str) and made and made != known.get(key) and \
                    await records.get_file(store, owner.key, made) is None:
                # the batch's results are the owner's files, described as the upstream has them
                try:
                    described = await self._call(dep, "GET", api_url(dep.provider, "files", made))
                except Exception as exc:
                    self.logger.warning("batch_file_undescribed", batch_id=batch_id, file_id=made,
                                        error=repr(exc)[:300])
                    described = {"id": made, "object": "file", "purpose": "batch_output", "status": "processed"}
                described["id"] = made
                await records.save_file(store, owner, described, group=row.group, deployment=row.deployment,
                                        batch_id=batch_id)
        await records.update_batch(store, owner.key, obj)  # after its files: a crash between leaves them findable
        return obj

