"""Properties over specs generated from the schema itself (hypothesis + hypothesis-jsonschema).

- any schema-valid spec, dumped to YAML, compiles or yields diagnostics, never an exception;
- a consistent spec (targets name declared providers, ...) compiles, its plan round-trips through
  JSON, and the plan bytes do not depend on the order of mapping keys in the spec.
"""

from __future__ import annotations

import copy
import io
import random
import re
from collections.abc import Iterator
from typing import Any

import hypothesis_jsonschema._from_schema as hjs_internals
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import utils as conjecture_utils
from hypothesis_jsonschema import from_schema
from ruamel.yaml import YAML
from ruamel.yaml.representer import SafeRepresenter

from sidegate.compiler.credentials import CREDENTIAL_HEADERS
from sidegate.compiler.pipeline import compile_text
from sidegate.compiler.schemafile import load_schema
from sidegate.runtime.observe.scrub import Scrubber
from sidegate.runtime.plan.canonical import dumps, loads


class _CompatMany:
    """hypothesis-jsonschema 0.23 drives `many` with the old `more()`/`reject()` protocol, which
    newer Hypothesis replaced by `with many(...) as e: for _ in e:`; this adapts one to the other."""

    def __init__(self, data: Any, **kwargs: Any) -> None:
        self._inner = conjecture_utils.many(data, **kwargs)
        self._elements: Iterator[None] | None = None

    def more(self) -> bool:
        if self._elements is None:
            self._inner.__enter__()
            self._elements = iter(self._inner)
        if next(self._elements, False) is None:
            return True
        self._inner.__exit__(None, None, None)
        return False

    def reject(self, why: str | None = None) -> None:
        self._inner.reject(why)


class _ConjectureUtils:
    many = _CompatMany

    def __getattr__(self, name: str) -> Any:
        return getattr(conjecture_utils, name)


if not hasattr(conjecture_utils.many, "more"):
    hjs_internals.cu = _ConjectureUtils()  # type: ignore[assignment]


def _memoized(build: Any) -> Any:
    """hypothesis-jsonschema builds the strategy of an object's value while drawing it: each key of
    each example re-resolves `$ref`s (a deep copy of the subschema) and re-canonicalises it, which
    is nearly all the time of the schema property tests. The strategy is a pure function of the
    subschema's content (and the alphabet and formats of the `from_schema` call), so it is built
    once per distinct subschema: the same strategies, drawing the same values (checked: the same
    examples for the same seed), without the rework. Sharing a strategy shares no drawn value a test
    could mutate: the schema's enums and consts are scalars."""
    cache: dict[tuple[str, int, int], Any] = {}

    def cached(schemas: Any, *, alphabet: Any, custom_formats: Any) -> Any:
        parts = schemas if isinstance(schemas, list) else [schemas]
        key = ("\0".join(hjs_internals.encode_canonical_json(s) for s in parts), id(alphabet), id(custom_formats))
        if key not in cache:
            cache[key] = (build(schemas, alphabet=alphabet, custom_formats=custom_formats), alphabet, custom_formats)
        return cache[key][0]  # the entry keeps alphabet and formats alive, so their ids stay theirs

    return cached


for _builder in ("__from_schema", "merged_as_strategies"):  # module globals: the draws look them up by name
    setattr(hjs_internals, _builder, _memoized(getattr(hjs_internals, _builder)))

ANNOTATIONS = {"description", "examples", "default", "title", "$id", "$schema"}


