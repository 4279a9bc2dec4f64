"""The `auth`, `teams` and `users` sections: static keys and the master key as secret references,
teams with model lists, budgets and rate limits, per-user rate limits; every reference checked at
its node."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sidegate.compiler.diagnostics import Collector, did_you_mean, join_pointer
from sidegate.compiler.sections.a2a import a2a_policy
from sidegate.compiler.sections.mcp import access
from sidegate.runtime.plan import Auth, BudgetRule, JwtRule, LimitRule, Secret, SecretSource, StaticKey, Team, UserRule

__all__ = ["GovernanceSpec", "check_governance", "check_redis_url", "resolve_governance"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GovernanceSpec:
    """Resolved governance sections, with the pointers the checks report at."""

    auth: Auth | None
    teams: tuple[Team, ...]
    users: tuple[UserRule, ...]
    """Per-user limits, sorted by name (`default`: every user without an entry)."""
    refs: tuple[tuple[str, str, str], ...]
    """(kind, name, pointer) for every team or model name the sections mention."""


def _budget(raw: Mapping[str, Any] | None) -> BudgetRule | None:
    if raw is None:
        return None
    return BudgetRule(amount=float(raw["amount"]), period=raw.get("period", "30d"), soft=raw.get("soft"),
                      refuse_unpriced=raw.get("unknown_price", "admit") == "refuse")


def _limits(raw: Mapping[str, Any] | None) -> LimitRule | None:
    if raw is None:
        return None
    return LimitRule(rpm=raw.get("rpm"), tpm=raw.get("tpm"), parallel=raw.get("parallel"))


def resolve_governance(
    spec: Mapping[str, Any], secret: Callable[[Any, str], Secret | None], seconds: Callable[[str], float],
    out: Collector,
) -> GovernanceSpec:
    """Resolve `auth`, `teams` and `users` (secrets must be references, never literal keys)."""
    refs: list[tuple[str, str, str]] = []
    teams = []
    for name, raw in spec.get("teams", {}).items():
        pointer = join_pointer("/teams", name)
        models = tuple(raw.get("models", ()))
        refs.extend(("model", m, f"{pointer}/models/{i}") for i, m in enumerate(models))
        budget, limits = _budget(raw.get("budget")), _limits(raw.get("limits"))
        teams.append(Team(name=name, models=models, budget=budget, limits=limits, a2a=a2a_policy(raw.get("a2a")),
                          mcp=access(raw.get("mcp"))))
    auth = None
    raw_auth = spec.get("auth")
    if raw_auth is not None:

        def reference(value: Any, pointer: str) -> Secret | None:
            s = secret(value, pointer)
            if s is not None and all(p.source is SecretSource.TEXT for p in s.parts):
                out.error("secret.literal", pointer, "keys must be references (${ENV}, {env: ...} or {file: ...}); "
                          "literal keys would be written into the plan")
            return s

        master = reference(raw_auth["master_key"], "/auth/master_key") if "master_key" in raw_auth else None
        keys = []
        for i, k in enumerate(raw_auth.get("keys", ())):
            pointer = f"/auth/keys/{i}"
            value = reference(k["key"], pointer + "/key")
            if k.get("team") is not None:
                refs.append(("team", k["team"], pointer + "/team"))
            refs.extend(("model", m, f"{pointer}/models/{j}") for j, m in enumerate(k.get("models", ())))
            if value is not None:
                keys.append(StaticKey(
                    name=k["name"], key=value, team=k.get("team"), user=k.get("user"),
                    models=tuple(k.get("models", ())), budget=_budget(k.get("budget")), limits=_limits(k.get("limits")),
                    a2a=a2a_policy(k.get("a2a")),
                    mcp=access(k.get("mcp")),
                ))
        jwt = None
        raw_jwt = raw_auth.get("jwt")
        if raw_jwt is not None:
            has_secret = "secret" in raw_jwt
            if has_secret == ("jwks_url" in raw_jwt):
                out.error("auth.jwt-key-source", "/auth/jwt", "give exactly one of secret or jwks_url", at_key=True)
            claims = raw_jwt.get("claims", {})
            default_algs = ("HS256",) if has_secret else ("RS256", "ES256")
            jwt = JwtRule(
                secret=reference(raw_jwt["secret"], "/auth/jwt/secret") if has_secret else None,
                jwks_url=raw_jwt.get("jwks_url"), algorithms=tuple(raw_jwt.get("algorithms", default_algs)),
                audience=raw_jwt.get("audience"), issuer=raw_jwt.get("issuer"), team_claim=claims.get("team"),
                user_claim=claims.get("user", "sub"), models_claim=claims.get("models"),
                jwks_refresh=seconds(raw_jwt.get("jwks_refresh", "10m")),
            )
        auth = Auth(master_key=master, keys=tuple(keys), refresh=seconds(raw_auth.get("refresh", "5s")), jwt=jwt)
    users = tuple(UserRule(name=name, limits=_limits(raw.get("limits")))
                  for name, raw in sorted(spec.get("users", {}).items()))
    return GovernanceSpec(auth=auth, teams=tuple(sorted(teams, key=lambda t: t.name)), users=users, refs=tuple(refs))


def check_redis_url(url: Secret | None, out: Collector) -> None:
    """`store.redis`: a redis://, rediss:// or unix:// URL (a literal password in it is reported by
    `compiler.credentials`)."""
    if url is None or not all(p.source is SecretSource.TEXT for p in url.parts):
        return
    text = "".join(p.value for p in url.parts)
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss", "unix"):
        out.error("store.redis-url", "/store/redis", "the Redis URL must start with redis://, rediss:// or unix://")


def check_governance(gov: GovernanceSpec, model_names: set[str], out: Collector) -> None:
    """Teams named by keys are declared; model names in keys and teams are served."""
    team_names = {t.name for t in gov.teams}
    for kind, name, pointer in gov.refs:
        if kind == "team" and name not in team_names:
            out.error("ref.unknown-team", pointer, f"team '{name}' is not declared under teams"
                      f"{did_you_mean(name, team_names)}")
        elif kind == "model" and name not in model_names:
            out.error("ref.unknown-model", pointer, f"'{name}' is not a model group{did_you_mean(name, model_names)}")
    if gov.auth is not None:
        seen: dict[str, int] = {}
        for i, k in enumerate(gov.auth.keys):
            if k.name in seen:
                out.error("auth.duplicate-key-name", f"/auth/keys/{i}/name",
                          f"key name '{k.name}' is already used by auth/keys/{seen[k.name]}")
            seen.setdefault(k.name, i)
