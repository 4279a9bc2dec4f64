"""What the A2A conformance scenarios (tests/test_a2a_conformance.py) run on: two a2a-sdk agents
(`v10`, a 1.0 agent, and `v03`, a 0.3 agent served by the SDK's compatibility layer, both with
JSON-RPC and HTTP+JSON interfaces) and one sidegate fronting them, started once per module (the
gateway on its own trio loop in a thread); each scenario runs against a `Side`, the agent
directly (the baseline) or through sidegate, and returns a view that must be the same on both.

The views keep what the TCK's MUST-level checks look at (status class, JSON-RPC error code, id,
result shape, task states) and drop what legitimately differs (ids, timestamps, messages, the
gateway's own addresses)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
from a2a.client import Client
from a2a.helpers.proto_helpers import new_text_message
from a2a.types.a2a_pb2 import Message, Role, SendMessageRequest, StreamResponse, Task, TaskState

from sidegate.runtime.plan import Plan
from tests.support.a2a_agents import TOKEN, AgentServer
from tests.support.a2a_client import TLS, open_client_at
from tests.support.a2a_plan import CALLER, ENV, spec_plan
from tests.support.gateway import open_gateway

JSONRPC, REST = "JSONRPC", "HTTP+JSON"
_METHODS = {  # logical name -> (1.0 method, 0.3 method)
    "send": ("SendMessage", "message/send"),
    "get": ("GetTask", "tasks/get"),
    "list": ("ListTasks", "tasks/list"),
    "card": ("GetExtendedAgentCard", "agent/getAuthenticatedExtendedCard"),
}


@dataclass(frozen=True)
class Wire:
    """A protocol line (`1.0` or the legacy `0.3`) on one binding."""

    version: str
    binding: str

    @property
    def id(self) -> str:
        return f"{self.version}-{ {JSONRPC: 'jsonrpc', REST: 'rest'}.get(self.binding, self.binding)}"

    @property
    def agent(self) -> str:
        return "v10" if self.version == "1.0" else "v03"

    @property
    def headers(self) -> dict[str, str]:
        """The version header a 1.0 client sends (a 0.3 client sends none)."""
        return {"a2a-version": "1.0"} if self.version == "1.0" else {}

    @property
    def rest_prefix(self) -> str:
        """0.3's HTTP+JSON paths start with `/v1`."""
        return "" if self.version == "1.0" else "/v1"

    def method(self, name: str) -> str:
        return _METHODS[name][0 if self.version == "1.0" else 1]

    def message(self, text: str, **fields: Any) -> dict[str, Any]:
        """A user message in this line's JSON shape."""
        if self.version == "1.0":
            return {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": text}], **fields}
        return {"kind": "message", "messageId": uuid.uuid4().hex, "role": "user",
                "parts": [{"kind": "text", "text": text}], **fields}


WIRES = tuple(Wire(v, b) for v in ("1.0", "0.3") for b in (JSONRPC, REST))
RPC_WIRES = tuple(w for w in WIRES if w.binding == JSONRPC)
V10_WIRES = tuple(w for w in WIRES if w.version == "1.0")
BOTH = (Wire("1.0", "both"), Wire("0.3", "both"))
"""Both bindings of a line, for the scenarios comparing them."""


@dataclass(frozen=True)
class Side:
    """One way to reach an agent: directly with its own token, or through sidegate with a key."""

    name: str
    base: str
    """Where the agent card is (`{base}/.well-known/agent-card.json`)."""
    key: str
    server: AgentServer

    @property
    def gateway(self) -> bool:
        return self.name == "gateway"

    @property
    def rpc_url(self) -> str:
        return self.base if self.gateway else self.base + "/"

    def rest_url(self, wire: Wire) -> str:
        return self.base + "/rest" + wire.rest_prefix

    def headers(self, wire: Wire, key: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key if key is None else key}", **wire.headers}


@dataclass
class World:
    agents: dict[str, AgentServer]
    port: int

    def side(self, wire: Wire, gateway: bool) -> Side:
        server = self.agents[wire.agent]
        if gateway:
            return Side("gateway", f"http://127.0.0.1:{self.port}/a2a/{wire.agent}", CALLER, server)
        return Side("agent", server.base, TOKEN, server)


class _GatewayThread:
    """sidegate on its own trio loop in a thread, so one gateway serves a whole module."""

    def __init__(self, plan: Plan) -> None:
        self.plan, self.port = plan, 0
        self._stop: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._failed: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._stop, self._token = trio.Event(), trio.lowlevel.current_trio_token()
            async with open_gateway(self.plan) as gw:
                self.port = gw.port
                self._ready.set()
                await self._stop.wait()

        try:
            trio.run(main)
        except BaseException as exc:  # reported by start()
            self._failed = exc
            self._ready.set()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(15) or self._failed is not None:
            raise RuntimeError("sidegate did not start") from self._failed

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._stop is not None and self._token is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(10)


@contextmanager
def running_world() -> Iterator[World]:
    """Both agents and sidegate, up for as long as the block runs."""
    agents = {"v10": AgentServer("task"), "v03": AgentServer("compat", rest=True)}
    with pytest.MonkeyPatch.context() as env:
        for name, value in ENV.items():
            env.setenv(name, value)
        started: list[AgentServer] = []
        gateway = _GatewayThread(spec_plan(agents))
        try:
            for s in agents.values():
                s.start()
                started.append(s)
            gateway.start()
            yield World(agents, gateway.port)
        finally:
            gateway.stop()
            for s in started:
                s.stop()


@dataclass
class Checks:
    """The MUST-level statements a run violated, in the words of the TCK check."""

    failed: list[str] = field(default_factory=list)

    def must(self, ok: object, statement: str) -> None:
        if not ok:
            self.failed.append(statement)


# --- raw wire --------------------------------------------------------------------------------

async def post_rpc(side: Side, wire: Wire, body: object, *, key: str | None = None,
                   auth: bool = True) -> httpx.Response:
    """POST a JSON-RPC body (bytes as they are, anything else as JSON) to the side's endpoint."""
    headers = side.headers(wire, key) if auth else dict(wire.headers)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(timeout=10, verify=TLS) as http:
        return await http.post(side.rpc_url, content=content,
                               headers={**headers, "content-type": "application/json"})


async def call_rest(side: Side, wire: Wire, method: str, path: str, body: object = None, *,
                    key: str | None = None, auth: bool = True) -> httpx.Response:
    """Call `path` under the side's HTTP+JSON interface (0.3 paths get their `/v1`)."""
    headers = side.headers(wire, key) if auth else dict(wire.headers)
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    async with httpx.AsyncClient(timeout=10, verify=TLS) as http:
        return await http.request(method, side.rest_url(wire) + path, content=content,
                                  headers={**headers, "content-type": "application/json"})


async def get_card(side: Side, wire: Wire) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10, verify=TLS) as http:
        return await http.get(side.base + "/.well-known/agent-card.json", headers=side.headers(wire))


