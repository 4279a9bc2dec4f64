"""Who may call what, how fast and for how much: the hot-path gate in front of every model call.

Authentication is a hash lookup in the in-memory key cache; model permissions, budgets and rate
limits are checked against in-memory counters (the `Ledger`). Nothing here waits on the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sidegate.runtime.errors import GatewayError, RateLimited
from sidegate.runtime.governance.keys import Grant, KeyCache, hash_key
from sidegate.runtime.governance.limits import Budget, Ledger, Limits
from sidegate.runtime.plan import LimitRule, Plan, Price
from sidegate.runtime.plan.secrets import resolve
from sidegate.runtime.upstream.openai_wire import Usage

if TYPE_CHECKING:
    from sidegate.runtime.governance.redis_budget import Held

__all__ = [
    "Admission", "AuthError", "Estimate", "Forbidden", "Gatekeeper", "PriceUnknown", "TeamPolicy", "cost_of",
    "policies_from_plan", "token_of", "users_from_plan",
]


class AuthError(GatewayError):
    """No key, or a key that is unknown, revoked or expired."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    """A valid key asking for something it may not use."""

    status = 403
    type = "permission_error"
    code = "model_not_allowed"


@dataclass(frozen=True, slots=True, kw_only=True)
class TeamPolicy:
    """A team's permissions, limits and budget."""

    name: str
    models: frozenset[str] | None = None
    limits: Limits | None = None
    budget: Budget | None = None


Estimate = tuple[int, float, bool]
"""A request's worst case: (tokens, USD at the highest prices that may apply, whether a deployment
that may serve it has no price); see `runtime.governance.reserve.estimate`."""


class PriceUnknown(GatewayError):
    """A fail-closed budget (`unknown_price: refuse`) and a group with an unpriced deployment."""

    status = 403
    type = "permission_error"
    code = "price_unknown"


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted request: who, and the counters and reservations it holds until it finishes."""

    grant: Grant | None
    subjects: tuple[str, ...]
    reserved: int = 0
    """Tokens reserved against tpm until the request finishes (its worst case)."""
    window: int = -1
    """The minute window the request was counted in."""
    held: float = 0.0
    """USD reserved against each budget in `budgeted` until the request finishes."""
    budgeted: tuple[str, ...] = ()
    """The subjects whose budgets hold `held`."""
    remote: Held | None = None
    """The same reservation in Redis (budgets shared by several sidecars), when it was made there."""


def token_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The presented key: `Authorization: Bearer <key>` or `x-api-key: <key>`."""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].decode("latin-1").strip()
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
    return None


def cost_of(usage: Usage, price: Price | None) -> float:
    """USD for a request's usage at a deployment's prices (cached prompt tokens at the cached price)."""
    if price is None:
        return 0.0
    cached = min(usage.cached, usage.prompt) if price.cached_input is not None else 0
    cached_cost = cached * (price.cached_input or 0.0)
    tokens = (usage.prompt - cached) * price.input + cached_cost + usage.completion * price.output
    return tokens + _units_cost(usage, price) if _has_units(usage) else tokens


def _has_units(usage: Usage) -> bool:
    return bool(usage.images or usage.seconds or usage.characters or usage.search_units)


def _units_cost(usage: Usage, price: Price) -> float:
    """USD for a media answer's units (images, seconds of audio, characters, rerank search units)."""
    per_image = price.per_image_by.get(usage.image_kind, price.per_image or 0.0)
    return (usage.images * per_image + usage.seconds * (price.per_second or 0.0)
            + usage.characters * (price.per_character or 0.0) + usage.search_units * (price.per_search_unit or 0.0))


def _limits(grant: Grant) -> Limits | None:
    if grant.rpm is None and grant.tpm is None and grant.parallel is None:
        return None
    return Limits(grant.rpm, grant.tpm, grant.parallel)


def _budget(grant: Grant) -> Budget | None:
    if grant.budget is None:
        return None
    return Budget(grant.budget, grant.budget_period or "30d", grant.budget_soft, grant.budget_refuse_unpriced)


