"""Check phase: cross-references and rules that span several nodes, each reported at the exact node.

Targets must name declared providers; model names and aliases are unique; `*` targets live only in
wildcard groups; a provider's fields must make sense for its family (and the ones its family needs
must be there); unused providers and missing keys are worth a warning.
"""

from __future__ import annotations

from sidegate.compiler.diagnostics import Collector, did_you_mean, join_pointer
from sidegate.compiler.resolve import MOCK_FIELDS, GroupSpec, ProviderSpec, Resolved
from sidegate.compiler.sections import routing
from sidegate.compiler.sections.a2a import check_a2a
from sidegate.compiler.sections.files import check_files
from sidegate.compiler.sections.governance import check_governance
from sidegate.compiler.sections.mcp import check_mcp
from sidegate.compiler.sections.pricing import check_budgeted_prices
from sidegate.runtime.plan import Family
from sidegate.runtime.routing.routes import glob_regex, is_prefix_wildcard

__all__ = ["check"]

_NATIVE_FIELDS: dict[str, tuple[Family, ...]] = {
    "region": (Family.VERTEX, Family.BEDROCK),
    "project": (Family.VERTEX,),
    "credentials": (Family.VERTEX,),
    "aws_profile": (Family.BEDROCK,),
    "drop_unsupported": tuple(f for f in Family if f.native),
}
"""Provider fields that only some families use."""
_REQUIRED: dict[Family, tuple[tuple[str, str], ...]] = {
    Family.VERTEX: (("project", "the Google Cloud project id"), ("region", "a Vertex AI location such as us-central1")),
    Family.BEDROCK: (("region", "the AWS region, such as us-east-1"),),
}
_NO_PROBE = (Family.ANTHROPIC, Family.VERTEX, Family.BEDROCK, Family.COHERE, Family.VOYAGE)
"""Families whose API cannot answer the health prober's `GET {base_url}/models` with static headers
(a version header, request signing or another path is needed)."""


def _types(families: tuple[Family, ...]) -> str:
    names = [f.value for f in families]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _check_native(p: ProviderSpec, family: Family, out: Collector) -> None:
    for name, families in _NATIVE_FIELDS.items():
        if name in p.fields and family not in families:
            why = " (OpenAI-wire types pass every parameter through)" if name == "drop_unsupported" else ""
            out.error(
                "provider.field-not-applicable",
                join_pointer(p.pointer, name),
                f"{name} applies to {_types(families)} providers only, not to type '{p.type}'{why}",
                at_key=True,
            )
    for name, what in _REQUIRED.get(family, ()):
        if name not in p.fields:
            out.error("schema.required", p.pointer, f"{p.type} providers need {name} ({what})", at_key=True)
    if family is Family.VERTEX and "api_key" in p.fields:
        out.error(
            "provider.field-not-applicable",
            p.pointer + "/api_key",
            "api_key does not apply to vertex: it authenticates with credentials (a service-account key) "
            "or Google's application default credentials",
            at_key=True,
        )
    if family is Family.BEDROCK and "api_key" in p.fields and "aws_profile" in p.fields:
        out.error(
            "provider.field-not-applicable",
            p.pointer + "/aws_profile",
            "aws_profile is not used when api_key is set (requests carry the Bedrock API key, not SigV4)",
            at_key=True,
        )
    if family in _NO_PROBE and "health" in p.fields:
        out.error(
            "provider.field-not-applicable",
            p.pointer + "/health",
            f"health probes are not supported for type '{p.type}' yet (the prober's GET {{base_url}}/models "
            "with the provider's static headers does not reach its API)",
            at_key=True,
        )


PLACEHOLDERS = ("replace-me",)
"""Values `sidegate import litellm` writes where the LiteLLM config had nothing it could translate
(a base URL read from the environment, a missing project): a spec holding one is not done."""


def _check_placeholders(p: ProviderSpec, out: Collector) -> None:
    for name, value in p.fields.items():
        if isinstance(value, str) and any(mark in value for mark in PLACEHOLDERS):
            out.error("provider.placeholder", join_pointer(p.pointer, name),
                      f"'{value}' is a placeholder (left by `sidegate import litellm`): set the real {name}")


def _check_provider(p: ProviderSpec, used: bool, out: Collector) -> None:
    _check_placeholders(p, out)
    if not used:
        out.warning("provider.unused", p.pointer, f"provider '{p.name}' is not used by any model", at_key=True)
    kind = p.kind
    if kind is None:
        return
    _check_native(p, kind.family, out)
    if p.base_url is None and kind.base_url is None and kind.family not in _REQUIRED:
        out.error(
            "provider.base-url-required",
            p.pointer,
            f"provider type '{p.type}' has no default base_url; set base_url",
            at_key=True,
        )
    if kind.family is Family.AZURE and p.api_version is None:
        out.error(
            "provider.api-version-required",
            p.pointer,
            'azure providers need api_version (e.g. api_version: "2024-10-21")',
            at_key=True,
        )
    if kind.family is not Family.AZURE and "api_version" in p.fields:
        out.error(
            "provider.field-not-applicable",
            p.pointer + "/api_version",
            f"api_version applies to azure providers only, not to type '{p.type}'",
            at_key=True,
        )
    if kind.family is not Family.MOCK:
        for name in MOCK_FIELDS:
            if name in p.fields:
                out.error(
                    "provider.field-not-applicable",
                    join_pointer(p.pointer, name),
                    f"{name} applies to mock providers only, not to type '{p.type}'",
                    at_key=True,
                )
    if kind.requires_key and p.api_key is None:
        example = f" (e.g. api_key: ${{{kind.key_env}}})" if kind.key_env else ""
        out.warning(
            "provider.missing-api-key",
            p.pointer,
            f"provider '{p.name}' has no api_key, but type '{p.type}' requires one{example}",
            at_key=True,
        )


