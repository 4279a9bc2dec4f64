"""Lower phase: assemble the checked, resolved spec into the frozen :class:`runtime.plan.Plan`.

Providers and model groups are sorted by name, so the plan (and its digest) does not depend on the
order of mapping keys in the spec; targets keep the order they were written in.
"""

from __future__ import annotations

from sidegate.compiler.data.capabilities import capabilities, override_output
from sidegate.compiler.resolve import GroupSpec, ProviderSpec, Resolved, TargetSpec
from sidegate.compiler.sections.files import canonical_files
from sidegate.compiler.sections.routing import flatten_fallbacks
from sidegate.runtime.plan import PLAN_VERSION, CachePolicy, Family, ModelGroup, Plan, Provider, Target
from sidegate.runtime.routing.routes import is_prefix_wildcard
from sidegate.runtime.upstream.providers import bedrock_base_url, vertex_base_url

__all__ = ["lower"]


def _base_url(p: ProviderSpec) -> str:
    """The spec's base_url, else the catalog's, else (vertex, bedrock) the one built from the region."""
    kind = p.kind
    assert kind is not None
    if p.base_url or kind.base_url:
        return p.base_url or kind.base_url or ""
    if kind.family is Family.VERTEX and p.project and p.region:
        return vertex_base_url(p.project, p.region)
    if kind.family is Family.BEDROCK and p.region:
        return bedrock_base_url(p.region)
    return ""


def _provider(p: ProviderSpec) -> Provider:
    kind = p.kind
    assert kind is not None, "lower runs only on checked specs"
    family = kind.family
    return Provider(
        name=p.name,
        type=p.type,
        family=family,
        base_url=_base_url(p),
        auth=kind.auth,
        api_key=p.api_key,
        headers=p.headers,
        connect_timeout=p.connect_timeout,
        first_byte_timeout=p.first_byte_timeout,
        idle_timeout=p.idle_timeout,
        stream_usage=kind.stream_usage,
        api_version=p.api_version if family is Family.AZURE else None,
        mock=p.mock if family is Family.MOCK else None,
        health=p.health,
        region=p.region if family in (Family.VERTEX, Family.BEDROCK) else None,
        project=p.project if family is Family.VERTEX else None,
        credentials=p.credentials if family is Family.VERTEX else None,
        aws_profile=p.aws_profile if family is Family.BEDROCK and p.api_key is None else None,
        drop_unsupported=p.drop_unsupported and family.native,
    )


def _target(t: TargetSpec, providers: dict[str, ProviderSpec]) -> Target:
    info = t.info
    kind = providers[t.provider].kind
    assert kind is not None, "lower runs only on checked specs"
    return Target(
        id=f"{t.provider}/{t.model}",
        provider=t.provider,
        model=t.model,
        weight=t.weight,
        rpm=t.rpm,
        tpm=t.tpm,
        max_parallel=t.max_parallel,
        headers=t.headers,
        extra_body=t.extra_body,
        price=t.price,
        max_input_tokens=None if info is None else info.max_input_tokens,
        max_output_tokens=override_output(t.capabilities, info),
        tier=t.tier,
        caps=capabilities(kind, t.model, t.capabilities),
        price_source=t.price_source,
        base_model=t.base_model,
    )


def _group(g: GroupSpec, chains: dict[str, tuple[str, ...]], providers: dict[str, ProviderSpec],
           cache: CachePolicy | None) -> ModelGroup:
    p = g.policies
    prefix = g.name[:-1] if is_prefix_wildcard(g.name) else None
    return ModelGroup(
        name=g.name,
        aliases=g.aliases,
        wildcard_prefix=prefix,
        glob=g.name if prefix is None and "*" in g.name else None,
        targets=tuple(_target(t, providers) for t in g.targets),
        timeout=g.timeout,
        strategy=p.strategy,
        retry=p.retry,
        cooldown=p.cooldown,
        fallbacks=chains["fallbacks"],
        context_window_fallbacks=chains["context_window_fallbacks"],
        content_policy_fallbacks=chains["content_policy_fallbacks"],
        hedge_after=p.hedge_after,
        reserve_output_tokens=g.reserve_output_tokens,
        cache=cache,
    )


def lower(resolved: Resolved) -> Plan:
    """The plan for a spec that resolved and checked without errors."""
    chains = flatten_fallbacks(
        {g.name: g.policies for g in resolved.groups}, {a: g.name for g in resolved.groups for a in g.aliases}
    )
    providers = dict(resolved.providers)
    cached = resolved.cache.policies if resolved.cache is not None else {}
    return Plan(
        version=PLAN_VERSION,
        server=resolved.server,
        providers=tuple(_provider(resolved.providers[name]) for name in sorted(resolved.providers)),
        models=tuple(_group(g, chains[g.name], providers, cached.get(g.name))
                     for g in sorted(resolved.groups, key=lambda g: g.name)),
        store=resolved.store,
        observability=resolved.observability,
        auth=resolved.governance.auth,
        teams=resolved.governance.teams,
        users=resolved.governance.users,
        a2a=resolved.a2a,
        mcp=resolved.mcp,
        cache=resolved.cache.cache if resolved.cache is not None else None,
        guardrails=resolved.guardrails,
        realtime=resolved.realtime,
        files=canonical_files(resolved.files, {a: g.name for g in resolved.groups for a in g.aliases}),
        passthrough=resolved.passthrough,
    )