def generation_schema() -> dict[str, Any]:
    """The gateway schema without annotations and with small collections: the same language, but
    hypothesis-jsonschema draws from it many times faster (it canonicalises each subschema)."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in ANNOTATIONS}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    schema: dict[str, Any] = strip(copy.deepcopy(load_schema()))
    defs = schema["$defs"]
    # Sections with their own golden and end-to-end tests are left out here: each one multiplies
    # the drawing time of hypothesis-jsonschema.
    schema["properties"].pop("deploy", None)
    schema["properties"]["auth"]["properties"].pop("jwt", None)
    schema["properties"]["auth"]["properties"]["keys"]["maxItems"] = 2
    schema["properties"]["teams"]["maxProperties"] = 2
    schema["properties"]["providers"]["maxProperties"] = 3
    schema["properties"]["models"]["maxProperties"] = 3
    schema["properties"].pop("a2a", None)
    schema["properties"].pop("mcp", None)  # its own section test: tests/test_mcp_compiler.py
    schema["properties"].pop("realtime", None)  # its own: golden specs realtime*.yaml, tests/test_realtime.py
    schema["properties"]["observability"]["properties"].pop("tracing")  # its own: tests/test_tracing_spec.py
    schema["properties"].pop("cache", None)  # its own tests: tests/test_cache_spec.py
    schema["properties"]["store"]["properties"].pop("archive")  # its own: tests/test_store_archive*.py, golden
    defs["model_group"]["properties"].pop("cache")
    schema["properties"].pop("guardrails", None)  # its own tests: tests/test_guardrails*.py, golden specs
    schema["properties"].pop("files", None)  # its own tests: tests/test_files_spec.py, tests/test_files_batches.py
    schema["properties"].pop("passthrough", None)  # its own tests: tests/test_passthrough*.py, golden specs
    defs["model_group"]["properties"].pop("guardrails")
    defs["static_key"]["properties"].pop("guardrails")
    schema["properties"]["teams"]["additionalProperties"]["properties"].pop("guardrails")
    for field in ("price", "base_model"):  # their own tests: tests/test_spec_prices.py (hypothesis too)
        defs["target"]["properties"].pop(field)
    defs["model_group"]["properties"]["targets"]["maxItems"] = 3
    defs["model_group"]["properties"]["aliases"]["maxItems"] = 2
    for holder in (defs["provider"], defs["target"]):
        holder["properties"]["headers"]["maxProperties"] = 2
    scalars = {"type": ["string", "integer", "boolean", "null"]}
    defs["target"]["properties"]["extra_body"].update(
        {
            "maxProperties": 2,
            "additionalProperties": {"anyOf": [scalars, {"type": "array", "items": scalars, "maxItems": 2}]},
        }
    )
    return schema


SPECS = from_schema(generation_schema())
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MOCK_ONLY = ("text", "latency", "latency_per_token", "error_rate", "error_status", "seed", "embedding_dimensions")
NATIVE_ONLY = ("region", "project", "credentials", "aws_profile", "drop_unsupported")


class _QuotingRepresenter(SafeRepresenter):
    """Double-quotes every string: ruamel's emitter writes some strings plain (`?dE`, long keys
    folded across lines) that neither YAML parser reads back, which would test the emitter."""

    def represent_str(self, data: str) -> Any:
        return self.represent_scalar("tag:yaml.org,2002:str", data, style='"')


_QuotingRepresenter.add_representer(str, _QuotingRepresenter.represent_str)


def to_yaml(data: Any) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.Representer = _QuotingRepresenter
    yaml.width = 1 << 20
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def shuffled(data: Any, rng: random.Random) -> Any:
    """The same data with every mapping's keys in another order (lists keep theirs)."""
    if isinstance(data, dict):
        keys = list(data)
        rng.shuffle(keys)
        return {k: shuffled(data[k], rng) for k in keys}
    if isinstance(data, list):
        return [shuffled(v, rng) for v in data]
    return data