class Gatekeeper:
    """Authenticates, authorises and meters model calls."""

    def __init__(
        self,
        cache: KeyCache,
        teams: Mapping[str, TeamPolicy],
        *,
        required: bool,
        ledger: Ledger | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self._spec_teams = dict(teams)
        self._stored_teams: dict[str, TeamPolicy] = {}
        self.teams = dict(teams)
        self.required = required
        self.ledger = ledger or Ledger()
        self.wall = wall
        self._spec_users: dict[str, Limits | None] = {}
        self._stored_users: dict[str, Limits | None] = {}
        self.users: dict[str, Limits | None] = {}
        self.default_user: Limits | None = None

    def set_users(self, users: Mapping[str, Limits | None], default: Limits | None) -> None:
        """Per-user limits (a reloaded plan's `users`); `default` applies to each user without an entry."""
        self._spec_users = dict(users)
        self.default_user = default
        self.users = {**self._stored_users, **self._spec_users}

    def set_stored(self, teams: Mapping[str, TeamPolicy], users: Mapping[str, Limits | None]) -> None:
        """Teams and users created through the admin API (the spec's win on a shared name)."""
        self._stored_teams, self._stored_users = dict(teams), dict(users)
        self.teams = {**self._stored_teams, **self._spec_teams}
        self.users = {**self._stored_users, **self._spec_users}

    def user_limits(self, user: str) -> Limits | None:
        """The limits of `user`: its own entry, else the default (each user counted on its own)."""
        return self.users.get(user, self.default_user)

    def configure(self, grants: tuple[Grant, ...], teams: Mapping[str, TeamPolicy], required: bool) -> None:
        """Apply a (re)loaded plan's keys and teams; counters and store keys, teams and users are kept."""
        self.cache.set_fixed(grants)
        self._spec_teams = dict(teams)
        self.teams = {**self._stored_teams, **self._spec_teams}
        self.required = required

    def authenticate(self, token: str | None) -> Grant | None:
        """The caller's grant; None when the gateway is open (no `auth` in the spec) and no key came."""
        if token is None:
            if self.required:
                raise AuthError("missing API key: send 'Authorization: Bearer <key>' or 'x-api-key'")
            return None
        grant = self.cache.lookup(token)
        if grant is None or grant.revoked:
            if not self.required:
                return None
            raise AuthError("invalid API key")
        if grant.expires_at is not None and grant.expires_at <= self.wall():
            raise AuthError("this API key has expired", code="expired_api_key")
        return grant

    def admit(self, grant: Grant | None, group: str, now: float,
              estimate: Callable[[], Estimate] | None = None) -> Admission:
        """Check permissions, budgets and limits for a call to `group`, and count it. When a budget or
        a tpm limit applies, the request's worst case (`estimate()`) is reserved until it settles:
        a request is refused once settled plus reserved has reached a limit."""
        if grant is None or grant.master:
            return Admission(grant, ())
        team = self.teams.get(grant.team) if grant.team else None
        if not grant.allows(group) or (team is not None and team.models is not None and group not in team.models):
            raise Forbidden(f"this key may not use model '{group}'", param="model")
        wall = self.wall()
        checks: list[tuple[str, Limits | None, Budget | None]] = [(f"key:{grant.hash}", _limits(grant), _budget(grant))]
        if team is not None:
            checks.append((f"team:{team.name}", team.limits, team.budget))
        if grant.user:
            checks.append((f"user:{grant.user}", self.user_limits(grant.user), None))
        budgets = [(subject, budget) for subject, _, budget in checks if budget is not None]
        tpm = any(limits is not None and limits.tpm is not None for _, limits, _ in checks)
        tokens, cost, unpriced = estimate() if estimate is not None and (budgets or tpm) else (0, 0.0, False)
        for subject, budget in budgets:
            who = subject.split(":", 1)[0]
            if unpriced and budget.refuse_unpriced:
                raise PriceUnknown(f"the {who}'s budget refuses models without a price, and a deployment of "
                                   f"'{group}' has none (declare its price or base_model)", param="model")
            if self.ledger.over_budget(subject, budget, wall):
                raise RateLimited(f"the {who}'s budget of ${budget.amount:g} per {budget.period} is spent "
                                  "(or held by requests in flight)", code="budget_exceeded", retry_after=None)
        for subject, limits, _ in checks:
            if limits is not None:
                wait = self.ledger.limited_for(subject, limits, now)
                if wait is not None:
                    who = subject.split(":", 1)[0]
                    raise RateLimited(f"the {who}'s rate limit is reached", retry_after=wait)
        subjects = tuple(s for s, _, _ in checks)
        reserve = tokens if tpm else 0
        window = -1
        for subject in subjects:
            window = self.ledger.start(subject, now, reserve)
        budgeted = tuple(subject for subject, _ in budgets)
        for subject in budgeted:
            self.ledger.hold(subject, cost)
        return Admission(grant, subjects, reserve, window, cost, budgeted)

    def budget_of(self, subject: str, grant: Grant | None) -> Budget | None:
        """The budget of an admitted request's subject (`key:...` or `team:...`)."""
        if subject.startswith("key:") and grant is not None:
            return _budget(grant)
        if subject.startswith("team:"):
            team = self.teams.get(subject[5:])
            return team.budget if team else None
        return None

    def undo(self, admission: Admission, now: float) -> None:
        """Take back an admission that was refused after all (by the budgets shared through Redis)."""
        for subject in admission.budgeted:
            self.ledger.release(subject, admission.held)
        for subject in admission.subjects:
            self.ledger.undo_start(subject, now, admission.reserved, admission.window)

    def charge(self, admission: Admission, now: float, usage: Usage, cost: float) -> list[str]:
        """Count a part of a request still in flight (one response of a realtime session): its tokens
        and spend, without finishing it; returns the subjects whose soft threshold this crossed."""
        crossed: list[str] = []
        wall = self.wall()
        for subject in admission.subjects:
            self.ledger.add_tokens(subject, now, usage.prompt + usage.completion)
            budget = self.budget_of(subject, admission.grant)
            if cost and self.ledger.add_spend(subject, cost, budget, wall):
                crossed.append(subject)
        return crossed

    def spent_budget(self, admission: Admission) -> str | None:
        """The first subject of an admitted request whose budget is now spent (a session ends then)."""
        wall = self.wall()
        for subject in admission.budgeted:
            budget = self.budget_of(subject, admission.grant)
            if budget is not None and self.ledger.over_budget(subject, budget, wall):
                return subject
        return None

    def settle(self, admission: Admission, now: float, usage: Usage | None, cost: float) -> list[str]:
        """Release the request's counters and reservations, add its tokens and spend; returns the
        subjects whose soft budget threshold this request crossed."""
        tokens = usage.prompt + usage.completion if usage is not None else 0
        crossed: list[str] = []
        wall = self.wall()
        grant = admission.grant
        for subject in admission.budgeted:
            self.ledger.release(subject, admission.held)
        pushed = admission.remote is not None
        for subject in admission.subjects:
            self.ledger.finish(subject, now, tokens, admission.reserved, admission.window)
            budget = self.budget_of(subject, grant)
            if cost and self.ledger.add_spend(subject, cost, budget, wall, pushed=pushed and budget is not None):
                crossed.append(subject)
        return crossed


def _limits_of(rule: LimitRule | None) -> Limits | None:
    return None if rule is None else Limits(rule.rpm, rule.tpm, rule.parallel)


def users_from_plan(plan: Plan) -> tuple[dict[str, Limits | None], Limits | None]:
    """The spec's per-user limits by user, and the `default` entry's."""
    named = {u.name: _limits_of(u.limits) for u in plan.users if u.name != "default"}
    default = next((_limits_of(u.limits) for u in plan.users if u.name == "default"), None)
    return named, default


def policies_from_plan(plan: Plan) -> tuple[tuple[Grant, ...], dict[str, TeamPolicy]]:
    """The spec's keys (master and static, secrets resolved: call off the event loop) and teams."""
    teams = {
        t.name: TeamPolicy(
            name=t.name,
            models=frozenset(t.models) if t.models else None,
            limits=None if t.limits is None else Limits(t.limits.rpm, t.limits.tpm, t.limits.parallel),
            budget=None if t.budget is None else Budget(t.budget.amount, t.budget.period, t.budget.soft,
                                                        t.budget.refuse_unpriced),
        )
        for t in plan.teams
    }
    grants: list[Grant] = []
    if plan.auth is not None:
        if plan.auth.master_key is not None:
            grants.append(Grant(hash=hash_key(resolve(plan.auth.master_key)), name="master", master=True))
        for k in plan.auth.keys:
            grants.append(Grant(
                hash=hash_key(resolve(k.key)), name=k.name, team=k.team, user=k.user,
                models=frozenset(k.models) if k.models else None,
                budget=k.budget.amount if k.budget else None, budget_period=k.budget.period if k.budget else None,
                budget_soft=k.budget.soft if k.budget else None,
                budget_refuse_unpriced=k.budget.refuse_unpriced if k.budget else False,
                rpm=k.limits.rpm if k.limits else None, tpm=k.limits.tpm if k.limits else None,
                parallel=k.limits.parallel if k.limits else None,
                metadata={**({"a2a": {"allow": list(k.a2a.allow), "deny": list(k.a2a.deny)}} if k.a2a else {}),
                          **({"mcp": {"allow": k.mcp.allow, "deny": k.mcp.deny}} if k.mcp else {})},
            ))
    return tuple(grants), teams