def _check_glob(g: GroupSpec, groups: tuple[GroupSpec, ...], out: Collector) -> None:
    """Lint a glob name: no `**`, a catch-all is said aloud, exact names it also matches are named."""
    if "**" in g.name:
        out.error("model.glob-pattern", g.pointer, f"'{g.name}': '**' means the same as '*'; write one", at_key=True)
        return
    if not g.name.replace("*", ""):
        out.warning("model.glob-catch-all", g.pointer,
                    f"'{g.name}' matches every model name that no other group serves", at_key=True)
        return
    regex = glob_regex(g.name)
    exact = [n for other in groups if "*" not in other.name for n in (other.name, *other.aliases) if regex.fullmatch(n)]
    if exact:
        out.warning("model.glob-shadowed", g.pointer,
                    f"'{g.name}' also matches {', '.join(repr(n) for n in sorted(exact))}, which "
                    f"{'its own group serves' if len(exact) == 1 else 'their own groups serve'} (an exact name wins)",
                    at_key=True)


def _check_names(groups: tuple[GroupSpec, ...], out: Collector) -> None:
    owner: dict[str, str] = {g.name: g.name for g in groups}
    for g in groups:
        wildcard = "*" in g.name
        if wildcard and not is_prefix_wildcard(g.name):
            _check_glob(g, groups, out)
        for i, alias in enumerate(g.aliases):
            pointer = f"{g.pointer}/aliases/{i}"
            if wildcard:
                out.error("model.wildcard-alias", pointer, f"wildcard group '{g.name}' cannot have aliases")
            elif alias in owner:
                other = owner[alias]
                what = "the name" if alias == other else "an alias"
                out.error("model.duplicate-name", pointer, f"'{alias}' is already {what} of model group '{other}'")
            else:
                owner[alias] = g.name


def _check_targets(g: GroupSpec, providers: dict[str, ProviderSpec], out: Collector) -> None:
    wildcard = "*" in g.name
    seen: dict[tuple[str, str], int] = {}
    for i, t in enumerate(g.targets):
        if t.provider not in providers:
            hint = did_you_mean(t.provider, providers)
            if not providers:
                hint = " (no providers are declared)"
            out.error(
                "ref.unknown-provider",
                t.pointer + "/provider",
                f"provider '{t.provider}' is not declared under providers{hint}",
            )
        if t.model == "*" and not wildcard:
            out.error(
                "model.wildcard-target",
                t.pointer + "/model",
                f"model '*' forwards the requested name, but '{g.name}' is not a wildcard group "
                "(name it like 'prefix/*' or a glob like 'claude-*')",
            )
        key = (t.provider, t.model)
        if key in seen:
            out.error(
                "model.duplicate-target",
                t.pointer,
                f"target {t.provider}/{t.model} is already listed in this group (targets/{seen[key]})",
            )
        else:
            seen[key] = i


def _check_prices(resolved: Resolved, out: Collector) -> None:
    gov = resolved.governance
    aliases = {a: g.name for g in resolved.groups for a in g.aliases}

    def groups_of(models: tuple[str, ...]) -> tuple[str, ...] | None:
        return tuple(aliases.get(m, m) for m in models) if models else None

    budgeted = [(f"team '{t.name}'", groups_of(t.models)) for t in gov.teams if t.budget is not None]
    budgeted.extend((f"key '{k.name}'", groups_of(k.models)) for k in (gov.auth.keys if gov.auth else ())
                    if k.budget is not None)
    groups = {g.name: [(t.pointer, f"{t.provider}/{t.model}", t.price is not None) for t in g.targets]
              for g in resolved.groups}
    check_budgeted_prices(groups, budgeted, out)


def check(resolved: Resolved, out: Collector) -> None:
    """Report every cross-reference problem of ``resolved`` to ``out``."""
    providers = dict(resolved.providers)
    used = {t.provider for g in resolved.groups for t in g.targets} | {r.provider for r in resolved.passthrough}
    for p in providers.values():
        _check_provider(p, p.name in used, out)
    _check_names(resolved.groups, out)
    for g in resolved.groups:
        _check_targets(g, providers, out)
    names = {g.name for g in resolved.groups} | {a for g in resolved.groups for a in g.aliases}
    check_governance(resolved.governance, names, out)
    gov = resolved.governance
    _check_prices(resolved, out)
    check_files(resolved.files, resolved.groups, providers, out)
    check_a2a(resolved.a2a, [
        *((f"/auth/keys/{i}", k.a2a) for i, k in enumerate(gov.auth.keys if gov.auth else ())),
        *((join_pointer("/teams", t.name), t.a2a) for t in gov.teams),
    ], out)
    rules = [(k.mcp, f"/auth/keys/{i}/mcp") for i, k in enumerate(gov.auth.keys if gov.auth else ()) if k.mcp]
    rules.extend((t.mcp, join_pointer("/teams", t.name, "mcp")) for t in gov.teams if t.mcp)
    check_mcp(resolved.mcp, rules, out)
    routing.check_fallbacks(
        {g.name: g.policies for g in resolved.groups},
        {g.name for g in resolved.groups if "*" in g.name},
        {a: g.name for g in resolved.groups for a in g.aliases},
        out,
    )
