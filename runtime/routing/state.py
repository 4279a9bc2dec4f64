"""A loaded plan, ready to serve: routes, deployments with resolved credentials, adapters, request
authorizers and precomputed URLs and headers, and their counters. Built once per plan (at start and
on reload), off the loop."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import trio

from sidegate.runtime.governance.gate import TeamPolicy, policies_from_plan
from sidegate.runtime.governance.keys import Grant
from sidegate.runtime.governance.reserve import Basis, bases
from sidegate.runtime.mcp.upstream import ResolvedServer, resolve_servers
from sidegate.runtime.observe.metrics import STATES, Metrics
from sidegate.runtime.observe.scrub import Scrubber, SecretCollector
from sidegate.runtime.plan import Family, ModelGroup, Plan, Provider, Target
from sidegate.runtime.plan.canonical import digest
from sidegate.runtime.plan.secrets import resolve as _resolve
from sidegate.runtime.routing.balance import DeploymentState, GroupState
from sidegate.runtime.routing.model_list import anthropic_models_body
from sidegate.runtime.routing.routes import RouteTable
from sidegate.runtime.upstream.adapter import Adapter, adapter_for, url_for
from sidegate.runtime.upstream.mock import MockTransport
from sidegate.runtime.upstream.openai_wire import OPS
from sidegate.runtime.upstream.providers.auth import authorizer_for
from sidegate.runtime.upstream.providers.common import RequestAuthorizer
from sidegate.runtime.upstream.transport import DEFAULT_MAX_ANSWER, Transport

__all__ = [
    "Deployment", "Runtime", "build_runtime", "deployments_report", "model_card", "observe_deployments", "public_names",
]


class Deployment:
    """One target of one group, with everything a request needs precomputed."""

    __slots__ = ("adapter", "authorizer", "group", "headers", "max_answer", "max_event", "peers", "provider",
                 "scrubber", "state", "target", "transport", "urls")

    def __init__(
        self,
        group: ModelGroup,
        target: Target,
        provider: Provider,
        transport: Transport,
        headers: tuple[tuple[str, str], ...],
        state: DeploymentState,
        adapter: Adapter | None = None,
        authorizer: RequestAuthorizer | None = None,
        scrubber: Scrubber | None = None,
    ) -> None:
        self.group = group
        self.target = target
        self.provider = provider
        self.transport = transport
        self.headers = headers
        self.state = state
        self.adapter: Adapter = adapter or adapter_for(provider)
        self.authorizer = authorizer
        """Adds credentials to each finished request (Vertex token, Bedrock SigV4); None for static keys."""
        self.max_event = 1 << 20
        """`server.max_upstream_event` (set from the plan by `build_runtime`)."""
        self.max_answer = DEFAULT_MAX_ANSWER
        """`server.max_upstream_answer`."""
        self.scrubber = scrubber or Scrubber()
        """Masks the plan's secrets in what this deployment's upstream sends back (shared by the plan)."""
        self.urls = {op: url_for(provider, target.model, op) for op in OPS} if target.model != "*" else {}
        self.peers: tuple[DeploymentState, ...] = ()
        """The states of the group's other deployments (set once the group is built)."""

    def last_available(self, now: float) -> bool:
        """Whether no other deployment of the group could take a request now."""
        return not any(p.breaker.available(now) for p in self.peers)

    def url(self, op: str, model: str) -> str:
        """The upstream URL for `op`; wildcard targets build it for the forwarded model name."""
        url = self.urls.get(op)
        return url if url is not None else url_for(self.provider, model, op)


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything derived from one plan; swapped whole on reload."""

    plan: Plan
    digest: str
    routes: RouteTable
    deployments: dict[str, tuple[Deployment, ...]]
    """Group name -> its deployments, in target order."""
    models_body: bytes
    """The `GET /v1/models` answer, serialised once."""
    anthropic_models_body: bytes
    """The same list in Anthropic's shape (for Anthropic clients)."""
    groups: dict[str, ModelGroup]
    """Group name -> group (fallbacks name groups)."""
    cursors: dict[str, GroupState]
    """Group name -> strategy state (round-robin cursor)."""
    grants: tuple[Grant, ...]
    """The spec's master and static keys (hashed)."""
    teams: dict[str, TeamPolicy]
    jwt_secret: str | None
    """The resolved HMAC secret of `auth.jwt`, when it has one."""
    a2a_headers: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    """A2A agent name -> the resolved headers that authenticate sidegate to it."""
    mcp_servers: tuple[ResolvedServer, ...] = ()
    """The `mcp` section's upstream servers, credentials resolved."""
    reserve: dict[str, Basis] = field(default_factory=dict)
    """Group name -> its worst-case prices and output length (what admission reserves)."""
    scrubber: Scrubber = field(default_factory=Scrubber)
    """Masks every secret this plan resolved (and credential-shaped tokens) in relayed text and logs."""
    otlp_headers: tuple[tuple[str, str], ...] = ()
    """`observability.tracing.headers`, resolved (the OTLP exporters' authentication)."""
    passthrough: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    """Pass-through provider name -> the resolved headers that authenticate sidegate to it."""
    transport: Transport | None = None
    """The shared upstream transport (what pass-through routes and external guardrails send with)."""
    provider_headers: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    """Provider name -> its resolved auth and headers, for the providers a moderation guardrail calls."""


