"""A2A agents written with the official a2a-sdk server, each served by hypercorn's asyncio worker
in a thread with its own event loop, on a 127.0.0.1 port that survives a restart (for the
agent-down-and-back test). Every request is recorded; one without the agent's token (the one only
sidegate holds) is refused, so a client reaching an agent directly shows up."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette

TOKEN = "agent-secret-token"


class EchoExecutor(AgentExecutor):
    """Answers every message with one Message."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        await event_queue.enqueue_event(new_text_message(f"echo: {context.get_user_input()}",
                                                         context_id=context.context_id))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


@dataclass
class Gates:
    """Steps a gated task waits for (set from the test's thread)."""

    working_seen: threading.Event = field(default_factory=threading.Event)
    artifact_seen: threading.Event = field(default_factory=threading.Event)


class TaskExecutor(AgentExecutor):
    """Runs a Task: working, an artifact, another artifact chunk, completed. The input picks the
    pace: `gated` waits for the test to see each event before the next one; `wait` works until
    cancelled; `ask` (also in a follow-up naming the task) stops at input-required, so the task
    can be continued."""

    def __init__(self, gates: Gates) -> None:
        self.gates = gates

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        task = context.current_task or new_task_from_user_message(context.message)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        text = context.get_user_input()
        if text.startswith("ask"):
            await updater.requires_input()
            return
        await updater.start_work()
        if text == "wait":
            await asyncio.Event().wait()
        if text == "gated":
            await asyncio.to_thread(self.gates.working_seen.wait, 10)
        await updater.add_artifact([new_text_part("first half, ")], artifact_id="answer", name="answer")
        if text == "gated":
            await asyncio.to_thread(self.gates.artifact_seen.wait, 10)
        await updater.add_artifact([new_text_part("second half")], artifact_id="answer", append=True,
                                   last_chunk=True)
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None and context.context_id is not None
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentServer:
    """One a2a-sdk agent: `kind` is `message`, `task` (JSON-RPC and HTTP+JSON) or `compat`
    (a 0.3 JSON-RPC interface, with the SDK's 0.3 compatibility on; `rest=True` adds a 0.3
    HTTP+JSON one). Every card declares the bearer scheme the agent enforces."""

    def __init__(self, kind: str, *, rest: bool | None = None) -> None:
        self.kind = kind
        self.rest = kind == "task" if rest is None else rest
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.gates = Gates()
        self.requests: list[tuple[str, str, bool]] = []
        """(method, path, carried the agent token) of every request that reached the agent."""
        self.card_fetches: list[bool] = []
        """Whether each card request was conditional (If-None-Match)."""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.card = self._card()
        executor: AgentExecutor = EchoExecutor() if kind == "message" else TaskExecutor(self.gates)
        self.handler = DefaultRequestHandler(executor, InMemoryTaskStore(), self.card)

    def _card(self) -> AgentCard:
        version = "0.3" if self.kind == "compat" else "1.0"
        interfaces = [AgentInterface(url=self.base + "/", protocol_binding="JSONRPC", protocol_version=version)]
        if self.rest:
            interfaces.append(AgentInterface(url=self.base + "/rest", protocol_binding="HTTP+JSON",
                                             protocol_version=version))
        return AgentCard(
            name=f"{self.kind} agent", description=f"A test agent answering with a {self.kind}.", version="1.0.0",
            supported_interfaces=interfaces, capabilities=AgentCapabilities(streaming=self.kind != "message"),
            default_input_modes=["text/plain"], default_output_modes=["text/plain"],
            skills=[AgentSkill(id=f"{self.kind}-skill", name=f"{self.kind} skill", description="Does its thing.",
                               tags=["test"])],
            security_schemes={"bearer": SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(
                scheme="bearer"))},
            security_requirements=[SecurityRequirement(schemes={"bearer": StringList()})],
        )

    def app(self) -> Any:
        routes = [*create_agent_card_routes(self.card),
                  *create_jsonrpc_routes(self.handler, "/", enable_v0_3_compat=self.kind == "compat")]
        if self.rest:
            routes.extend(create_rest_routes(self.handler, path_prefix="/rest",
                                             enable_v0_3_compat=self.kind == "compat"))
        inner = Starlette(routes=routes)

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                token = dict(scope["headers"]).get(b"authorization") == f"Bearer {TOKEN}".encode()
                self.requests.append((scope["method"], scope["path"], token))
                if scope["path"].endswith("agent-card.json"):
                    self.card_fetches.append(b"if-none-match" in dict(scope["headers"]))
                if not token:
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"no token"})
                    return
            await inner(scope, receive, send)

        return guarded

    def start(self) -> None:
        """Serve (again) on this agent's port; returns once it listens."""
        ready = threading.Event()

        def run() -> None:
            async def main() -> None:
                self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
                config = Config()
                config.bind = [f"127.0.0.1:{self.port}"]
                config.accesslog = None
                config.loglevel = "WARNING"
                config.graceful_timeout = 0.2
                served = asyncio.ensure_future(serve(self.app(), config, shutdown_trigger=self._stop.wait))
                while not _listening(self.port):
                    await asyncio.sleep(0.01)
                ready.set()
                await served

            asyncio.run(main())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the {self.kind} agent did not start")

    def stop(self) -> None:
        """Stop serving (blocking: call from a worker thread in async tests)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
