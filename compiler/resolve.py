"""Resolve phase: turn the validated spec's leaves into typed values and look names up in the catalogs.

Durations become seconds, sizes bytes, secret strings references (``${NAME}`` parts), provider
types catalog entries and upstream models price-table entries. The result is a small typed
intermediate form that the check phase inspects and the lower phase assembles into the plan.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sidegate.compiler.data.catalog import ProviderType, load_catalog
from sidegate.compiler.data.prices import ModelInfo, known_models
from sidegate.compiler.diagnostics import Collector, did_you_mean, join_pointer
from sidegate.compiler.sections import routing
from sidegate.compiler.sections.a2a import resolve_a2a
from sidegate.compiler.sections.archive import resolve_store
from sidegate.compiler.sections.cache import CacheSpec, resolve_cache
from sidegate.compiler.sections.files import resolve_files
from sidegate.compiler.sections.governance import GovernanceSpec, resolve_governance
from sidegate.compiler.sections.guardrails import resolve_guardrails
from sidegate.compiler.sections.mcp import resolve_mcp
from sidegate.compiler.sections.observability import resolve_observability
from sidegate.compiler.sections.passthrough import resolve_passthrough
from sidegate.compiler.sections.pricing import target_price
from sidegate.compiler.sections.realtime import resolve_realtime
from sidegate.compiler.sections.routing import Policies
from sidegate.runtime.plan import (
    A2A,
    Files,
    Header,
    HealthProbe,
    JSONValue,
    Mcp,
    MockBehaviour,
    Observability,
    PassthroughRoute,
    Price,
    PriceSource,
    Realtime,
    Secret,
    SecretPart,
    SecretSource,
    Server,
    Store,
)
from sidegate.runtime.plan.guardrails import Guardrails
from sidegate.runtime.plan.secrets import split_listen

__all__ = [
    "GroupSpec",
    "ProviderSpec",
    "Resolved",
    "TargetSpec",
    "parse_duration",
    "parse_secret_text",
    "parse_size",
    "resolve",
]

MOCK_FIELDS = ("text", "latency", "latency_per_token", "error_rate", "error_status", "seed", "embedding_dimensions")
"""Provider fields that only the `mock` family honours."""

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"([0-9]+)(B|KB|KiB|MB|MiB|GB|GiB)")
_SIZE_UNITS = {"B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2, "GB": 1000**3, "GiB": 1024**3}
_REFERENCE = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REF = r"\$\{[A-Za-z_][A-Za-z0-9_]*\}"
_LISTEN_REF = re.compile(rf"(?:(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+|{_REF}):)?([0-9]+|{_REF})")
_LISTEN = re.compile(r"\[([0-9a-fA-F:]+)\]:([0-9]+)|([A-Za-z0-9.-]+):([0-9]+)")


def parse_duration(text: str) -> float:
    """``250ms``, ``30s``, ``1.5m``, ``1h``, ``1d`` -> seconds."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _optional_duration(text: str | None) -> float | None:
    return None if text is None else parse_duration(text)