def _clean_secret(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$", "$$")  # literal text; never a malformed reference
    return value


_URL_FIELDS = {"base_url", "url", "card_url", "token_url", "jwks_url", "database", "redis"}
_QUERY_CREDENTIAL = re.compile(r"(?i)([?&](?:key|api_key|apikey|api-key|token|access_token|password|secret|sig|"
                               r"signature|client_secret)=)[^&#]*")


def _no_literal_credentials(node: Any) -> Any:
    """Credentials the lint refuses (URL user parts and query keys, credential headers) made references."""
    if isinstance(node, list):
        return [_no_literal_credentials(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _URL_FIELDS and isinstance(value, str) and "://" in value:
            value = _QUERY_CREDENTIAL.sub(r"\1${Q}", re.sub(r"://[^/?#]*@", "://", value))
            if key == "base_url" and not re.fullmatch(r"https?://[^\s]+[^/\s]", value):
                value = "http://127.0.0.1:8000/v1"  # nothing left of it once the user part went
        elif key == "headers" and isinstance(value, dict):
            value = {h: {"env": "HDR"} if credential_header(h) or Scrubber().text(str(v)) != str(v) else v
                     for h, v in value.items()}
        out[key] = _no_literal_credentials(value)
    return out


def credential_header(name: str) -> bool:
    return name.lower() in CREDENTIAL_HEADERS or re.search(
        r"key|token|secret|passw|auth|cookie|credential|signature", name, re.I) is not None


def make_consistent(spec: dict[str, Any], types: list[str]) -> dict[str, Any]:
    """Repair the cross-references a schema cannot express, so the spec should compile cleanly."""
    providers = spec.setdefault("providers", {}) or {"p0": {"type": "mock"}}
    spec["providers"] = providers
    for i, (name, p) in enumerate(sorted(providers.items())):
        p["type"] = kind = types[i % len(types)]
        if kind != "mock":
            for field in MOCK_ONLY:
                p.pop(field, None)
        for field in NATIVE_ONLY:  # TYPES holds no native type
            p.pop(field, None)
        if kind == "azure":
            p.setdefault("api_version", "2024-10-21")
            p.setdefault("base_url", "https://x.openai.azure.com")
        else:
            p.pop("api_version", None)
        if kind == "openai-compatible":
            p.setdefault("base_url", "http://127.0.0.1:8000/v1")
        p["api_key"] = {"env": f"KEY_{i}"} if kind in ("openai", "azure") else p.get("api_key", {"env": "K"})
        if isinstance(p["api_key"], str):
            p["api_key"] = {"env": "K"}
        for header, value in p.get("headers", {}).items():
            p["headers"][header] = _clean_secret(value)
        del name
    names = sorted(providers)
    # A glob's `**` is an error (it means `*`): collapse it (the first group of a collapsed name wins).
    models: dict[str, Any] = {}
    for group_name, group in spec["models"].items():
        models.setdefault(re.sub(r"\*{2,}", "*", group_name), group)
    spec["models"] = models
    taken = set(spec["models"])
    for g_index, (group_name, group) in enumerate(sorted(spec["models"].items())):
        wildcard = "*" in group_name  # `prefix/*` or a glob: no aliases, may forward the name
        aliases = [a for a in group.get("aliases", []) if a not in taken and not wildcard]
        taken.update(aliases)
        group["aliases"] = aliases
        seen: set[tuple[str, str]] = set()
        for t_index, target in enumerate(group["targets"]):
            target["provider"] = names[(g_index + t_index) % len(names)]
            if target["model"] == "*" and not wildcard:
                target["model"] = "m"
            if (target["provider"], target["model"]) in seen:
                target["model"] = f"{target['model']}-{t_index}"
            seen.add((target["provider"], target["model"]))
            for header, value in target.get("headers", {}).items():
                target["headers"][header] = _clean_secret(value)
    # Fallbacks only point "forward" in name order, at non-wildcard groups: never a cycle.
    ordered = sorted(n for n in spec["models"] if "*" not in n)
    for group_name, group in spec["models"].items():
        later = [n for n in ordered if n > group_name]
        for kind in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
            if kind in group:
                group[kind] = later[: len(group[kind])]
    # Governance: references point at declared teams; keys are env references with unique names.
    for team in spec.get("teams", {}).values():
        team.pop("models", None)
    team_names = sorted(spec.get("teams", {}))
    if "auth" in spec:
        if "master_key" in spec["auth"]:
            spec["auth"]["master_key"] = {"env": "MASTER"}
        for i, k in enumerate(spec["auth"].get("keys", [])):
            k["name"], k["key"] = f"key{i}", {"env": f"KEY{i}"}
            k.pop("models", None)
            if team_names:
                k["team"] = team_names[i % len(team_names)]
            else:
                k.pop("team", None)
    _consistent_mcp(spec)
    used = {t["provider"] for g in spec["models"].values() for t in g["targets"]}
    spec["providers"] = {n: p for n, p in providers.items() if n in used}
    listen = spec.get("server", {}).get("listen", "")
    port = listen.rsplit(":", 1)[-1]
    if listen.startswith("[") or (port.isdigit() and int(port) > 65535):  # a `${VAR}` port is read at start
        spec["server"]["listen"] = "127.0.0.1:4000"
    health = spec.get("server", {}).get("health_listen")
    if health is not None:
        health_port = int(health.rsplit(":", 1)[-1])
        api_port = spec["server"].get("listen", "127.0.0.1:4000").rsplit(":", 1)[-1]
        if health_port > 65535 or str(health_port) == api_port.lstrip("0") or health.startswith("["):
            del spec["server"]["health_listen"]  # a port of its own, in range
    database = spec.get("store", {}).get("database")
    if isinstance(database, str) and not re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", database):
        spec["store"]["database"] = _clean_secret(database)  # a whole-URL reference stays one
    if "redis" in spec.get("store", {}):
        spec["store"]["redis"] = {"env": "REDIS_URL"}  # a literal must be a redis:// URL
    if "redis_sync" in spec.get("store", {}):
        spec["store"]["redis_sync"] = "250ms"  # the compiler checks the 50ms..10s range
    for limit in ("max_upstream_event", "max_upstream_answer"):
        if limit in spec.get("server", {}):
            spec["server"][limit] = "1MiB"  # the compiler checks they are at least 1KiB
    return _no_literal_credentials(spec)


def _has_credentials(url: str) -> bool:
    """Whether the compiler could read credentials in `url` (a user part, or a query that may name a
    key): such a URL is refused, so a consistent spec does not have one."""
    return "@" in url or "?" in url


def _consistent_mcp(spec: dict[str, Any]) -> None:
    """MCP: credentials are references, the transport matches url/command, names avoid the
    separator, and permission patterns name declared servers."""
    mcp = spec.get("mcp")
    servers = sorted(mcp["servers"]) if mcp else []
    if mcp:
        sep = mcp.get("separator", "__")
        if any(sep in name for name in servers):
            mcp["separator"] = "__"
        for server in mcp["servers"].values():
            server.pop("transport", None)
            for field in ("headers", "env"):
                for name, value in server.get(field, {}).items():
                    server[field][name] = _clean_secret(value)
            if "url" in server and _has_credentials(server["url"]):
                server["url"] = "http://mcp.internal/mcp"  # credentials in a URL are refused (secret.url-credentials)
            if "command" in server:
                server.pop("auth", None)
            elif "auth" in server:
                server["auth"] = {"bearer": {"env": "MCP_TOKEN"}}
    rules = [k for k in spec.get("auth", {}).get("keys", [])] + list(spec.get("teams", {}).values())
    for holder in rules:
        if "mcp" in holder:
            if servers:
                holder["mcp"] = {"allow": [f"{servers[0]}{spec['mcp'].get('separator', '__')}*"], "deny": ["*x*"]}
            else:
                holder.pop("mcp")


@SETTINGS
@given(SPECS)
def test_any_schema_valid_spec_compiles_or_diagnoses(spec: dict[str, Any]) -> None:
    result = compile_text(to_yaml(spec), "generated.yaml")
    assert all(d.file == "generated.yaml" and d.line >= 1 and d.column >= 1 for d in result.diagnostics)
    if result.plan is not None:
        assert loads(dumps(result.plan)) == result.plan


TYPES = st.lists(st.sampled_from(["mock", "openai", "azure", "openai-compatible", "groq", "ollama"]), min_size=1)


@SETTINGS
@given(SPECS, TYPES, st.randoms(use_true_random=False))
def test_consistent_specs_compile_round_trip_and_ignore_key_order(
    spec: dict[str, Any], types: list[str], rng: random.Random
) -> None:
    spec = make_consistent(spec, types)
    text = to_yaml(spec)
    result = compile_text(text, "generated.yaml")
    errors = [d.format_text() for d in result.diagnostics if d.is_error]
    assert errors == [], text
    assert result.plan is not None
    plan_json = dumps(result.plan)
    assert loads(plan_json) == result.plan
    assert dumps(compile_text(text, "again.yaml").plan) == plan_json  # type: ignore[arg-type]
    reordered = compile_text(to_yaml(shuffled(spec, rng)), "reordered.yaml")
    assert reordered.plan is not None
    assert dumps(reordered.plan) == plan_json
