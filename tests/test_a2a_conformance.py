"""The A2A TCK's MUST-level scenarios through sidegate's `/a2a/<agent>`, for the 1.0 wire and the
legacy 0.3 wire, on the JSON-RPC and HTTP+JSON bindings.

The TCK (github.com/a2aproject/a2a-tck) is published on neither PyPI nor npm, so nothing of it is
installed or vendored: each scenario below is our own, driving with the a2a-sdk client (raw
httpx where the scenario is malformed wire input) what the TCK file named in its `source` checks
(tests/mandatory/ of the TCK). Every scenario runs twice: against the agent directly (the
baseline) and through sidegate. The two views must be the same, and sidegate must violate no
MUST the agent itself meets. What an agent violates directly is not sidegate's doing: those are
listed in BASELINE_DEVIATIONS with the reason, and asserting the list keeps it current."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
from a2a.types.a2a_pb2 import StreamResponse, SubscribeToTaskRequest, TaskPushNotificationConfig

from tests.support.a2a_conformance_tasks import EMPTY_PAGE  # importing it registers the task scenarios
from tests.support.a2a_conformance_wire import (
    CASES,
    JSONRPC,
    REST,
    RPC_WIRES,
    V10_WIRES,
    WIRES,
    Case,
    Checks,
    Side,
    Wire,
    World,
    answer_view,
    call_rest,
    get_card,
    json_of,
    outcome,
    post_rpc,
    rest_view,
    rpc_request,
    rpc_view,
    running_world,
    scenario,
    sdk_client,
    send,
)

RPC_COMPLIANCE = "jsonrpc/test_json_rpc_compliance.py"
VIOLATIONS = "jsonrpc/test_protocol_violations.py"
ERROR_CODES = "jsonrpc/test_a2a_error_codes.py"
CARD = "protocol/test_agent_card.py, protocol/test_agent_card_mandatory.py"
SEND = "protocol/test_message_send_method.py"
AUTH = "authentication/test_auth_enforcement.py"

INVALID_PARAMS = "SendMessage with invalid params MUST be rejected with -32602 (HTTP+JSON: 400)"
SCHEMES = "each declared security scheme MUST be exactly one known scheme type"
BASELINE_DEVIATIONS = {
    # What the baseline itself (the a2a-sdk agent, read by the a2a-sdk client) violates, so what
    # sidegate must reproduce and nothing more. The 0.3 JSON-RPC adapter validates params with the
    # envelope: bad params come back as -32600 Invalid Request.
    ("invalid-params", "0.3-jsonrpc"): [INVALID_PARAMS] * 3,
    # One card serves both lines: on a 0.3 card each scheme carries its 1.0 form
    # (`httpAuthSecurityScheme`) and its 0.3 form (`type`, `scheme`) merged into one object.
    **{("auth-declared", w.id): [SCHEMES] for w in WIRES if w.version == "0.3"},
    # The agent's 0.3 HTTP+JSON errors are right on the wire (checked too: status and A2A reason),
    # but a2a-sdk's 0.3 HTTP+JSON client reads any 404 as MethodNotFound, a 400 as a bare
    # A2AClientError:
    ("get-missing-task", "0.3-rest"): ["GetTask of an unknown task MUST be -32001 (TaskNotFound)"],
    ("cancel-missing-task", "0.3-rest"): ["CancelTask of an unknown task MUST be -32001 (TaskNotFound)"],
    ("cancel-task", "0.3-rest"): ["cancelling a canceled task MUST be -32002 (TaskNotCancelable)"],
    ("push-not-supported", "0.3-rest"): ["push config on an agent without push MUST be -32003 (PushNotificationNotSupported)"],
    ("bindings-equivalent", "0.3-both"): ["errors MUST be the same on both bindings"],
    # a2a-sdk's task store answers the page size asked for (default 50), also for an empty page.
    **{("list-tasks-empty", w.id): [EMPTY_PAGE] for w in V10_WIRES},
    # The agent's 0.3 HTTP+JSON subscribe raises inside its SSE response (hypercorn: "Error in
    # ASGI Framework"), so the client only sees the stream break.
    ("unsupported-operation", "0.3-rest"): ["subscribing to a finished task MUST be -32004 (UnsupportedOperation)"],
}


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with running_world() as running:
        yield running


# --- JSON-RPC compliance and protocol violations (malformed input: raw httpx) ------------------

@scenario("parse-error", RPC_COMPLIANCE)
async def parse_error(side: Side, wire: Wire, c: Checks) -> Any:
    broken = b'{"jsonrpc": "2.0", "method": "%s", "params": {"foo": "bar"}' % wire.method("send").encode()
    if wire.binding == REST:
        r = await call_rest(side, wire, "POST", "/message:send", b'{"message": {"unclosed": true')
        c.must(r.status_code == 400, "malformed JSON MUST be rejected (HTTP+JSON: 400)")
        return rest_view(r)
    r = await post_rpc(side, wire, broken)
    view = rpc_view(r, None)
    c.must(view.get("code") == -32700, "malformed JSON MUST be rejected with -32700")
    return view


async def _invalid_request(side: Side, wire: Wire, c: Checks, body: dict[str, Any], code: int,
                           statement: str) -> Any:
    r = await post_rpc(side, wire, body)
    view = rpc_view(r, body.get("id"))
    c.must(view.get("code") == code, statement)
    c.must(r.status_code == 200, "JSON-RPC errors MUST be answered with HTTP 200")
    return view


@scenario("jsonrpc-version", VIOLATIONS, RPC_WIRES)
async def jsonrpc_version(side: Side, wire: Wire, c: Checks) -> Any:
    body = {**rpc_request(wire.method("send"), {"message": wire.message("hi")}), "jsonrpc": "1.0"}
    view = await _invalid_request(side, wire, c, body, -32600, "a jsonrpc other than 2.0 MUST be -32600")
    c.must(view.get("id") == "echoed", "the error MUST carry the request's id")
    return view


@scenario("missing-method", VIOLATIONS, RPC_WIRES)
async def missing_method(side: Side, wire: Wire, c: Checks) -> Any:
    body = rpc_request(wire.method("send"), {"message": wire.message("hi")}, rpc_id="no-method")
    del body["method"]
    view = await _invalid_request(side, wire, c, body, -32600, "a request without method MUST be -32600")
    c.must(view.get("id") == "echoed", "the error MUST carry the request's id")
    return view


@scenario("invalid-id", RPC_COMPLIANCE, RPC_WIRES)
async def invalid_id(side: Side, wire: Wire, c: Checks) -> Any:
    body = rpc_request(wire.method("send"), {}, rpc_id={"bad": "type"})
    return await _invalid_request(side, wire, c, body, -32600, "an object id MUST be -32600")


@scenario("unknown-method", RPC_COMPLIANCE)
async def unknown_method(side: Side, wire: Wire, c: Checks) -> Any:
    if wire.binding == REST:
        r = await call_rest(side, wire, "GET", "/no/such/route")
        c.must(r.status_code == 404, "an unknown HTTP+JSON route MUST be 404")
        return rest_view(r)
    body = rpc_request("nonexistent/method", {}, rpc_id="unknown")
    view = await _invalid_request(side, wire, c, body, -32601, "an unknown method MUST be -32601")
    c.must(view.get("id") == "echoed", "the error MUST carry the request's id")
    return view


@scenario("invalid-params", f"{RPC_COMPLIANCE}, {SEND}")
async def invalid_params(side: Side, wire: Wire, c: Checks) -> Any:
    views = []
    for params in ({"": "not_a_dict"}, {"message": {"parts": "invalid"}}, {"message": {"kind": "message"}}):
        if wire.binding == REST:
            r = await call_rest(side, wire, "POST", "/message:send", params)
            c.must(r.status_code == 400, INVALID_PARAMS)
            views.append(rest_view(r))
        else:
            r = await post_rpc(side, wire, rpc_request(wire.method("send"), params))
            view = rpc_view(r, "r-1")
            c.must(view.get("code") == -32602, INVALID_PARAMS)
            views.append(view)
    return views


@scenario("duplicate-ids", VIOLATIONS, RPC_WIRES)
async def duplicate_ids(side: Side, wire: Wire, c: Checks) -> Any:
    same = f"dup-{uuid.uuid4().hex}"
    views = []
    for text in ("first", "second, same id"):
        r = await post_rpc(side, wire, rpc_request(wire.method("send"), {"message": wire.message(text)}, same))
        views.append(rpc_view(r, same))
    c.must(views[0].get("result"), "the first request MUST succeed")
    c.must(all(v.get("id") == "echoed" and v.get("jsonrpc") == "2.0" for v in views),
           "every answer MUST be a JSON-RPC response with the request's id")
    return views


# --- A2A error codes ---------------------------------------------------------------------------

@scenario("push-not-supported", ERROR_CODES)
async def push_not_supported(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire) as client:
        task = (await send(client, "ask")).task
        config = TaskPushNotificationConfig(task_id=task.id, url="https://example.com/webhook", token="t")
        got = await outcome(client.create_task_push_notification_config(config), lambda made: {"made": bool(made)})
    c.must(got == {"error": "PushNotificationNotSupportedError"},
           "push config on an agent without push MUST be -32003 (PushNotificationNotSupported)")
    if wire.binding == REST:  # the same call on the wire (0.3 names the config's parent, 1.0 the task)
        body = {"url": "https://example.com/webhook"} if wire.version == "1.0" else {
            "parent": f"tasks/{task.id}", "configId": "c", "config": {"pushNotificationConfig": {"url": "https://example.com/w"}}}
        r = await call_rest(side, wire, "POST", f"/tasks/{task.id}/pushNotificationConfigs", body)
        c.must(rest_view(r)["reason"] == "PUSH_NOTIFICATION_NOT_SUPPORTED",
               "HTTP+JSON: this MUST be refused with PUSH_NOTIFICATION_NOT_SUPPORTED")
        return [got, rest_view(r)]
    return [got]


@scenario("unsupported-operation", ERROR_CODES)
async def unsupported_operation(side: Side, wire: Wire, c: Checks) -> Any:
    async with sdk_client(side, wire) as client:
        done = (await send(client, "hello")).task
    async with sdk_client(side, wire, streaming=True) as client:
        events = client.subscribe(SubscribeToTaskRequest(id=done.id))
        got = await outcome(_collect(events), lambda seen: {"events": seen})
    c.must(got == {"error": "UnsupportedOperationError"},
           "subscribing to a finished task MUST be -32004 (UnsupportedOperation)")
    return got


async def _collect(events: AsyncIterator[StreamResponse]) -> list[Any]:
    return [answer_view(e) async for e in events]


@scenario("extended-card-absent", f"{ERROR_CODES}, protocol/test_extended_agent_card.py")
async def extended_card_absent(side: Side, wire: Wire, c: Checks) -> Any:
    if wire.binding == REST:
        r = await call_rest(side, wire, "GET", "/extendedAgentCard" if wire.version == "1.0" else "/card")
        view = rest_view(r)
    else:
        r = await post_rpc(side, wire, rpc_request(wire.method("card"), {}))
        view = rpc_view(r, "r-1")
    c.must(r.status_code >= 400 or view.get("code") is not None,
           "an agent with no extended card MUST answer an error, not a card")
    return view


# --- The agent card ----------------------------------------------------------------------------

def _relative(value: Any, base: str) -> Any:
    """The card with every address under `base` made relative to it (the rest kept as is)."""
    if isinstance(value, dict):
        return {k: _relative(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, base) for v in value]
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        under = value == base or value.startswith(base + "/")
        return "<base>" + value.removeprefix(base).rstrip("/") if under else "<elsewhere>"
    return value


def _interfaces(card: dict[str, Any]) -> list[tuple[str, Any]]:
    """(binding, url) of the card's interfaces, 1.0 list and 0.3 fields."""
    out = [(i.get("protocolBinding"), i.get("url")) for i in card.get("supportedInterfaces", [])]
    if "url" in card:
        out.append((card.get("preferredTransport", JSONRPC), card["url"]))
        out.extend((i.get("transport"), i.get("url")) for i in card.get("additionalInterfaces", []))
    return out


