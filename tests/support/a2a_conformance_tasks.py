"""The task scenarios of the A2A conformance run (tests/test_a2a_conformance.py), with the
a2a-sdk client: SendMessage, GetTask, CancelTask, history, ListTasks (a 1.0 method: 0.3 has
none) and the equivalence of the two bindings. Each follows the TCK file named as its source."""

from __future__ import annotations

import uuid
from typing import Any

from a2a.client import Client
from a2a.types.a2a_pb2 import CancelTaskRequest, GetTaskRequest, ListTasksRequest, TaskState

from tests.support.a2a_conformance_wire import (
    BOTH,
    JSONRPC,
    REST,
    V10_WIRES,
    Checks,
    Side,
    Wire,
    answer_view,
    call_rest,
    json_of,
    outcome,
    post_rpc,
    rest_error,
    rpc_request,
    scenario,
    sdk_client,
    send,
    task_view,
)

SEND = "protocol/test_message_send_method.py"
GET = "protocol/test_tasks_get_method.py"
CANCEL = "protocol/test_tasks_cancel_method.py"
LIST = "protocol/test_tasks_list_method.py"
STATES = "protocol/test_state_transitions.py"
EQUIVALENCE = "transport/test_multi_transport_equivalence.py"
EMPTY_PAGE = "pageSize MUST be 0 when no task is returned"
ANSWERING = {"TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", "TASK_STATE_INPUT_REQUIRED", "TASK_STATE_COMPLETED"}


@scenario("send-text", SEND)
async def send_text(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire) as client:
        view = answer_view(await send(client, "hello"))
    c.must(view.get("state") in ANSWERING if view["kind"] == "task" else view.get("role") == "ROLE_AGENT",
           "SendMessage MUST answer a Task in a live state or an agent Message")
    return view


@scenario("continue-task", SEND)
async def continue_task(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire) as client:
        first = (await send(client, "ask")).task
        second = await send(client, "ask again", task_id=first.id, context_id=first.context_id)
    c.must(second.task.id == first.id, "a message naming a task MUST continue that task")
    c.must(second.task.status.state != TaskState.TASK_STATE_UNSPECIFIED, "the continued task MUST have a state")
    return [task_view(first), answer_view(second)]


@scenario("get-task", GET)
async def get_task(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire) as client:
        created = (await send(client, "ask")).task
        got = await client.get_task(GetTaskRequest(id=created.id))
        limited = await client.get_task(GetTaskRequest(id=created.id, history_length=1))
    c.must(got.id == created.id and got.HasField("status"), "GetTask MUST return the task with its status")
    c.must(limited.id == created.id and len(limited.history) == 1, "GetTask MUST honour historyLength")
    return [task_view(got), task_view(limited)]


@scenario("get-missing-task", GET)
async def get_missing_task(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire) as client:
        got = await outcome(client.get_task(GetTaskRequest(id="nonexistent-task-id")), task_view)
    c.must(got == {"error": "TaskNotFoundError"}, "GetTask of an unknown task MUST be -32001 (TaskNotFound)")
    return [got, await rest_error(side, wire, c, "GET", "/tasks/nonexistent-task-id", 404, "TASK_NOT_FOUND")]


@scenario("cancel-task", CANCEL)
async def cancel_task(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire, polling=True) as client:
        running = (await send(client, "wait")).task
        canceled = await client.cancel_task(CancelTaskRequest(id=running.id))
        again = await outcome(client.cancel_task(CancelTaskRequest(id=running.id)), task_view)
    c.must(canceled.id == running.id and canceled.status.state == TaskState.TASK_STATE_CANCELED,
           "CancelTask MUST return the task, canceled")
    c.must(again == {"error": "TaskNotCancelableError"}, "cancelling a canceled task MUST be -32002 (TaskNotCancelable)")
    wire_again = await rest_error(side, wire, c, "POST", f"/tasks/{running.id}:cancel", 400, "TASK_NOT_CANCELABLE")
    live = running.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING)
    return {"live": live, "canceled": task_view(canceled)["state"], "again": again, "wire": wire_again}


@scenario("cancel-missing-task", CANCEL)
async def cancel_missing_task(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire) as client:
        got = await outcome(client.cancel_task(CancelTaskRequest(id="nonexistent-task-id")), task_view)
    c.must(got == {"error": "TaskNotFoundError"}, "CancelTask of an unknown task MUST be -32001 (TaskNotFound)")
    return [got, await rest_error(side, wire, c, "POST", "/tasks/nonexistent-task-id:cancel", 404, "TASK_NOT_FOUND")]


@scenario("history-length", STATES)
async def history_length(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire) as client:
        task = (await send(client, "ask")).task
        for i in range(3):
            await send(client, f"ask {i}", task_id=task.id, context_id=task.context_id)
        full = await client.get_task(GetTaskRequest(id=task.id))
        limited = await client.get_task(GetTaskRequest(id=task.id, history_length=2))
    c.must(len(limited.history) == 2, "GetTask with historyLength 2 MUST return 2 history entries")
    c.must(len(full.history) > len(limited.history), "the full history MUST hold more than the limited one")
    return {"full": len(full.history), "limited": len(limited.history)}