def rpc_request(method: str, params: object, rpc_id: object = "r-1") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params}


def json_of(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def rpc_view(r: httpx.Response, sent_id: object) -> dict[str, Any]:
    """A JSON-RPC answer: status class, envelope, whether it echoes the id, error code, result."""
    body = json_of(r)
    if not isinstance(body, dict):
        return {"http": r.status_code // 100, "json": type(body).__name__}
    error = body.get("error")
    echoed = body.get("id") == sent_id
    return {"http": r.status_code // 100, "jsonrpc": body.get("jsonrpc"),
            "id": "echoed" if echoed else "null" if body.get("id") is None else "other",
            "code": error.get("code") if isinstance(error, dict) else None, "result": "result" in body}


def rest_view(r: httpx.Response) -> dict[str, Any]:
    """An HTTP+JSON answer: its status and, for an error object, its `status` and A2A reason."""
    body = json_of(r)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    reasons = [d.get("reason") for d in error.get("details") or () if isinstance(d, dict) and "reason" in d]
    return {"http": r.status_code, "json": body is not None, "status": error.get("status"),
            "reason": reasons[0] if reasons else None}


async def rest_error(side: Side, wire: Wire, c: Checks, method: str, path: str, status: int,
                     reason: str) -> dict[str, Any] | None:
    """On the HTTP+JSON binding, the error as the agent puts it on the wire (what the TCK's REST
    client reads), checked to be `status` with the A2A `reason`; None on JSON-RPC."""
    if wire.binding != REST:
        return None
    view = rest_view(await call_rest(side, wire, method, path))
    c.must(view["http"] == status and view["reason"] == reason, f"HTTP+JSON: this MUST be {status} {reason}")
    return view


# --- the a2a-sdk client ----------------------------------------------------------------------

@asynccontextmanager
async def sdk_client(side: Side, wire: Wire, *, binding: str | None = None, streaming: bool = False,
                     polling: bool = False) -> AsyncIterator[Client]:
    """The official client for the side, built from the card it serves, on the wire's binding."""
    async with open_client_at(side.base, side.key, streaming=streaming, polling=polling,
                              bindings=(binding or wire.binding,)) as client:
        yield client


def request(text: str, **fields: Any) -> SendMessageRequest:
    message: Message = new_text_message(text, role=Role.ROLE_USER)
    for name, value in fields.items():
        setattr(message, name, value)
    return SendMessageRequest(message=message)


async def send(client: Client, text: str, **fields: Any) -> StreamResponse:
    """The one answer of a non-streaming send."""
    answers = [e async for e in client.send_message(request(text, **fields))]
    assert len(answers) == 1, answers
    return answers[0]


def task_view(task: Task) -> dict[str, Any]:
    return {"state": TaskState.Name(task.status.state), "history": len(task.history),
            "artifacts": len(task.artifacts), "context": bool(task.context_id)}


def answer_view(answer: StreamResponse) -> dict[str, Any]:
    kind = answer.WhichOneof("payload")
    if kind == "task":
        return {"kind": "task", **task_view(answer.task)}
    if kind == "message":
        return {"kind": "message", "role": Role.Name(answer.message.role), "parts": len(answer.message.parts)}
    return {"kind": kind}


def failure(exc: BaseException) -> dict[str, Any]:
    """An error the client raised, by its class (the SDK maps each A2A error code to one)."""
    return {"error": type(exc).__name__}


async def outcome(call: Awaitable[Any], view: Callable[[Any], Any]) -> Any:
    """The view of what `call` returns, or of the error it raises."""
    try:
        return view(await call)
    except Exception as exc:
        return failure(exc)


# --- the scenarios ----------------------------------------------------------------------------

Run = Callable[[Side, Wire, Checks], Awaitable[Any]]


@dataclass(frozen=True)
class Case:
    """A scenario: its name, the TCK file(s) it follows, what runs it and on which wires."""

    name: str
    source: str
    run: Run
    wires: tuple[Wire, ...]


CASES: list[Case] = []
"""Every scenario, as registered by @scenario."""


def scenario(name: str, source: str, wires: tuple[Wire, ...] = WIRES) -> Callable[[Run], Run]:
    def register(run: Run) -> Run:
        CASES.append(Case(name, source, run, wires))
        return run

    return register