@scenario("agent-card", CARD)
async def agent_card(side: Side, wire: Wire, c: Checks) -> Any:
    r = await get_card(side, wire)
    card = json_of(r)
    c.must(r.status_code == 200 and isinstance(card, dict), "the agent card MUST be available as a JSON object")
    card = card if isinstance(card, dict) else {}
    for name, kind in (("name", str), ("description", str), ("version", str), ("capabilities", dict),
                       ("defaultInputModes", list), ("defaultOutputModes", list), ("skills", list)):
        c.must(isinstance(card.get(name), kind), f"the card MUST have {name} ({kind.__name__})")
    c.must(all(isinstance(card.get(k), str) and card[k].strip() for k in ("name", "description", "version")),
           "name, description and version MUST NOT be empty")
    skills = card.get("skills") or []
    c.must(skills and all(isinstance(s, dict) and all(s.get(k) is not None for k in ("id", "name", "description", "tags"))
                          for s in skills), "skills MUST be a non-empty list of skills with id, name, description, tags")
    modes = [*card.get("defaultInputModes", []), *card.get("defaultOutputModes", [])]
    c.must(all(isinstance(m, str) and m.strip() for m in modes), "input and output modes MUST be non-empty strings")
    mine = [url for binding, url in _interfaces(card) if binding == wire.binding]
    c.must(mine, f"the card MUST list the {wire.binding} interface")
    c.must(all(isinstance(u, str) and (u.rstrip("/") == side.base or u.startswith(side.base + "/"))
               for _, u in _interfaces(card)), "every interface MUST point at the address the card was served from")
    return _relative(card, side.base)


