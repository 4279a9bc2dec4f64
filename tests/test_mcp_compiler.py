"""The `mcp` spec section through the compiler: lowering, plan JSON round trip, diagnostics."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis_jsonschema import from_schema

from sidegate.compiler.pipeline import compile_text
from sidegate.compiler.schemafile import load_schema
from sidegate.runtime.plan import McpStart, McpTransport, SecretSource
from sidegate.runtime.plan.canonical import dumps, loads
from tests.test_a2a_units import strip
from tests.test_compiler_properties import SETTINGS, _consistent_mcp, to_yaml  # adapts hypothesis-jsonschema

HEAD = "version: 1\nproviders: {fake: {type: mock}}\nmodels: {demo: {targets: [{provider: fake, model: demo}]}}\n"

GOOD = HEAD + """
auth:
  master_key: ${MASTER}
  keys:
    - {name: ci, key: "${CI}", team: platform, mcp: {allow: ["gh::*"], deny: ["gh::delete_*"]}}
teams:
  platform: {mcp: {deny: ["files::*"]}}
mcp:
  separator: "::"
  servers:
    gh:
      url: http://127.0.0.1:9000/mcp
      auth: {header: X-Api-Key, key: {env: GH_KEY}}
      headers: {X-Tenant: a}
      timeout: 5s
      max_concurrency: 3
    tickets:
      url: http://127.0.0.1:9100/sse
      transport: sse
      auth: {oauth: {token_url: "http://127.0.0.1:9200/token", client_id: me, client_secret: "${T_SECRET}"}}
    files:
      command: [python, -m, files]
      env: {ROOT: /data}
"""


def codes(text: str) -> list[tuple[str, str]]:
    result = compile_text(text, "spec.yaml")
    return [(d.code, d.pointer) for d in result.diagnostics if d.is_error]


def test_mcp_section_lowers_and_round_trips() -> None:
    result = compile_text(GOOD, "spec.yaml")
    assert result.plan is not None, [d.format_text() for d in result.diagnostics]
    plan = result.plan
    assert loads(dumps(plan)) == plan
    assert plan.mcp is not None and plan.mcp.separator == "::"
    files, gh, tickets = plan.mcp.servers
    assert (files.transport, files.command, files.start, files.timeout) == (
        McpTransport.STDIO, ("python", "-m", "files"), McpStart.LAZY, 30.0)
    assert [(h.name, h.value.describe()) for h in gh.headers] == [("X-Tenant", "a"), ("X-Api-Key", "${GH_KEY}")]
    assert (gh.transport, gh.timeout, gh.max_concurrency, gh.oauth) == (McpTransport.STREAMABLE_HTTP, 5.0, 3, None)
    assert tickets.transport is McpTransport.SSE and tickets.oauth is not None
    assert tickets.oauth.client_secret.parts[0].source is SecretSource.ENV
    assert plan.auth is not None and plan.auth.keys[0].mcp is not None
    assert plan.auth.keys[0].mcp.allow == ("gh::*",)
    assert plan.teams[0].mcp is not None and plan.teams[0].mcp.allow is None
    assert "T_SECRET" in dumps(plan)  # the reference, never a value


def test_permissions_must_name_declared_servers() -> None:
    text = GOOD.replace('deny: ["gh::delete_*"]', 'deny: ["ghub::delete_*", "*::x"]')
    assert codes(text) == [("ref.unknown-mcp-server", "/auth/keys/0/mcp/deny/0")]
    no_section = HEAD + "teams:\n  t: {mcp: {allow: [github__x]}}\n"
    assert codes(no_section) == [("ref.unknown-mcp-server", "/teams/t/mcp/allow/0")]


def test_transport_auth_and_names_are_checked() -> None:
    base = HEAD + "mcp:\n  servers:\n"
    assert codes(base + "    a: {url: 'http://x/mcp', transport: stdio}\n") == [("mcp.transport", "/mcp/servers/a")]
    assert codes(base + "    a: {command: [x], transport: sse}\n") == [("mcp.transport", "/mcp/servers/a")]
    assert codes(base + "    a: {command: [x], auth: {bearer: '${T}'}}\n") == [("mcp.stdio-auth", "/mcp/servers/a/auth")]
    assert codes(base + "    a: {url: 'http://x/mcp', auth: {bearer: literal-token}}\n") == [
        ("secret.literal", "/mcp/servers/a/auth/bearer")]
    assert codes(HEAD + "mcp:\n  separator: '-'\n  servers:\n    my-files: {command: [x]}\n") == [
        ("mcp.server-name", "/mcp/servers/my-files")]
    both = codes(base + "    a: {url: 'http://x/mcp', command: [x]}\n")
    assert both and all(code.startswith("schema") for code, _ in both)


def _mcp_schema() -> dict[str, Any]:
    """The schema's `mcp` section alone with the definitions it uses (at most 2 servers): drawn
    apart from the whole-spec property test, which is many times slower with it."""
    schema = load_schema()
    defs = {k: schema["$defs"][k] for k in ("mcp_server", "secret", "duration")}
    section = strip({"$defs": defs, **schema["properties"]["mcp"]})
    section["properties"]["servers"]["maxProperties"] = 2
    return section


@settings(SETTINGS, max_examples=25)
@given(from_schema(_mcp_schema()))
def test_any_schema_valid_mcp_section_compiles_cleanly_once_consistent(section: dict[str, Any]) -> None:
    spec = {"version": 1, "providers": {"fake": {"type": "mock"}},
            "models": {"demo": {"targets": [{"provider": "fake", "model": "demo"}]}}, "mcp": section}
    _consistent_mcp(spec)
    result = compile_text(to_yaml(spec), "generated.yaml")
    assert [d for d in result.diagnostics if d.is_error] == [], result.diagnostics
    assert result.plan is not None and result.plan.mcp is not None and loads(dumps(result.plan)) == result.plan
    assert {s.name for s in result.plan.mcp.servers} == set(section["servers"])
