"""A2A pieces on their own: card validation and rewriting in both shapes, mounts, permissions,
and the README's `a2a` example compiling clean."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis_jsonschema import from_schema

from sidegate.compiler.pipeline import compile_text
from sidegate.compiler.schemafile import load_schema
from sidegate.runtime.a2a.card import CardError, parse_card, rewrite_card
from sidegate.runtime.a2a.permissions import allowed, policy_from_metadata
from sidegate.runtime.governance.keys import Grant
from sidegate.runtime.http.a2a_endpoint import _card_rewriter
from sidegate.runtime.plan import A2APolicy
from sidegate.runtime.plan.canonical import dumps, loads
from tests.test_compiler_properties import ANNOTATIONS, SETTINGS, to_yaml  # the import adapts hypothesis-jsonschema

UP = "http://10.0.0.7:9000"
PUBLIC = "http://127.0.0.1:4000/a2a/helper"


def card(**fields: object) -> bytes:
    return orjson.dumps({"name": "helper", "skills": [{"id": "s", "name": "S", "examples": ["x"]}], **fields})


def test_a_0_3_card_is_rewritten_and_grpc_dropped() -> None:
    parsed = parse_card(card(url=f"{UP}/grpc", preferredTransport="GRPC", protocolVersion="0.3.0",
                             additionalInterfaces=[{"url": f"{UP}/grpc", "transport": "GRPC"},
                                                   {"url": f"{UP}/rpc", "transport": "JSONRPC"},
                                                   {"url": f"{UP}/api", "transport": "HTTP+JSON"}],
                             signatures=[{"protected": "x", "signature": "y"}]))
    out = rewrite_card(parsed, PUBLIC)
    assert out["url"] == PUBLIC and out["preferredTransport"] == "JSONRPC"
    assert out["additionalInterfaces"] == [{"url": PUBLIC, "transport": "JSONRPC"},
                                           {"url": PUBLIC + "/rest", "transport": "HTTP+JSON"}]
    assert "signatures" not in out and UP not in orjson.dumps(out).decode()
    assert parsed.summary()["skills"] == [{"id": "s", "name": "S"}]


def test_a_card_listing_grpc_as_host_port_is_served_without_it() -> None:
    # As the A2A TCK's reference SUTs list it: gRPC at `127.0.0.1:<port>`, no scheme, in both shapes.
    parsed = parse_card(card(
        url=f"{UP}/rpc", preferredTransport="JSONRPC", protocolVersion="0.3.0",
        additionalInterfaces=[{"url": "127.0.0.1:50051", "transport": "GRPC"},
                              {"url": f"{UP}/api", "transport": "HTTP+JSON"}],
        supportedInterfaces=[{"url": f"{UP}/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
                             {"url": "127.0.0.1:50051", "protocolBinding": "GRPC", "protocolVersion": "1.0"},
                             {"url": None, "protocolBinding": "x-custom"}]))
    out = rewrite_card(parsed, PUBLIC)
    assert [i["protocolBinding"] for i in out["supportedInterfaces"]] == ["JSONRPC"]
    assert out["additionalInterfaces"] == [{"url": PUBLIC + "/rest", "transport": "HTTP+JSON"}]
    assert "50051" not in orjson.dumps(out).decode() and UP not in orjson.dumps(out).decode()
    with pytest.raises(CardError, match=re.escape("no JSON-RPC or HTTP+JSON")):
        parse_card(card(supportedInterfaces=[{"url": "127.0.0.1:50051", "protocolBinding": "GRPC"}]))


def test_a_1_0_card_with_several_interfaces_gets_one_mount_each() -> None:
    parsed = parse_card(card(supportedInterfaces=[
        {"url": f"{UP}/a", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
        {"url": f"{UP}/b", "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
        {"url": f"{UP}/r", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0", "tenant": "t1"},
        {"url": f"{UP}/g", "protocolBinding": "GRPC", "protocolVersion": "1.0"},
    ]))
    out = rewrite_card(parsed, PUBLIC)
    assert [(i["protocolBinding"], i["url"]) for i in out["supportedInterfaces"]] == [
        ("JSONRPC", PUBLIC), ("JSONRPC", PUBLIC + "/jsonrpc-2"), ("HTTP+JSON", PUBLIC + "/rest")]
    assert out["supportedInterfaces"][2]["tenant"] == "t1"
    mount = parsed.mount
    assert [mount(t).upstream if mount(t) else None for t in ("", "/", "/jsonrpc-2", "/rest/tasks/1", "/restx")] == [
        f"{UP}/a", f"{UP}/a", f"{UP}/b", f"{UP}/r", None]


def test_the_card_inside_an_extended_card_answer_is_rewritten_too() -> None:
    base = parse_card(card(supportedInterfaces=[{"url": f"{UP}/a", "protocolBinding": "JSONRPC"}]))
    extended = {"name": "helper+", "supportedInterfaces": [{"url": f"{UP}/a", "protocolBinding": "JSONRPC"},
                                                          {"url": f"{UP}/secret", "protocolBinding": "JSONRPC"}],
                "url": f"{UP}/a", "skills": [{"id": "private"}]}
    rewrite = _card_rewriter(base, PUBLIC, rpc=True)
    out = orjson.loads(rewrite(orjson.dumps({"jsonrpc": "2.0", "id": 3, "result": extended})))
    assert out["id"] == 3 and out["result"]["skills"] == [{"id": "private"}]
    assert out["result"]["supportedInterfaces"] == [{"url": PUBLIC, "protocolBinding": "JSONRPC"}]
    assert out["result"]["url"] == PUBLIC and UP not in orjson.dumps(out).decode()
    broken = orjson.loads(_card_rewriter(base, PUBLIC, rpc=False)(orjson.dumps({"url": "ftp://x"})))
    assert broken == {}  # nothing sidegate can point at itself: no address is kept


@pytest.mark.parametrize(("raw", "reason"), [
    (b"<html>", "not JSON"),
    (b"[]", "JSON object"),
    (orjson.dumps({"supportedInterfaces": []}), "name"),
    (card(), "names no interface"),
    (card(supportedInterfaces=[{"url": f"{UP}/g", "protocolBinding": "GRPC"}]), "no JSON-RPC or HTTP+JSON"),
    (card(url="file:///etc/passwd"), "http(s) URL"),
    (card(supportedInterfaces=[{"url": f"{UP}/a"}]), "protocolBinding"),
    (card(url=f"{UP}/a", skills="many"), "skills"),
])
def test_invalid_cards_say_what_is_wrong(raw: bytes, reason: str) -> None:
    with pytest.raises(CardError, match=re.escape(reason)):
        parse_card(raw)


def test_permissions_combine_key_and_team_policies() -> None:
    teams = {"research": A2APolicy(allow=("research*",), deny=())}
    key = Grant(hash="h", name="k", team="research", metadata={"a2a": {"deny": ["research-admin"]}})
    assert allowed(key, "researcher", teams) and not allowed(key, "research-admin", teams)
    assert not allowed(key, "planner", teams)  # the team's allow list
    assert allowed(Grant(hash="m", name="master", master=True, team="research"), "planner", teams)
    assert allowed(None, "anything", teams)  # no auth section
    assert allowed(Grant(hash="h", name="free"), "planner", teams)  # no policy at all
    assert policy_from_metadata({"allow": "echo"}) == A2APolicy(allow=(), deny=("*",))
    assert not allowed(Grant(hash="h", name="bad", metadata={"a2a": ["echo"]}), "echo", teams)


def test_the_readme_a2a_example_compiles_clean() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## A2A gateway", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    spec = ("version: 1\nproviders: {fake: {type: mock}}\nmodels: {demo: {targets: [{provider: fake, model: demo}]}}\n"
            + block)
    result = compile_text(spec, "readme-a2a.yaml")
    assert result.diagnostics == () and result.plan is not None and result.plan.a2a is not None
    assert [a.name for a in result.plan.a2a.agents] == ["planner", "researcher"]


def strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k not in ANNOTATIONS}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def _a2a_schema() -> dict[str, Any]:
    """The schema's `a2a` section alone with the definitions it uses, annotations stripped, at most
    2 agents (hypothesis-jsonschema draws from a small schema many times faster)."""
    schema = load_schema()
    defs = {k: schema["$defs"][k] for k in ("a2a_agent", "secret", "duration")}
    section = strip({"$defs": defs, **schema["properties"]["a2a"]})
    section["properties"]["agents"]["maxProperties"] = 2
    return section


@settings(SETTINGS, max_examples=25)
@given(from_schema(_a2a_schema()))
def test_any_schema_valid_a2a_section_compiles_or_diagnoses(section: dict[str, Any]) -> None:
    spec = {"version": 1, "providers": {"fake": {"type": "mock"}},
            "models": {"demo": {"targets": [{"provider": "fake", "model": "demo"}]}}, "a2a": section}
    result = compile_text(to_yaml(spec), "generated.yaml")
    codes = {d.code for d in result.diagnostics}
    assert codes <= {"secret.literal", "a2a.reserved-name", "secret.bad-reference", "schema.pattern",
                     "secret.url-credentials"}, result.diagnostics
    if result.plan is not None:
        assert result.plan.a2a is not None and loads(dumps(result.plan)) == result.plan
        assert {a.name for a in result.plan.a2a.agents} == set(section["agents"])