def _credentials(provider: Provider, resolve: SecretCollector) -> tuple[tuple[str, str], ...]:
    """The provider's API key header and its own extra headers, resolved."""
    out: list[tuple[str, str]] = []
    if provider.auth is not None and provider.api_key is not None:
        out.append((provider.auth.header, provider.auth.prefix + resolve(provider.api_key)))
    out.extend((h.name, resolve(h.value)) for h in provider.headers)
    return tuple(out)


def _headers(provider: Provider, target: Target | None, resolve: SecretCollector) -> tuple[tuple[str, str], ...]:
    targets = ((h.name, resolve(h.value)) for h in (target.headers if target is not None else ()))
    return (("content-type", "application/json"), *_credentials(provider, resolve), *targets)


def build_runtime(plan: Plan, shared: Transport, previous: Runtime | None = None) -> Runtime:
    """Resolve secrets and precompute deployments (blocking: run in a worker thread).

    Counters of deployments that survive a reload (same group and target id) are kept, and so are
    the authorizers (and their cached tokens) of providers that did not change.
    Raises SecretError (CredentialsError too) when a referenced secret or credential is missing.
    """
    resolve = SecretCollector(_resolve)
    scrubber = Scrubber()  # replaced below, once every secret is resolved; deployments share it
    old: dict[tuple[str, str], DeploymentState] = {}
    mocks: dict[str, MockTransport] = {}
    authorizers: dict[str, RequestAuthorizer | None] = {}
    if previous is not None:
        for existing in previous.deployments.values():
            for d in existing:
                old[(d.group.name, d.target.id)] = d.state
                if d.provider in plan.providers:
                    authorizers[d.provider.name] = d.authorizer
                    if isinstance(d.transport, MockTransport):
                        mocks[d.provider.name] = d.transport
    adapters: dict[str, Adapter] = {}
    deployments: dict[str, tuple[Deployment, ...]] = {}
    for group in plan.models:
        deps: list[Deployment] = []
        for target in group.targets:
            provider = plan.provider(target.provider)
            transport: Transport
            if provider.family is Family.MOCK:
                assert provider.mock is not None
                transport = mocks.setdefault(provider.name, MockTransport(provider.mock))
            else:
                transport = shared
            if provider.name not in adapters:
                adapters[provider.name] = adapter_for(provider)
                if provider.name not in authorizers:
                    authorizers[provider.name] = authorizer_for(provider, resolve)
            state = old.get((group.name, target.id)) or DeploymentState()
            deps.append(Deployment(group, target, provider, transport, _headers(provider, target, resolve), state,
                                   adapters[provider.name], authorizers[provider.name], scrubber))
        for d in deps:
            d.peers = tuple(o.state for o in deps if o is not d)
        deployments[group.name] = tuple(deps)
    grants, teams = policies_from_plan(plan)
    jwt = plan.auth.jwt if plan.auth is not None else None
    jwt_secret = resolve(jwt.secret) if jwt is not None and jwt.secret is not None else None
    a2a_headers = {a.name: tuple((h.name, resolve(h.value)) for h in a.headers)
                   for a in (plan.a2a.agents if plan.a2a is not None else ())}
    mcp_servers = resolve_servers(plan.mcp, resolve)
    tracing = plan.observability.tracing
    otlp_headers = tuple((h.name, resolve(h.value)) for h in tracing.headers) if tracing is not None else ()
    passthrough = {r.provider: _credentials(plan.provider(r.provider), resolve) for r in plan.passthrough}
    called = {r.provider for r in (plan.guardrails.rules if plan.guardrails is not None else ()) if r.provider}
    provider_headers = {n: _headers(plan.provider(n), None, resolve) for n in sorted(called)}
    for stored in (plan.store.database, plan.store.redis):
        if stored is not None:
            resolve(stored)  # a DSN's password is masked in logs too
    scrubber = resolve.scrubber()
    for serving in deployments.values():
        for d in serving:
            d.scrubber = scrubber
            d.max_event, d.max_answer = plan.server.max_upstream_event, plan.server.max_upstream_answer
    return Runtime(
        plan=plan,
        digest=digest(plan),
        routes=RouteTable(plan),
        deployments=deployments,
        models_body=orjson.dumps({"object": "list", "data": [model_card(n) for n in public_names(plan)]}),
        anthropic_models_body=anthropic_models_body(plan, public_names(plan)),
        groups={g.name: g for g in plan.models},
        cursors={g.name: GroupState() for g in plan.models},
        grants=grants,
        teams=teams,
        jwt_secret=jwt_secret,
        a2a_headers=a2a_headers,
        mcp_servers=mcp_servers,
        scrubber=scrubber,
        otlp_headers=otlp_headers,
        reserve=bases(plan),
        passthrough=passthrough,
        transport=shared,
        provider_headers=provider_headers,
    )


