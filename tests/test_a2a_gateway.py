"""The A2A gateway end to end: a2a-sdk agents (a Message agent, a Task agent with JSON-RPC and
HTTP+JSON, a 0.3-compatible agent) fronted by sidegate in-process; the official a2a-sdk client
only ever gets sidegate's URL and the rewritten card. Every agent refuses requests without the
token only sidegate holds, and records what reached it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
import trio
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError

from tests.support.a2a_agents import AgentServer
from tests.support.a2a_client import agent_url, open_client, user_message
from tests.support.a2a_plan import CALLER, ENV, MASTER, OUTSIDER, spec_plan
from tests.support.gateway import open_gateway


@pytest.fixture(scope="module")
def agents() -> Iterator[dict[str, AgentServer]]:
    servers = {"echo": AgentServer("message"), "tasks": AgentServer("task"), "legacy": AgentServer("compat")}
    for s in servers.values():
        s.start()
    yield servers
    for s in servers.values():
        s.stop()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def no_bypass(agents: dict[str, AgentServer]) -> None:
    """Nothing reached an agent without sidegate's token (so nothing came from the client)."""
    for s in agents.values():
        assert s.requests and all(token for _, _, token in s.requests), s.requests


async def test_card_is_served_with_every_interface_rewritten(agents: dict[str, AgentServer]) -> None:
    with trio.fail_after(15):
        async with open_gateway(spec_plan(agents)) as gw, httpx.AsyncClient(
                headers={"authorization": f"Bearer {CALLER}"}) as http:
            for name, s in agents.items():
                r = await http.get(agent_url(gw, name) + "/.well-known/agent-card.json")
                assert r.status_code == 200, r.text
                card = r.json()
                assert s.base not in r.text  # no upstream address leaks
                urls = {i["protocolBinding"]: i["url"] for i in card["supportedInterfaces"]}
                assert urls["JSONRPC"] == agent_url(gw, name)
                if name == "tasks":
                    assert urls["HTTP+JSON"] == agent_url(gw, name) + "/rest"
                if name == "legacy":  # the 0.3 shape is rewritten too
                    assert card["url"] == agent_url(gw, name) and card["protocolVersion"] == "0.3"
                again = await http.get(agent_url(gw, name) + "/.well-known/agent-card.json",
                                       headers={"if-none-match": r.headers["etag"]})
                assert again.status_code == 304
                # cacheable until sidegate fetches the card again (the TCK's card-caching check)
                ages = [int(x.headers["cache-control"].removeprefix("max-age=")) for x in (r, again)]
                assert all(0 <= age <= 30 for age in ages), ages  # refresh: 30s
            listed = (await http.get(f"http://127.0.0.1:{gw.port}/a2a/agents")).json()["agents"]
            assert [(a["name"], a["healthy"], a["card"]["skills"][0]["id"]) for a in listed] == [
                ("echo", True, "message-skill"), ("legacy", True, "compat-skill"), ("tasks", True, "task-skill")]
    no_bypass(agents)


async def test_send_to_a_message_agent(agents: dict[str, AgentServer]) -> None:
    with trio.fail_after(15):
        async with open_gateway(spec_plan(agents)) as gw, open_client(gw, "echo", CALLER) as client:
            events = [e async for e in client.send_message(user_message("hello"))]
    assert len(events) == 1 and events[0].message.parts[0].text == "echo: hello"
    no_bypass(agents)


async def test_streamed_task_events_arrive_one_by_one(agents: dict[str, AgentServer]) -> None:
    gates = agents["tasks"].gates
    gates.working_seen.clear()
    gates.artifact_seen.clear()
    seen: list[str] = []
    with trio.fail_after(15):
        async with open_gateway(spec_plan(agents)) as gw, open_client(gw, "tasks", CALLER) as client:
            async for event in client.send_message(user_message("gated")):
                kind = event.WhichOneof("payload")
                if kind == "status_update":
                    seen.append(TaskState.Name(event.status_update.status.state))
                    if event.status_update.status.state == TaskState.TASK_STATE_WORKING:
                        # The agent waits for this before it sends anything else: a buffering relay
                        # would never deliver this event, and the test would time out.
                        gates.working_seen.set()
                elif kind == "artifact_update":
                    seen.append("artifact:" + event.artifact_update.artifact.parts[0].text)
                    gates.artifact_seen.set()
                else:
                    seen.append(kind or "none")
    assert seen == ["task", "TASK_STATE_WORKING", "artifact:first half, ", "artifact:second half",
                    "TASK_STATE_COMPLETED"], seen
    no_bypass(agents)