# --- Authentication ----------------------------------------------------------------------------

@scenario("auth-declared", AUTH)
async def auth_declared(side: Side, wire: Wire, c: Checks) -> Any:
    card = json_of(await get_card(side, wire)) or {}
    schemes = card.get("securitySchemes") or {}
    known = {"apiKeySecurityScheme", "httpAuthSecurityScheme", "oauth2SecurityScheme", "openIdConnectSecurityScheme",
             "mtlsSecurityScheme"}
    c.must(schemes, "the card MUST declare the scheme the agent enforces (else the TCK has nothing to check)")
    for scheme in schemes.values():
        c.must(len(scheme) == 1 and next(iter(scheme)) in known, SCHEMES)
        http = scheme.get("httpAuthSecurityScheme")
        c.must(http is None or str(http.get("scheme", "")).lower() in ("basic", "bearer", "digest"),
               "an HTTP auth scheme MUST be basic, bearer or digest")
    return {"securitySchemes": schemes, "securityRequirements": card.get("securityRequirements")}


def _calls(side: Side) -> int:
    """How many calls (not card fetches, which are sidegate's own) reached the agent."""
    return sum(1 for _, path, _ in side.server.requests if not path.endswith(".json"))


@scenario("auth-enforced", AUTH)
async def auth_enforced(side: Side, wire: Wire, c: Checks) -> Any:
    before = _calls(side)
    answers = {}
    for case, key in (("missing", None), ("invalid", "invalid-dummy-jwt-token-12345")):
        if wire.binding == REST:
            r = await call_rest(side, wire, "GET", "/tasks/t-unknown", key=key, auth=key is not None)
        else:
            body = rpc_request(wire.method("get"), {"id": "t-unknown"}, rpc_id=case)
            r = await post_rpc(side, wire, body, key=key, auth=key is not None)
        c.must(r.status_code in (401, 403), f"a request with {case} credentials MUST be refused with 401 or 403")
        answers[case] = r.status_code
        if side.gateway:  # sidegate refuses it itself, in the client's dialect, and nothing reaches the agent
            body = json_of(r) or {}
            dialect = (body.get("error", {}).get("status") == "UNAUTHENTICATED" and "jsonrpc" not in body
                       if wire.binding == REST else body.get("jsonrpc") == "2.0" and body.get("id") == case)
            c.must(dialect, "sidegate's refusal MUST be in the binding's error format")
    if side.gateway:
        c.must(_calls(side) == before, "a refused request MUST NOT reach the agent")
    return answers


@pytest.mark.parametrize(("case", "wire"), [pytest.param(c, w, id=f"{c.name}-{w.id}") for c in CASES for w in c.wires])
async def test_scenario(case: Case, wire: Wire, world: World) -> None:
    direct, through = Checks(), Checks()
    with trio.fail_after(10):
        baseline = await case.run(world.side(wire, gateway=False), wire, direct)
        relayed = await case.run(world.side(wire, gateway=True), wire, through)
    assert direct.failed == BASELINE_DEVIATIONS.get((case.name, wire.id), []), f"the agent itself ({case.source}): {baseline}"
    assert through.failed == direct.failed, f"through sidegate ({case.source}): {relayed}"
    assert relayed == baseline, f"sidegate's answer differs from the agent's ({case.source})"