def parse_size(text: str) -> int:
    """``512KiB``, ``8MiB``, ``1GB`` -> bytes (KB = 1000, KiB = 1024)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def parse_secret_text(text: str) -> Secret:
    """A string with ``${NAME}`` references (``$$`` is a literal ``$``) -> a secret reference.

    Raises ValueError with a message for a malformed reference.
    """
    parts: list[SecretPart] = []
    buffer: list[str] = []
    start = 0
    for match in _REFERENCE.finditer(text):
        buffer.append(text[start : match.start()])
        start = match.end()
        token = match.group(0)
        if token == "$$":
            buffer.append("$")
            continue
        name = match.group(1)
        if name is None:
            rest = text[match.start() :]
            raise ValueError(f"'{rest}' has no closing '}}' (write '$$' for a literal '$')")
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"'{token}' is not a valid reference (use ${{NAME}} with letters, digits and '_')")
        if any(buffer):
            parts.append(SecretPart(source=SecretSource.TEXT, value="".join(buffer)))
        buffer = []
        parts.append(SecretPart(source=SecretSource.ENV, value=name))
    buffer.append(text[start:])
    if any(buffer):
        parts.append(SecretPart(source=SecretSource.TEXT, value="".join(buffer)))
    return Secret(parts=tuple(parts))


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSpec:
    """A provider with its leaves resolved."""

    name: str
    pointer: str
    type: str
    kind: ProviderType | None
    """The catalog entry; None when the type is unknown (already reported)."""
    fields: Mapping[str, Any]
    """The provider's mapping as written, for the applicability checks."""
    base_url: str | None
    api_key: Secret | None
    api_version: str | None
    headers: tuple[Header, ...]
    connect_timeout: float
    first_byte_timeout: float | None
    idle_timeout: float | None
    mock: MockBehaviour
    health: HealthProbe | None
    region: str | None
    project: str | None
    credentials: Secret | None
    aws_profile: str | None
    drop_unsupported: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetSpec:
    """A model group's target with its leaves resolved."""

    pointer: str
    provider: str
    model: str
    weight: float
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    headers: tuple[Header, ...]
    extra_body: Mapping[str, JSONValue]
    info: ModelInfo | None
    """Context window (and table price) from the price table, when known."""
    tier: int
    capabilities: Mapping[str, bool | int] = field(default_factory=lambda: types.MappingProxyType({}))
    """The spec's `capabilities` overrides (see `compiler.data.capabilities`)."""
    price: Price | None = None
    """The price charged: the target's own, else its base_model's or model's table entry."""
    price_source: PriceSource | None = None
    base_model: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSpec:
    """A model group with its leaves resolved."""

    name: str
    pointer: str
    aliases: tuple[str, ...]
    timeout: float
    """The group's own timeout, or the default one."""
    targets: tuple[TargetSpec, ...]
    policies: Policies
    """Strategy, retries, cooldown, hedging and fallbacks as written (over the defaults)."""
    reserve_output_tokens: int = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    """The resolve phase's result."""

    server: Server
    providers: Mapping[str, ProviderSpec]
    groups: tuple[GroupSpec, ...]
    store: Store
    observability: Observability
    governance: GovernanceSpec
    a2a: A2A | None = None
    mcp: Mcp | None = None
    cache: CacheSpec | None = None
    guardrails: Guardrails | None = None
    realtime: Realtime = field(default_factory=Realtime)
    files: Files = field(default_factory=Files)
    passthrough: tuple[PassthroughRoute, ...] = ()


@functools.lru_cache(maxsize=4096)
def _model_hint(price_provider: str, model: str) -> str:
    # cached: specs often repeat one upstream model across many groups
    return did_you_mean(model, known_models(price_provider))


def _freeze(value: Any) -> JSONValue:
    if isinstance(value, dict):
        return types.MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    result: JSONValue = value
    return result