async def test_subscribing_to_a_running_task(agents: dict[str, AgentServer]) -> None:
    gates = agents["tasks"].gates
    gates.working_seen.clear()
    gates.artifact_seen.clear()
    seen: list[str] = []
    with trio.fail_after(15):
        async with open_gateway(spec_plan(agents)) as gw:
            async with open_client(gw, "tasks", CALLER, streaming=False, polling=True) as starter:
                (first,) = [e async for e in starter.send_message(user_message("gated"))]
            async with open_client(gw, "tasks", CALLER) as client:
                async for event in client.subscribe(SubscribeToTaskRequest(id=first.task.id)):
                    kind = event.WhichOneof("payload")
                    seen.append(kind or "none")
                    gates.working_seen.set()
                    if kind == "artifact_update":
                        gates.artifact_seen.set()
    assert seen[0] == "task" and seen[-1] == "status_update" and "artifact_update" in seen, seen
    assert ("POST", "/", True) in agents["tasks"].requests


async def test_get_and_cancel_and_their_errors(agents: dict[str, AgentServer]) -> None:
    with trio.fail_after(15):
        async with open_gateway(spec_plan(agents)) as gw, open_client(gw, "tasks", CALLER, streaming=False,
                                                                      polling=True) as client:
            (first,) = [e async for e in client.send_message(user_message("wait"))]
            task_id = first.task.id
            got = await client.get_task(GetTaskRequest(id=task_id))
            assert got.id == task_id and got.status.state in (TaskState.TASK_STATE_SUBMITTED,
                                                              TaskState.TASK_STATE_WORKING)
            listed = await client.list_tasks(ListTasksRequest())
            assert task_id in {t.id for t in listed.tasks}
            canceled = await client.cancel_task(CancelTaskRequest(id=task_id))
            assert canceled.status.state == TaskState.TASK_STATE_CANCELED
            with pytest.raises(TaskNotCancelableError):
                await client.cancel_task(CancelTaskRequest(id=task_id))
            with pytest.raises(TaskNotFoundError):
                await client.get_task(GetTaskRequest(id="no-such-task"))
            async with httpx.AsyncClient(headers={"authorization": f"Bearer {CALLER}"}) as http:
                raw = await http.post(agent_url(gw, "tasks"), headers={"a2a-version": "1.0"}, json={
                    "jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": {"id": "no-such-task"}})
            assert raw.json()["error"]["code"] == -32001 and raw.json()["id"] == 7  # passed through as is
            metrics = (await httpx.AsyncClient().get(f"http://127.0.0.1:{gw.port}/metrics")).text
    assert 'sidegate_a2a_calls_total{agent="tasks",error="-32002",method="CancelTask",status="200"} 1.0' in metrics
    assert 'sidegate_a2a_calls_total{agent="tasks",error="-32001",method="GetTask",status="200"} 2.0' in metrics
    no_bypass(agents)


async def test_a_compat_0_3_agent(agents: dict[str, AgentServer]) -> None:
    with trio.fail_after(15):
        async with open_gateway(spec_plan(agents)) as gw:
            async with open_client(gw, "legacy", CALLER) as client:
                streamed = [e async for e in client.send_message(user_message("go"))]
                task_id = streamed[0].task.id
                got = await client.get_task(GetTaskRequest(id=task_id))
                with pytest.raises(TaskNotCancelableError):
                    await client.cancel_task(CancelTaskRequest(id=task_id))
            async with open_client(gw, "legacy", CALLER, streaming=False) as client:
                (sent,) = [e async for e in client.send_message(user_message("go"))]
    assert got.status.state == TaskState.TASK_STATE_COMPLETED
    assert sent.task.status.state == TaskState.TASK_STATE_COMPLETED
    methods = {p for m, p, _ in agents["legacy"].requests if m == "POST"}
    assert methods == {"/"}
    no_bypass(agents)


async def test_the_rest_binding(agents: dict[str, AgentServer]) -> None:
    with trio.fail_after(15):
        async with open_gateway(spec_plan(agents)) as gw, open_client(gw, "tasks", CALLER,
                                                                      bindings=("HTTP+JSON",)) as client:
            events = [e async for e in client.send_message(user_message("rest"))]
            task_id = events[0].task.id
            got = await client.get_task(GetTaskRequest(id=task_id))
            with pytest.raises(TaskNotFoundError):
                await client.get_task(GetTaskRequest(id="missing"))
    assert got.status.state == TaskState.TASK_STATE_COMPLETED and len(got.artifacts) == 1
    assert any(p.startswith("/rest/") for _, p, _ in agents["tasks"].requests)
    no_bypass(agents)