async def _in_context(client: Client, *texts: str) -> tuple[str, list[Any]]:
    """A fresh context holding one task per text, created in order."""
    context = f"ctx-{uuid.uuid4().hex}"
    return context, [(await send(client, t, context_id=context)).task for t in texts]


async def _list_raw(side: Side, wire: Wire, **params: Any) -> Any:
    if wire.binding == REST:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return json_of(await call_rest(side, wire, "GET", "/tasks" + (f"?{query}" if query else "")))
    answer = json_of(await post_rpc(side, wire, rpc_request(wire.method("list"), params)))
    return answer.get("result") if isinstance(answer, dict) else None


@scenario("list-tasks", LIST, V10_WIRES)
async def list_tasks(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire) as client:
        _, (task,) = await _in_context(client, "ask")
    result = await _list_raw(side, wire) or {}
    c.must(all(k in result for k in ("tasks", "totalSize", "pageSize", "nextPageToken")),
           "ListTasks MUST answer tasks, totalSize, pageSize and nextPageToken")
    ours = [t for t in result.get("tasks", []) if t.get("id") == task.id]
    c.must(ours and "status" in ours[0] and "contextId" in ours[0], "the list MUST hold the task, with status and contextId")
    return {"fields": sorted(result), "found": len(ours), "task_fields": sorted(ours[0]) if ours else None}


@scenario("list-tasks-empty", LIST, V10_WIRES)
async def list_tasks_empty(side: Side, wire: Wire, c: Checks) -> Any:
    result = await _list_raw(side, wire, contextId=f"empty-{uuid.uuid4().hex}") or {}
    c.must(result.get("tasks") == [] and result.get("totalSize") == 0, "a context with no task MUST list none")
    c.must(result.get("nextPageToken") == "", "nextPageToken MUST be empty when there are no more results")
    c.must(result.get("pageSize") == 0, EMPTY_PAGE)
    return result


@scenario("list-tasks-filtered", LIST, V10_WIRES)
async def list_tasks_filtered(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire) as client:
        context, (asking, done) = await _in_context(client, "ask", "hello")
        by_context = await client.list_tasks(ListTasksRequest(context_id=context))
        by_status = await client.list_tasks(ListTasksRequest(context_id=context, status=TaskState.TASK_STATE_COMPLETED))
    c.must({t.id for t in by_context.tasks} == {asking.id, done.id}, "filtering by contextId MUST list that context's tasks")
    c.must([t.id for t in by_status.tasks] == [done.id], "filtering by status MUST list the tasks in that state")
    return {"context": sorted(task_view(t)["state"] for t in by_context.tasks), "status": len(by_status.tasks)}


@scenario("list-tasks-paged", LIST, V10_WIRES)
async def list_tasks_paged(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire) as client:
        context, tasks = await _in_context(client, "hello", "hello", "hello")
        first = await client.list_tasks(ListTasksRequest(context_id=context, page_size=2))
        rest = await client.list_tasks(ListTasksRequest(context_id=context, page_size=2, page_token=first.next_page_token))
    order = [t.id for t in [*first.tasks, *rest.tasks]]
    c.must(len(first.tasks) == 2 and first.next_page_token, "a full page MUST come with a nextPageToken")
    c.must(len(rest.tasks) == 1 and not rest.next_page_token, "the last page MUST have an empty nextPageToken")
    c.must(first.total_size == 3, "totalSize MUST count every matching task")
    c.must(order == [t.id for t in reversed(tasks)], "tasks MUST be listed newest first")
    return {"pages": [len(first.tasks), len(rest.tasks)], "total": first.total_size,
            "tokens": [bool(first.next_page_token), bool(rest.next_page_token)], "newest_first": order == [t.id for t in reversed(tasks)]}


@scenario("list-tasks-invalid", LIST, V10_WIRES)
async def list_tasks_invalid(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire) as client:
        errors = [await outcome(client.list_tasks(bad), lambda listed: {"listed": len(listed.tasks)})
                  for bad in (ListTasksRequest(page_token="not-a-token"), ListTasksRequest(page_size=-1))]
    c.must(errors == [{"error": "InvalidParamsError"}] * 2, "an invalid pageToken or pageSize MUST be -32602")
    return errors


@scenario("bindings-equivalent", EQUIVALENCE, BOTH)
async def bindings_equivalent(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire, binding=JSONRPC) as rpc, sdk_client(side, wire, binding=REST) as rest:
        by_rpc, by_rest = (await send(rpc, "hello")).task, (await send(rest, "hello")).task
        got = [await rest.get_task(GetTaskRequest(id=by_rpc.id)), await rpc.get_task(GetTaskRequest(id=by_rest.id))]
        errors = [await outcome(client.get_task(GetTaskRequest(id="nonexistent-task-id")), task_view)
                  for client in (rpc, rest)]
    c.must(task_view(by_rpc) == task_view(by_rest), "sending a message MUST give the same result on both bindings")
    c.must([g.id for g in got] == [by_rpc.id, by_rest.id] and task_view(got[0]) == task_view(got[1]),
           "a task MUST be retrievable on the other binding, the same")
    c.must(errors[0] == errors[1] == {"error": "TaskNotFoundError"}, "errors MUST be the same on both bindings")
    return {"sent": task_view(by_rpc), "got": task_view(got[0]), "errors": errors}