class _Resolver:
    def __init__(self, out: Collector) -> None:
        self.out = out
        self.catalog = load_catalog()

    def secret(self, value: Any, pointer: str) -> Secret | None:
        """The reference for a secret value; None (reported) when malformed."""
        if isinstance(value, dict):
            if "env" in value:
                return Secret(parts=(SecretPart(source=SecretSource.ENV, value=value["env"]),))
            return Secret(parts=(SecretPart(source=SecretSource.FILE, value=value["file"]),))
        try:
            return parse_secret_text(value)
        except ValueError as exc:
            self.out.error("secret.bad-reference", pointer, str(exc))
            return None

    def _secret(self, value: Any, pointer: str) -> Secret:
        """Like :meth:`secret` where a value is required (an empty one stands in for a reported error)."""
        return self.secret(value, pointer) or Secret(parts=())

    def headers(self, raw: Mapping[str, Any], pointer: str) -> tuple[Header, ...]:
        return tuple(
            Header(name=name, value=self._secret(raw[name], join_pointer(pointer, "headers", name)))
            for name in sorted(raw)
        )

    def server(self, raw: Mapping[str, Any]) -> Server:
        listen = raw.get("listen", "127.0.0.1:4000")
        host, port = "127.0.0.1", 4000
        if "${" in listen:  # resolved at start (`127.0.0.1:${PORT}`): the literal parts and defaults here
            reference = self.secret(listen, "/server/listen")
            literal = _LISTEN_REF.fullmatch(listen)
            if literal is not None and literal.group(1) and "${" not in literal.group(1):
                host = literal.group(1).strip("[]")
            if literal is not None and literal.group(2) and "${" not in literal.group(2):
                port = int(literal.group(2))
            return replace(self._server(raw, host, port), listen=reference)
        match = _LISTEN.fullmatch(listen)
        if match is None:  # the schema's pattern already reported it
            return self._server(raw, host, port)
        host = match.group(1) or match.group(3)
        port = int(match.group(2) or match.group(4))
        if match.group(1):
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                self.out.error("server.bad-listen", "/server/listen", f"'{host}' is not an IPv6 address")
        if port > 65535:
            self.out.error("server.bad-listen", "/server/listen", f"port {port} is out of range (0-65535)")
        return self._server(raw, host, port)

    def _server(self, raw: Mapping[str, Any], host: str, port: int) -> Server:
        for name in ("max_upstream_event", "max_upstream_answer"):
            if name in raw and parse_size(raw[name]) < 1024:
                self.out.error("server.limit-range", f"/server/{name}",
                               f"{name} must be at least 1KiB (every upstream answer longer would fail)")
        health_host, health_port = None, None
        if "health_listen" in raw:
            try:  # the runtime's own parser: the CLI's --health-listen reads addresses the same way
                health_host, health_port = split_listen(raw["health_listen"])
            except ValueError as exc:
                self.out.error("server.bad-listen", "/server/health_listen", str(exc))
            if health_port is not None and health_port == port and port != 0:
                self.out.error("server.bad-listen", "/server/health_listen",
                               "health_listen needs a port of its own, not the API's")
        return Server(
            host=host,
            port=port,
            health_host=health_host,
            health_port=health_port,
            workers=raw.get("workers", 1),
            max_body=parse_size(raw.get("max_body", "8MiB")),
            max_upload=parse_size(raw.get("max_upload", "25MiB")),
            drain_timeout=parse_duration(raw.get("drain_timeout", "20s")),
            max_upstream_event=parse_size(raw.get("max_upstream_event", "1MiB")),
            max_upstream_answer=parse_size(raw.get("max_upstream_answer", "64MiB")),
            body_timeout=parse_duration(raw.get("body_timeout", "30s")),
            keep_alive=parse_duration(raw.get("keep_alive", "75s")),
            max_header_size=parse_size(raw.get("max_header_size", "16KiB")),
            max_json_depth=raw.get("max_json_depth", 64),
            allowed_hosts=tuple(sorted({h.lower() for h in raw.get("allowed_hosts", ())})),
            max_connections=raw.get("max_connections", 1024),
            max_file_size=parse_size(raw.get("max_file_size", "100MiB")),
        )

    def provider(self, name: str, raw: Mapping[str, Any]) -> ProviderSpec:
        pointer = join_pointer("/providers", name)
        kind = self.catalog.get(raw["type"])
        if kind is None:
            hint = did_you_mean(raw["type"], self.catalog) or " (`sidegate providers` lists them)"
            message = f"unknown provider type '{raw['type']}'{hint}"
            self.out.error("ref.unknown-provider-type", pointer + "/type", message)
        api_key = self.reference(raw, "api_key", pointer, "(${ENV}, {env: ...} or {file: ...})")
        credentials = self.reference(
            raw, "credentials", pointer, "to the service-account key's JSON ({file: /path/key.json} or ${ENV})"
        )
        return ProviderSpec(
            name=name,
            pointer=pointer,
            type=raw["type"],
            kind=kind,
            fields=raw,
            base_url=raw.get("base_url"),
            api_key=api_key,
            api_version=raw.get("api_version"),
            headers=self.headers(raw.get("headers", {}), pointer),
            connect_timeout=parse_duration(raw.get("timeouts", {}).get("connect", "10s")),
            first_byte_timeout=_optional_duration(raw.get("timeouts", {}).get("first_byte")),
            idle_timeout=_optional_duration(raw.get("timeouts", {}).get("idle")),
            mock=MockBehaviour(
                text=raw.get("text"),
                latency=parse_duration(raw.get("latency", "0ms")),
                latency_per_token=parse_duration(raw.get("latency_per_token", "0ms")),
                error_rate=float(raw.get("error_rate", 0)),
                error_status=raw.get("error_status", 500),
                seed=raw.get("seed", 0),
                embedding_dimensions=raw.get("embedding_dimensions", 8),
            ),
            health=routing.health(raw.get("health"), parse_duration),
            region=raw.get("region"),
            project=raw.get("project"),
            credentials=credentials,
            aws_profile=raw.get("aws_profile"),
            drop_unsupported=raw.get("drop_unsupported", False),
        )

    def reference(self, raw: Mapping[str, Any], name: str, pointer: str, forms: str) -> Secret | None:
        """A secret field that must not be written literally (it would end up in the plan)."""
        if name not in raw:
            return None
        secret = self.secret(raw[name], f"{pointer}/{name}")
        if secret is not None and all(p.source is SecretSource.TEXT for p in secret.parts):
            self.out.error(
                "secret.literal",
                f"{pointer}/{name}",
                f"{name} must be a reference {forms}; literal secrets would be written into the plan",
            )
        return secret

    def target(
        self, raw: Mapping[str, Any], pointer: str, providers: Mapping[str, ProviderSpec], weight: float
    ) -> TargetSpec:
        model: str = raw["model"]
        provider = providers.get(raw["provider"])
        info, price, source = target_price(raw, provider.kind if provider else None, pointer, self.out, _model_hint)
        return TargetSpec(
            pointer=pointer,
            provider=raw["provider"],
            model=model,
            weight=weight,
            rpm=raw.get("rpm"),
            tpm=raw.get("tpm"),
            max_parallel=raw.get("max_parallel"),
            headers=self.headers(raw.get("headers", {}), pointer),
            extra_body=types.MappingProxyType({k: _freeze(v) for k, v in raw.get("extra_body", {}).items()}),
            info=info,
            tier=raw.get("tier", 0),
            capabilities=types.MappingProxyType(dict(raw.get("capabilities", {}))),
            price=price,
            price_source=source,
            base_model=raw.get("base_model"),
        )

    def group(
        self,
        name: str,
        raw: Mapping[str, Any],
        defaults: Mapping[str, Any],
        providers: Mapping[str, ProviderSpec],
    ) -> GroupSpec:
        pointer = join_pointer("/models", name)
        default_timeout = parse_duration(defaults.get("timeout", "60s"))
        weights = routing.derive_weights(raw["targets"])
        return GroupSpec(
            name=name,
            pointer=pointer,
            aliases=tuple(raw.get("aliases", ())),
            timeout=parse_duration(raw["timeout"]) if "timeout" in raw else default_timeout,
            targets=tuple(
                self.target(t, f"{pointer}/targets/{i}", providers, weights[i]) for i, t in enumerate(raw["targets"])
            ),
            policies=routing.policies(raw, defaults, pointer, parse_duration),
            reserve_output_tokens=raw.get("reserve_output_tokens", defaults.get("reserve_output_tokens", 4096)),
        )