async def test_forbidden_and_unknown_agents_get_json_rpc_errors(agents: dict[str, AgentServer]) -> None:
    before = {n: len(s.requests) for n, s in agents.items()}
    with trio.fail_after(15):
        async with open_gateway(spec_plan(agents)) as gw, httpx.AsyncClient() as http:
            async def call(agent: str, key: str) -> httpx.Response:
                return await http.post(agent_url(gw, agent), headers={"authorization": f"Bearer {key}"},
                                       json={"jsonrpc": "2.0", "id": "x", "method": "SendMessage", "params": {}})

            forbidden = await call("tasks", OUTSIDER)
            card = await http.get(agent_url(gw, "legacy") + "/.well-known/agent-card.json",
                                  headers={"authorization": f"Bearer {OUTSIDER}"})
            unknown = await call("nobody", CALLER)
            no_key = await call("echo", "sk-wrong")
            listed = (await http.get(f"http://127.0.0.1:{gw.port}/a2a/agents",
                                     headers={"authorization": f"Bearer {OUTSIDER}"})).json()["agents"]
            with pytest.raises(Exception) as refused:
                async with open_client(gw, "tasks", OUTSIDER):
                    pass
    assert forbidden.status_code == 403 and forbidden.json()["error"]["data"]["reason"] == "AGENT_FORBIDDEN"
    assert forbidden.json()["id"] == "x" and forbidden.json()["jsonrpc"] == "2.0"
    assert card.status_code == 403
    assert unknown.status_code == 404 and unknown.json()["error"]["data"]["reason"] == "AGENT_NOT_FOUND"
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == -32000
    assert [a["name"] for a in listed] == ["echo"]
    assert "403" in str(refused.value)
    # card fetches at start are sidegate's own; no call from a refused client reached an agent
    after = {n: [r for r in s.requests[before[n]:] if r[0] == "POST"] for n, s in agents.items()}
    assert after == {"echo": [], "tasks": [], "legacy": []}


async def test_an_agent_going_down_and_coming_back(agents: dict[str, AgentServer]) -> None:
    echo = agents["echo"]
    with trio.fail_after(30):
        async with open_gateway(spec_plan(agents, refresh="300ms")) as gw, httpx.AsyncClient(
                headers={"authorization": f"Bearer {CALLER}"}) as http:
            ready = f"http://127.0.0.1:{gw.port}/health/ready"

            async def health() -> dict[str, object]:
                return dict((await http.get(ready)).json()["a2a"]["echo"])

            while not (await health())["healthy"]:
                await trio.sleep(0.05)
            await trio.to_thread.run_sync(echo.stop)
            down = await http.post(agent_url(gw, "echo"), json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                                                                 "params": {}})
            assert down.status_code == 502 and down.json()["error"]["data"]["reason"] == "AGENT_UNAVAILABLE"
            report = await health()
            assert report["healthy"] is False and "reach" in str(report["error"])
            metrics = (await http.get(f"http://127.0.0.1:{gw.port}/metrics")).text
            assert 'sidegate_a2a_agent_up{agent="echo"} 0.0' in metrics
            await trio.to_thread.run_sync(echo.start)
            while not (await health())["healthy"]:
                await trio.sleep(0.05)
            async with open_client(gw, "echo", CALLER) as client:
                events = [e async for e in client.send_message(user_message("back"))]
            metrics = (await http.get(f"http://127.0.0.1:{gw.port}/metrics")).text
    assert events[0].message.parts[0].text == "echo: back"
    assert 'sidegate_a2a_agent_up{agent="echo"} 1.0' in metrics
    assert True in echo.card_fetches[1:]  # refreshes revalidate with the ETag


async def test_a_virtual_key_s_metadata_limits_its_agents(agents: dict[str, AgentServer]) -> None:
    with trio.fail_after(15):
        async with open_gateway(spec_plan(agents)) as gw, httpx.AsyncClient() as http:
            made = await http.post(f"http://127.0.0.1:{gw.port}/key/generate",
                                   headers={"authorization": f"Bearer {MASTER}"},
                                   json={"metadata": {"a2a": {"allow": ["echo"]}}})
            key = made.json()["key"]
            async with open_client(gw, "echo", key) as client:
                events = [e async for e in client.send_message(user_message("virtual"))]
            refused = await http.get(agent_url(gw, "tasks") + "/.well-known/agent-card.json",
                                     headers={"authorization": f"Bearer {key}"})
    assert events[0].message.parts[0].text == "echo: virtual"
    assert refused.status_code == 403 and refused.json()["error"]["data"]["reason"] == "AGENT_FORBIDDEN"



