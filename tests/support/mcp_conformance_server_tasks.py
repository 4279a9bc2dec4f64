"""The conformance upstream's tasks extension (SEP-2663, `io.modelcontextprotocol/tasks`) at 2026-07-28.

mcp 2.3.0 has the extension seam (`Extension`: contributed tools, extra methods, a `tools/call` interceptor)
but no tasks implementation, so this is one, in memory and only as deep as the conformance fixtures need:

- a client that declares the extension (in its `_meta` clientCapabilities) and calls a task-supporting tool
  gets a `CreateTaskResult` (`resultType: "task"`, flat `taskId`/`status`/`createdAt`/`lastUpdatedAt`/
  `ttlMs`/`pollIntervalMs`) and the tool runs in the background; without the extension the tool runs
  synchronously, or is refused with -32021 when its task support is "required";
- `tasks/get` reports the task, with the inlined `result` once completed, the JSON-RPC `error` once failed,
  and the pending `inputRequests` while it waits for input (a tool that answers an InputRequiredResult);
- `tasks/update` delivers `inputResponses` (answered keys leave `inputRequests`; the tool resumes once none
  is left), `tasks/cancel` cancels; both acknowledge with an empty result. An unknown taskId is -32602, and
  an `Mcp-Name` header that is not the taskId is -32020.

Earlier protocol versions never see tasks: the tools just run.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.abc import TaskGroup
from mcp.server import ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from mcp.server.extension import Extension, MethodBinding, ToolBinding
from mcp.server.mcpserver import Context, MCPServer, require_client_extension
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CallToolRequestParams,
    CallToolResult,
    ElicitResult,
    InputRequest,
    InputRequiredResult,
    InputResponse,
    InputResponseRequestParams,
    RequestParams,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from tests.support.mcp_conformance_server_mrtr import ANSWER_TYPES, ask, bridged, form, needs, response
from tests.support.mcp_conformance_server_mrtr import field as answer_field
from tests.support.mcp_conformance_server_tools import failure

TASKS = "io.modelcontextprotocol/tasks"
TTL_MS = 10 * 60 * 1000
POLL_MS = 200
TERMINAL = ("completed", "failed", "cancelled")


# --- the fixtures the tasks scenarios call ------------------------------------------------------------------

def greet(name: str) -> str:
    """Sync only: greets `name`."""
    return f"Hello, {name}!"


async def slow_compute(seconds: float = 1.0, label: str = "") -> str:
    """Task-supporting: sleeps `seconds`, then answers."""
    await anyio.sleep(seconds)
    return f"computed {label or 'result'} after {seconds:g}s"


async def failing_job() -> CallToolResult:
    """Task support required: reports a tool execution error after about a second."""
    await anyio.sleep(1.0)
    return failure("failing_job failed, as it always does")


async def protocol_error_job() -> str:
    """Task-supporting: fails with a JSON-RPC (protocol-level) error."""
    raise MCPError(INTERNAL_ERROR, "protocol_error_job failed at the protocol level, as it always does")


@bridged
async def confirm_delete(filename: str, ctx: Context) -> str | InputRequiredResult:
    """Task-supporting: asks for a confirmation, then deletes (pretends to) or keeps `filename`."""
    answer = response(ctx, "confirm")
    if not isinstance(answer, ElicitResult):
        return needs({"confirm": form(f"Delete {filename}?", {"confirm": {"type": "boolean"}}, ["confirm"])})
    return f"Deleted {filename}" if answer_field(answer, "confirm") else f"Kept {filename}"


@bridged
async def multi_input(ctx: Context) -> str | InputRequiredResult:
    """Task-supporting: asks two questions at once and completes when both are answered."""
    first, second = response(ctx, "first"), response(ctx, "second")
    if isinstance(first, ElicitResult) and isinstance(second, ElicitResult):
        return f"Got {answer_field(first, 'name')} and {answer_field(second, 'name')}"
    return needs({"first": ask("First name?", "name"), "second": ask("Second name?", "name")})


@bridged
async def test_tool_with_task(ctx: Context) -> str | InputRequiredResult:
    """Task support required: asks for user_name synchronously, then runs as a task that greets it."""
    name = answer_field(response(ctx, "user_name"), "name")
    if name is None:
        return needs({"user_name": ask("What is your name?", "name")})
    return f"Hello, {name}! (from a task)"


TASK_TOOLS = (greet, slow_compute, failing_job, protocol_error_job, confirm_delete, multi_input, test_tool_with_task)
SUPPORT = {"slow_compute": "optional", "failing_job": "required", "protocol_error_job": "optional",
           "confirm_delete": "optional", "multi_input": "optional", "test_tool_with_task": "required"}
INPUT_FIRST = {"test_tool_with_task"}  # gathers its input over plain MRTR rounds before the task starts


# --- the extension --------------------------------------------------------------------------------------------

def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Task:
    task_id: str
    status: str = "working"
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    pending: dict[str, InputRequest] = field(default_factory=dict)
    answers: dict[str, InputResponse] = field(default_factory=dict)
    answered: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def settle(self, status: str, **outcome: Any) -> None:
        if self.status not in TERMINAL:
            self.status, self.updated_at = status, now()
            self.result, self.error = outcome.get("result"), outcome.get("error")
            self.pending = {}

    def envelope(self) -> dict[str, Any]:
        return {"taskId": self.task_id, "status": self.status, "createdAt": self.created_at,
                "lastUpdatedAt": self.updated_at, "ttlMs": TTL_MS, "pollIntervalMs": POLL_MS}

    def detailed(self) -> dict[str, Any]:
        body = self.envelope()
        if self.result is not None:
            body["result"] = self.result
        if self.error is not None:
            body["error"] = self.error
        if self.pending:
            body["inputRequests"] = {key: request.model_dump(by_alias=True, mode="json", exclude_none=True)
                                     for key, request in self.pending.items()}
        return body


class TaskParams(RequestParams):
    task_id: str


class TaskUpdateParams(TaskParams):
    input_responses: dict[str, Any] | None = None


def dumped(result: CallToolResult) -> dict[str, Any]:
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


class TasksExtension(Extension):
    identifier = TASKS

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.server: MCPServer | None = None
        self.group: TaskGroup | None = None

    @asynccontextmanager
    async def lifespan(self, server: MCPServer) -> AsyncIterator[dict[str, Any]]:
        """The server's lifespan: a task group that outlives the request that started a task."""
        self.server = server
        async with anyio.create_task_group() as group:
            self.group = group
            try:
                yield {}
            finally:
                group.cancel_scope.cancel()

    def tools(self) -> Sequence[ToolBinding]:
        return [ToolBinding(fn, kwargs={"structured_output": False}) for fn in TASK_TOOLS]

    def methods(self) -> Sequence[MethodBinding]:
        modern = frozenset(MODERN_PROTOCOL_VERSIONS)
        return [MethodBinding("tasks/get", TaskParams, self.get, modern),
                MethodBinding("tasks/update", TaskUpdateParams, self.update, modern),
                MethodBinding("tasks/cancel", TaskParams, self.cancel, modern)]

    async def intercept_tool_call(self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any],
                                  call_next: CallNext) -> HandlerResult:
        support = SUPPORT.get(params.name)
        if support is None or ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            return await call_next(ctx)
        caps = ctx.session.client_capabilities
        if not (caps is not None and caps.extensions and TASKS in caps.extensions):
            if support == "required":
                raise MCPError(MISSING_REQUIRED_CLIENT_CAPABILITY, f"{params.name} runs only as a task",
                               {"requiredCapabilities": {"extensions": {TASKS: {}}}})
            return await call_next(ctx)
        task = Task(uuid.uuid4().hex)
        if params.name in INPUT_FIRST:
            outcome = await call_next(ctx)
            if not isinstance(outcome, CallToolResult):
                return outcome  # an InputRequiredResult: still gathering input, no task yet
            task.settle("completed", result=dumped(outcome))
        else:
            assert self.group is not None, "the tasks lifespan is not running"
            self.group.start_soon(self.run, task, params, ctx)
        self.tasks[task.task_id] = task
        return {"resultType": "task", **task.envelope()}

    async def run(self, task: Task, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any]) -> None:
        """Run the tool to the end, parking at each InputRequiredResult until tasks/update answers it."""
        assert self.server is not None
        state: str | None = None
        with task.scope:
            try:
                while True:
                    given = InputResponseRequestParams(input_responses=task.answers or None, request_state=state)
                    context = Context(request_context=ctx, mcp_server=self.server, input_params=given)
                    outcome = await self.server.call_tool(params.name, params.arguments or {}, context)
                    if isinstance(outcome, CallToolResult):
                        task.settle("completed", result=dumped(outcome))
                        return
                    task.status, task.updated_at, state = "input_required", now(), outcome.request_state
                    task.pending, task.answers, task.answered = dict(outcome.input_requests or {}), {}, anyio.Event()
                    await task.answered.wait()
            except ToolError as exc:  # bad arguments or a deliberate failure: a tool error, so still "completed"
                task.settle("completed", result=dumped(failure(str(exc))))
            except MCPError as exc:
                task.settle("failed", error=exc.error.model_dump(mode="json", exclude_none=True))
            except Exception as exc:  # a crash: the tool's own message stays here
                task.settle("failed", error={"code": INTERNAL_ERROR, "message": f"{params.name} crashed: {exc}"})

    def find(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> Task:
        require_client_extension(ctx, TASKS)
        headers = getattr(ctx.request, "headers", None)
        routed = headers.get("mcp-name") if headers is not None else None
        if routed is not None and routed.strip() != params.task_id:
            raise MCPError(HEADER_MISMATCH, "The Mcp-Name header does not match params.taskId")
        task = self.tasks.get(params.task_id)
        if task is None:
            raise MCPError(INVALID_PARAMS, f"Unknown task: {params.task_id}", {"taskId": params.task_id})
        return task

    async def get(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
        return self.find(ctx, params).detailed()

    async def update(self, ctx: ServerRequestContext[Any, Any], params: TaskUpdateParams) -> dict[str, Any]:
        task = self.find(ctx, params)
        for key, raw in (params.input_responses or {}).items():
            request = task.pending.get(key)
            if request is None:
                continue  # unknown or already answered: ignored
            try:
                task.answers[key] = ANSWER_TYPES[request.method].model_validate(raw)  # type: ignore[assignment]
            except ValueError:
                continue  # not an answer to that request: it stays pending
            del task.pending[key]
        if task.status == "input_required" and not task.pending:
            task.status, task.updated_at = "working", now()
            task.answered.set()
        return {}

    async def cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
        task = self.find(ctx, params)
        task.settle("cancelled")
        task.scope.cancel()
        return {}