def resolve(spec: Mapping[str, Any], out: Collector) -> Resolved:
    """Resolve a schema-valid ``spec``; problems go to ``out``."""
    r = _Resolver(out)
    providers = {name: r.provider(name, raw) for name, raw in spec.get("providers", {}).items()}
    defaults = spec.get("defaults", {})
    groups = tuple(r.group(name, raw, defaults, providers) for name, raw in spec["models"].items())
    observability = resolve_observability(spec.get("observability", {}), r.secret, parse_duration, out)
    families = {name: p.kind.family if p.kind is not None else None for name, p in providers.items()}
    return Resolved(
        server=r.server(spec.get("server", {})),
        providers=providers,
        groups=groups,
        store=resolve_store(spec, r.secret, r.reference, parse_duration, out),
        observability=observability,
        governance=resolve_governance(spec, r.secret, parse_duration, out),
        a2a=resolve_a2a(spec, r.reference, parse_duration),
        mcp=resolve_mcp(spec, r.secret, parse_duration, out),
        cache=resolve_cache(spec, r.secret, parse_duration, parse_size, out),
        guardrails=resolve_guardrails(spec, out),
        realtime=resolve_realtime(spec, parse_duration, parse_size, out),
        files=resolve_files(spec.get("files", {})),
        passthrough=resolve_passthrough(spec, families, observability.metrics.path, out),
    )