def deployments_report(rt: Runtime, now: float, wall: float) -> dict[str, object]:
    """`GET /health/deployments`: every deployment's breaker state (`closed`, `half_open`, `open`, or
    `rate_limited` while an upstream Retry-After keeps it out), counters, last error and latency
    estimate. `wall` is the wall clock at `now` (for the last error's time)."""
    out = []
    for name, deps in sorted(rt.deployments.items()):
        for d in deps:
            b, s = d.state.breaker, d.state
            at = b.last_error_at
            out.append({
                "model": name,
                "deployment": d.target.id,
                "state": b.state(now),  # moves open -> half-open when due, so the report is current
                "retry_in": round(b.wait(now), 3),
                "in_flight": s.in_flight,
                "requests_this_minute": s.requests,
                "tokens_this_minute": s.tokens,
                "failures": b.failures_total,
                "opened": b.opened_total,
                "last_error": b.last_error,
                "last_error_kind": None if b.last_error_kind is None else b.last_error_kind.value,
                "last_error_at": None if at is None else _iso(wall - (now - at)),
                "ttft_ms": None if b.ttft is None else round(b.ttft * 1000, 2),
                "ms_per_token": None if b.per_token is None else round(b.per_token * 1000, 3),
            })
    return {"plan": rt.digest, "deployments": out}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def public_names(plan: Plan) -> list[str]:
    """Names a client can send as `model`: group names and aliases (wildcards are patterns)."""
    names = [g.name for g in plan.models if g.wildcard_prefix is None and g.glob is None]
    names.extend(a for g in plan.models for a in g.aliases)
    return sorted(names)


def model_card(name: str) -> dict[str, object]:
    """One entry of the model list, in OpenAI's shape."""
    return {"id": name, "object": "model", "created": 0, "owned_by": "sidegate"}


def observe_deployments(metrics: Metrics, rt: Runtime) -> None:
    """Copy the router's per-deployment state into the gauges (at scrape time)."""
    now, wall = trio.current_time(), time.time()
    for name, deps in rt.deployments.items():
        for d in deps:
            b = d.state.breaker
            metrics.deployment_state.labels(name, d.target.id).set(STATES[b.state(now)])
            metrics.deployment_failures.labels(name, d.target.id).set(b.failures_total)
            if b.last_error_at is not None and b.last_error_kind is not None:
                metrics.deployment_last_error.labels(name, d.target.id, b.last_error_kind.value).set(
                    wall - (now - b.last_error_at))
            if b.ttft is not None:
                metrics.deployment_latency.labels(name, d.target.id, "ttft").set(b.ttft)
            if b.per_token is not None:
                metrics.deployment_latency.labels(name, d.target.id, "per_token").set(b.per_token)
