"""``sidegate explain``: how a request for a model name resolves, read from the compiled plan.

The route is found with the runtime's own :class:`runtime.routing.routes.RouteTable` and upstream URLs
with the runtime's own :func:`runtime.upstream.adapter.url_for` (native stream URLs with
:func:`runtime.upstream.providers.native_stream_url`), so the explanation cannot drift from what the sidecar
does. Secrets are shown only as references (``Secret.describe``).
"""

from __future__ import annotations

import json

from sidegate.compiler.data.catalog import load_catalog, price_info
from sidegate.compiler.diagnostics import did_you_mean
from sidegate.runtime.plan import Family, ModelGroup, Plan, Price, PriceSource, Provider, Strategy, Target
from sidegate.runtime.plan.canonical import to_json_obj
from sidegate.runtime.routing.routes import RouteTable
from sidegate.runtime.upstream.adapter import url_for
from sidegate.runtime.upstream.providers import native_stream_url
from sidegate.runtime.upstream.providers.anthropic import ANTHROPIC_VERSION

__all__ = ["explain", "format_duration"]


def format_duration(seconds: float) -> str:
    """Seconds as the spec would write them: ``250ms``, ``30s``, ``10m``, ``1h``, ``1d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if (seconds >= 2 * size and seconds % size == 0) or seconds == size > 60:
            return f"{int(seconds // size)}{unit}"
    if seconds >= 1 or seconds == 0:
        return f"{seconds:g}s"
    return f"{seconds * 1000:g}ms"


def _money(per_token: float) -> str:
    return f"${per_token * 1_000_000:.6g}"


_SOURCES = {PriceSource.TABLE: " (price table)", PriceSource.SPEC: " (declared in the spec)"}


def _price_line(target: Target, provider: Provider, forwarded: str | None) -> tuple[str, str]:
    """(price, context) lines; a wildcard target is priced for the forwarded model, if known."""
    price, max_in, max_out = target.price, target.max_input_tokens, target.max_output_tokens
    source = _SOURCES.get(target.price_source, "") if target.price_source is not None else ""
    if target.price_source is PriceSource.BASE_MODEL:
        source = f" (price table, as base_model '{target.base_model}')"
    if target.model == "*" and forwarded is not None and target.price_source is not PriceSource.SPEC:
        kind = load_catalog().get(provider.type)
        info = price_info(kind, forwarded) if kind else None
        if info is not None:
            price = Price(input=info.input, output=info.output, cached_input=info.cached_input)
            max_in, max_out = info.max_input_tokens, info.max_output_tokens
            source = " (price table, for the forwarded model)"
    if price is None:
        price_text = "unknown (not in the price table; declare price or base_model): requests cost $0"
    else:
        price_text = f"{_money(price.input)} input / {_money(price.output)} output per 1M tokens"
        if price.cached_input is not None:
            price_text += f" ({_money(price.cached_input)} cached input)"
        price_text += source
    if max_in is None and max_out is None:
        context = "unknown"
    else:
        parts = [f"{max_in:,} input tokens" if max_in is not None else "input unknown"]
        parts.append(f"{max_out:,} output tokens" if max_out is not None else "output unknown")
        context = ", ".join(parts)
    return price_text, context


def _auth_lines(provider: Provider) -> list[str]:
    """How sidegate authenticates to the provider, and what it does with parameters it cannot map."""
    family, key = provider.family, provider.api_key
    lines: list[str] = []
    if family is Family.VERTEX:
        source = (f"service-account key {provider.credentials.describe()}" if provider.credentials
                  else "Google application default credentials")
        lines.append(f"     auth:       OAuth2 bearer token from {source} (google-auth; refreshed before expiry)")
    elif family is Family.BEDROCK and key is None:
        profile = provider.aws_profile
        source = f"AWS profile '{profile}'" if profile else "botocore's default credential chain"
        lines.append(f"     auth:       SigV4 for region {provider.region}, credentials from {source}")
    elif key is not None:
        what = "a Bedrock API key, " if family is Family.BEDROCK else ""
        scheme = f" ({what}sent as {provider.auth.header}: {provider.auth.prefix}...)" if provider.auth else ""
        lines.append(f"     api key:    {key.describe()}{scheme}")
    if family is Family.ANTHROPIC:
        lines.append(f"     header:     anthropic-version: {ANTHROPIC_VERSION} (unless configured)")
    if family.native:
        rule = "dropped (drop_unsupported)" if provider.drop_unsupported else "answered with 400 naming them"
        lines.append(f"     translated: OpenAI requests to {family.value}'s API; parameters it cannot take are {rule}")
    return lines


def _target_lines(index: int, target: Target, provider: Provider, share: float, forwarded: str | None) -> list[str]:
    model = forwarded if target.model == "*" and forwarded is not None else target.model
    stream = None
    if provider.family is Family.MOCK:
        upstream = "built-in mock provider (no network)"
    elif provider.family is Family.VOYAGE:  # embeddings and rerank only (sidegate refuses chat to it)
        base = provider.base_url.rstrip("/")
        upstream = f"POST {base}/embeddings or {base}/rerank  (model: {model}; no chat)"
    else:
        url = url_for(provider, model, "chat")
        upstream = f"POST {url}  (model: {model})"
        streamed = native_stream_url(provider.family.value, url)
        stream = f"POST {streamed}" if streamed != url else None
    caps = [
        f"{name} {value}"
        for name, value in (("rpm", target.rpm), ("tpm", target.tpm), ("max_parallel", target.max_parallel))
        if value is not None
    ]
    price, context = _price_line(target, provider, forwarded)
    lines = [
        f"  {index}. {target.id}  via provider '{provider.name}' (type {provider.type})",
        f"     upstream:   {upstream}",
        *([f"     streams:    {stream}"] if stream else []),
        f"     weight:     {target.weight:g} ({share:.1f}% of requests)",
        f"     caps:       {', '.join(caps) if caps else 'none'}",
        f"     price:      {price}",
        f"     context:    {context}",
        *_caps_line(target, provider),
        *_auth_lines(provider),
    ]
    for header in (*provider.headers, *target.headers):
        lines.append(f"     header:     {header.name}: {header.value.describe()}")
    if target.extra_body:
        body = json.dumps(to_json_obj(target.extra_body), sort_keys=True)
        lines.append(f"     extra_body: {body}")
    return lines


def _caps_line(target: Target, provider: Provider) -> list[str]:
    """What an Anthropic Messages request keeps on this target (see docs/anthropic.md)."""
    if provider.family is Family.ANTHROPIC or provider.family is Family.MOCK:
        return []
    c = target.caps

    def known(value: bool | None) -> str:
        return "unknown" if value is None else "yes" if value else "no"

    limit = "max_completion_tokens" if c.max_completion_tokens else "max_tokens"
    parts = [f"reasoning {'yes' if c.reasoning else 'no (thinking/effort dropped)'}", f"limit as {limit}",
             f"top_k {'mapped' if c.top_k else 'dropped'}", f"images {known(c.vision)}", f"PDFs {known(c.pdf)}"]
    if not c.sampling:
        parts.append("temperature/top_p dropped")
    return [f"     messages:   {', '.join(parts)}"]


def _headline(model: str, group: ModelGroup, forwarded: str | None) -> str:
    if group.glob is not None:
        if forwarded is None or forwarded == group.name:
            return f"{model}: glob model group; every name it matches is served, '*' targets get the name"
        return f"{model} -> model group '{group.name}' (glob; forwards '{forwarded}')"
    if group.wildcard_prefix is not None:
        if forwarded is None:
            return f"{model}: wildcard model group; '{group.wildcard_prefix}<name>' forwards <name>"
        return f"{model} -> model group '{group.name}' (wildcard; forwards '{forwarded}')"
    if model != group.name:
        return f"{model} -> model group '{group.name}' (alias)"
    return f"{model} -> model group '{group.name}'"


def explain(plan: Plan, model: str) -> str:
    """Describe how a request for ``model`` is routed; LookupError when nothing serves it."""
    group = next((g for g in plan.models if g.name == model), None)
    forwarded: str | None = None
    if group is None:
        route = RouteTable(plan).resolve(model)
        if route is None:
            raise LookupError(_unknown_model(plan, model))
        group, forwarded = route.group, route.suffix
    total = sum(t.weight for t in group.targets)
    lines = [
        _headline(model, group, forwarded),
        f"timeout: {format_duration(group.timeout)} for the whole request (connect, wait and stream)",
    ]
    if group.aliases:
        lines.append("aliases: " + ", ".join(group.aliases))
    count = len(group.targets)
    lines.extend(_routing_lines(group, count))
    for i, target in enumerate(group.targets, 1):
        lines.append("")
        share = 100.0 * target.weight / total if total else 0.0
        lines.extend(_target_lines(i, target, plan.provider(target.provider), share, forwarded))
        if group.strategy is Strategy.PRIORITY:
            lines.append(f"     tier:       {target.tier}")
    return "\n".join(lines) + "\n"


def _unknown_model(plan: Plan, model: str) -> str:
    """The error for a name nothing serves: the closest name, and every name a client can send
    (group names and aliases, then wildcard and glob patterns as written)."""
    exact = [n for g in plan.models if g.wildcard_prefix is None and g.glob is None for n in (g.name, *g.aliases)]
    patterns = [g.name for g in plan.models if g.wildcard_prefix is not None or g.glob is not None]
    patterns += [a for g in plan.models if g.wildcard_prefix is not None or g.glob is not None for a in g.aliases]
    message = f"no model group serves '{model}'{did_you_mean(model, exact)}"
    if exact or patterns:
        listed = ", ".join(sorted(exact) + sorted(patterns))
        message += f"; the model names a client can send: {listed}"
    return message


_STRATEGY = {
    Strategy.WEIGHTED: "by weight",
    Strategy.ROUND_ROBIN: "in turn (round-robin)",
    Strategy.LEAST_BUSY: "fewest in flight first (least-busy)",
    Strategy.LATENCY: "fastest measured first, 10% exploration (latency)",
    Strategy.USAGE: "lowest share of rpm/tpm caps used (usage)",
    Strategy.COST: "cheapest for the estimated tokens (cost)",
    Strategy.PRIORITY: "lowest tier first, by weight within a tier (priority)",
}


def _routing_lines(group: ModelGroup, count: int) -> list[str]:
    r, c = group.retry, group.cooldown
    lines = [
        f"targets: {count}; one is picked per attempt {_STRATEGY[group.strategy]}, skipping any at its caps "
        "or cooling down",
        f"retries: {r.attempts} attempt(s) in all, backoff {format_duration(r.backoff)} doubling to "
        f"{format_duration(r.max_backoff)}, on {', '.join(o.value for o in r.on)}; an upstream Retry-After up to "
        f"{format_duration(r.max_retry_after)} is waited out when no other deployment is free",
        f"cooldown: {c.failures} failures in {format_duration(c.window)} take a deployment out for "
        f"{format_duration(c.duration)}" + (f" (or an error rate of {c.error_rate:g})" if c.error_rate else "")
        + ("; the last available one is kept in" if c.keep_last else ""),
    ]
    if group.hedge_after is not None:
        lines.append(f"hedging: a second deployment after {format_duration(group.hedge_after)} without a byte")
    for label, chain in (("fallbacks", group.fallbacks), ("context-window fallbacks", group.context_window_fallbacks),
                         ("content-policy fallbacks", group.content_policy_fallbacks)):
        if chain:
            lines.append(f"{label}: {' -> '.join(chain)}")
    return lines
