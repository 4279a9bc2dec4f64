"""Plan types of governance: keys, teams, users, their budgets and limits, and JWT bearer tokens."""

from __future__ import annotations

from dataclasses import dataclass

from sidegate.runtime.plan.gateways import A2APolicy, McpAccess
from sidegate.runtime.plan.values import Secret

__all__ = ["Auth", "BudgetRule", "JwtRule", "LimitRule", "StaticKey", "Team", "UserRule"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetRule:
    """USD per period (`Nd` windows from the epoch, or `month`); `soft` is a warning share."""

    amount: float
    period: str
    soft: float | None
    refuse_unpriced: bool = False
    """Refuse (403 price_unknown) requests to groups with an unpriced deployment, instead of admitting them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitRule:
    """Requests and tokens per minute, and requests in flight."""

    rpm: int | None
    tpm: int | None
    parallel: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StaticKey:
    """A key declared in the spec (its value a secret reference)."""

    name: str
    key: Secret
    team: str | None
    user: str | None
    models: tuple[str, ...]
    budget: BudgetRule | None
    limits: LimitRule | None
    a2a: A2APolicy | None = None
    mcp: McpAccess | None = None
    """Which MCP tools this key may use; None: no key-level rule."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Team:
    """A team's models, budget and limits."""

    name: str
    models: tuple[str, ...]
    budget: BudgetRule | None
    limits: LimitRule | None
    a2a: A2APolicy | None = None
    mcp: McpAccess | None = None
    """Which MCP tools the team's keys may use; None: no team-level rule."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRule:
    """One user's rate limits; the entry named `default` applies to every user without one."""

    name: str
    limits: LimitRule | None


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtRule:
    """JWT bearer tokens: verified with an HS secret or keys from a JWKS URL; claims (dotted paths,
    `[n]` for list items) name the team, user and allowed models."""

    secret: Secret | None
    jwks_url: str | None
    algorithms: tuple[str, ...]
    audience: str | None
    issuer: str | None
    team_claim: str | None
    user_claim: str | None
    models_claim: str | None
    jwks_refresh: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Auth:
    """Keys are required; the master key and static keys; how often store keys are re-read."""

    master_key: Secret | None
    keys: tuple[StaticKey, ...]
    refresh: float
    jwt: JwtRule | None