async def test_a_reload_adds_agents_and_keeps_the_known_ones(agents: dict[str, AgentServer]) -> None:
    plans = [spec_plan({"echo": agents["echo"]}), spec_plan(agents)]
    with trio.fail_after(15):
        async with open_gateway(plans[0], load_plan=lambda: plans[-1]) as gw, httpx.AsyncClient(
                headers={"authorization": f"Bearer {CALLER}"}) as http:
            async with open_client(gw, "echo", CALLER) as client:
                [e async for e in client.send_message(user_message("before"))]
            kept = gw.app.a2a.registry.agents["echo"]
            missing = await http.get(agent_url(gw, "tasks") + "/.well-known/agent-card.json")
            await gw.reload().wait()
            listed = (await http.get(f"http://127.0.0.1:{gw.port}/a2a/agents")).json()["agents"]
            found = await http.get(agent_url(gw, "tasks") + "/.well-known/agent-card.json")
    assert missing.status_code == 404
    assert [a["name"] for a in listed] == ["echo", "legacy", "tasks"] and found.status_code == 200
    assert gw.app.a2a.registry.agents["echo"] is kept


async def test_deadlines_a_silent_call_and_a_silent_stream(agents: dict[str, AgentServer]) -> None:
    gates = agents["tasks"].gates
    gates.working_seen.clear()
    gates.artifact_seen.clear()
    plan = spec_plan(agents, deadlines="timeout: 2s, stream_idle: 400ms")
    with trio.fail_after(15):
        async with open_gateway(plan) as gw, httpx.AsyncClient(headers={"authorization": f"Bearer {CALLER}",
                                                                        "a2a-version": "1.0"}) as http:
            message = {"role": "ROLE_USER", "messageId": "m-1", "parts": [{"text": "wait"}]}
            t0 = trio.current_time()
            slow = await http.post(agent_url(gw, "tasks"), json={"jsonrpc": "2.0", "id": 5, "method": "SendMessage",
                                                                 "params": {"message": message}})
            waited = trio.current_time() - t0
            gated = {**message, "messageId": "m-2", "parts": [{"text": "gated"}]}
            chunks: list[bytes] = []
            t1 = trio.current_time()
            async with http.stream("POST", agent_url(gw, "tasks"), json={
                    "jsonrpc": "2.0", "id": 6, "method": "SendStreamingMessage", "params": {"message": gated}}) as s:
                async for chunk in s.aiter_bytes():  # the agent goes silent after "working"
                    chunks.append(chunk)
            streamed = trio.current_time() - t1
            gates.working_seen.set()
            gates.artifact_seen.set()
    assert slow.status_code == 504 and slow.json()["error"]["data"]["reason"] == "AGENT_TIMEOUT"
    assert slow.json()["id"] == 5 and 1.9 < waited < 4
    assert b"TASK_STATE_WORKING" in b"".join(chunks) and b"TASK_STATE_COMPLETED" not in b"".join(chunks)
    assert 0.4 <= streamed < 2  # cut after 400 ms of silence (the agent would wait 10 s)


async def test_an_agent_never_reached_answers_rest_calls_in_the_rest_dialect(agents: dict[str, AgentServer]) -> None:
    class Gone:
        base = "http://127.0.0.1:9"  # discard port: nothing answers

    with trio.fail_after(15):
        async with open_gateway(spec_plan({"gone": Gone()})) as gw, httpx.AsyncClient(  # type: ignore[dict-item]
                headers={"authorization": f"Bearer {CALLER}"}) as http:
            rest = await http.get(agent_url(gw, "gone") + "/rest/tasks/t-1")
            rpc = await http.post(agent_url(gw, "gone"), json={"jsonrpc": "2.0", "id": 7, "method": "GetTask",
                                                               "params": {"id": "t-1"}})
    assert rest.status_code == 503 and rest.json()["error"]["status"] == "UNAVAILABLE", rest.text
    assert "jsonrpc" not in rest.json()
    assert rpc.status_code == 503 and rpc.json()["id"] == 7 and rpc.json()["error"]["data"]["reason"] == "AGENT_UNAVAILABLE"


async def test_a_sidecar_without_agents_makes_no_client_until_a_reload_brings_one(
    agents: dict[str, AgentServer],
) -> None:
    """The A2A client (the process's first httpx client: ~9 MB and ~0.1 s of the start) is made only
    once the plan has agents; the reload that brings the first one serves it at once."""
    with_echo = spec_plan({"echo": agents["echo"]})
    plans = [replace(with_echo, a2a=None), with_echo]
    with trio.fail_after(15):
        async with open_gateway(plans[0], load_plan=lambda: plans[-1]) as gw:
            before = gw.app.a2a.client
            await gw.reload().wait()
            async with open_client(gw, "echo", CALLER) as client:
                events = [e async for e in client.send_message(user_message("late"))]
            after = gw.app.a2a.client
    assert before is None and after is not None
    assert events[0].message.parts[0].text == "echo: late"
