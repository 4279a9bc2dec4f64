"""The governance glue around model calls and the admin API: admit a call, settle it (counters,
spend, soft-budget warnings, the spend row), and serve `/key/*`, `/team/*`, `/spend/*` to the
master key. Owned by the app; the key cache, counters and spend writer outlive plan reloads."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import trio

from sidegate.runtime.asgi import Receive, Scope, read_body
from sidegate.runtime.errors import RateLimited
from sidegate.runtime.governance.gate import (
    Admission,
    AuthError,
    Forbidden,
    Gatekeeper,
    cost_of,
    token_of,
    users_from_plan,
)
from sidegate.runtime.governance.keys import Grant, KeyCache, looks_like_jwt
from sidegate.runtime.governance.limits import Budget, period_start
from sidegate.runtime.governance.redis_budget import SharedBudgets
from sidegate.runtime.governance.redis_sync import RedisSync
from sidegate.runtime.governance.reserve import Basis, estimate
from sidegate.runtime.http.admin import ADMIN_ROUTES, Admin, grant_from_row, team_from_row, user_limits_from_row
from sidegate.runtime.http.gemini.dialect import google_key
from sidegate.runtime.http.request_guard import check_depth
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.observe.metrics import Metrics
from sidegate.runtime.routing.call import Call, json_object
from sidegate.runtime.routing.state import Runtime
from sidegate.runtime.store.database import Store
from sidegate.runtime.store.journal import Journal, journal_path
from sidegate.runtime.store.models import ApiKey, SpendLog, User
from sidegate.runtime.store.models import Team as TeamRow
from sidegate.runtime.store.orm import peewee
from sidegate.runtime.store.spend import SpendRow, SpendWriter, guardrail_summary
from sidegate.runtime.upstream.tokens import estimate_usage

if TYPE_CHECKING:
    from sidegate.runtime.governance.jwt_auth import JwtVerifier

__all__ = ["ADMIN_ROUTES", "Access"]


def _verifier(runtime: Runtime, current: JwtVerifier | None) -> JwtVerifier | None:
    rule = runtime.plan.auth.jwt if runtime.plan.auth is not None else None
    if rule is None:
        return None
    if current is not None and current.rule == rule:
        return current  # keep the cached signing keys across a reload
    from sidegate.runtime.governance.jwt_auth import (
        JwtVerifier,  # pyjwt and cryptography (~8 MB) only where auth.jwt is set
    )

    return JwtVerifier(rule, runtime.jwt_secret)


class Access:
    """Keys, limits, budgets and spend for one process."""

    def __init__(self, runtime: Runtime, logger: Logger, metrics: Metrics | None = None) -> None:
        self.gate = Gatekeeper(KeyCache(), runtime.teams, required=runtime.plan.auth is not None)
        self.gate.configure(runtime.grants, runtime.teams, runtime.plan.auth is not None)
        self.gate.set_users(*users_from_plan(runtime.plan))
        self.logger = logger
        self.metrics = metrics
        self.spend: SpendWriter | None = None
        self.admin: Admin | None = None
        self.refresh = runtime.plan.auth.refresh if runtime.plan.auth else 5.0
        self.jwt = _verifier(runtime, None)
        self.shared = RedisSync(self.gate.ledger, logger, metrics.registry if metrics is not None else None)
        self.shared.configure(runtime.plan.store.redis, runtime.plan.store.redis_sync)
        self.budgets = SharedBudgets(self.shared)
        self.journal_setting = runtime.plan.store.journal
        self.groups: frozenset[str] = frozenset(runtime.groups)
        self._spec_team_names: frozenset[str] = frozenset(runtime.teams)
        self.guardrail_names = _guardrail_names(runtime)
        self.spend_buffer = runtime.plan.store.spend_buffer
        self.cache_purge: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
        """`POST /cache/purge` (the app's response cache)."""

    def configure(self, runtime: Runtime) -> None:
        """Apply a reloaded plan's keys and teams."""
        self.groups, self._spec_team_names = frozenset(runtime.groups), frozenset(runtime.teams)
        self.guardrail_names = _guardrail_names(runtime)
        self.gate.configure(runtime.grants, runtime.teams, runtime.plan.auth is not None)
        self.gate.set_users(*users_from_plan(runtime.plan))
        self.refresh = runtime.plan.auth.refresh if runtime.plan.auth else 5.0
        self.jwt = _verifier(runtime, self.jwt)
        self.shared.configure(runtime.plan.store.redis, runtime.plan.store.redis_sync)

    async def attach(self, store: Store) -> None:
        """Start using the store: load stored keys and this period's spend (before serving)."""
        path = journal_path(self.journal_setting, store.db)
        self.spend = SpendWriter(store, on_failure=lambda msg, n: self.logger.error(
            "spend_write_failed", error=msg, pending=n), metrics=self.metrics, max_buffer=self.spend_buffer,
            journal=Journal(path) if path is not None else None)
        self.admin = Admin(store, self.gate.cache, on_change=lambda: self.reload_keys(store),
                           known=lambda: (self.groups, self._spec_team_names), purge=self.cache_purge,
                           guardrails=lambda: self.guardrail_names)
        await self.spend.open_journal()
        if self.spend.journal_rows:
            left = self.spend.journal_rows
            try:  # before budgets are loaded, so they count the journaled spend
                stored = await self.spend.replay()
                self.logger.info("spend_journal_replayed", path=path, rows=left, stored=stored)
            except Exception as exc:
                self.logger.error("spend_journal_replay_failed", path=path, rows=left,
                                  error=f"{type(exc).__name__}: {exc}", retry="by the spend writer")
        await self.reload_keys(store)
        await self._load_spend(store)

    async def reload_keys(self, store: Store) -> None:
        """Re-read every stored key into the cache (the bound on revocation from elsewhere), and the
        teams and users created through the admin API."""
        rows = await store.run(lambda: [grant_from_row(r) for r in ApiKey.select()])
        self.gate.cache.replace_stored(g for g in rows if not g.revoked)
        teams = await store.run(lambda: {t.name: team_from_row(t) for t in TeamRow.select()})
        users = await store.run(lambda: {u.name: user_limits_from_row(u) for u in User.select()})
        self.gate.set_stored(teams, users)

    async def _load_spend(self, store: Store) -> None:
        wall = time.time()
        budgets: list[tuple[str, Budget, str, str]] = []
        for g in self.gate.cache.all():
            if g.budget is not None:
                budgets.append((f"key:{g.hash}", Budget(g.budget, g.budget_period or "30d"), "key_hash", g.hash))
        for t in self.gate.teams.values():
            if t.budget is not None:
                budgets.append((f"team:{t.name}", t.budget, "team", t.name))
        for subject, budget, column, value in budgets:
            since = period_start(budget.period, wall)
            field = getattr(SpendLog, column)

            def total(f: Any = field, v: str = value, s: float = since) -> float:
                query = SpendLog.select(peewee.fn.COALESCE(peewee.fn.SUM(SpendLog.cost), 0.0))
                return float(query.where((f == v) & (SpendLog.created_at >= s)).scalar())

            self.gate.ledger.load_spend(subject, budget, await store.run(total), wall)

    async def run(self, store: Store) -> None:
        """Background work: the spend writer, the periodic key refresh, the JWKS refresh."""
        assert self.spend is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.spend.run)
            nursery.start_soon(self.shared.run)
            nursery.start_soon(self.budgets.run)
            if self.jwt is not None:
                nursery.start_soon(self.jwt.run)
            while True:
                await trio.sleep(self.refresh)
                try:
                    await self.reload_keys(store)
                except Exception as exc:
                    self.logger.error("key_refresh_failed", error=f"{type(exc).__name__}: {exc}")

    async def admit(self, grant: Grant | None, group: str, data: dict[str, Any] | None = None,
                    basis: Basis | None = None, op: str = "chat", request_id: str = "") -> Admission:
        """Admit an authenticated model call to `group` (its worst case reserved against budgets and
        tpm; computed only when one applies). With `store.redis`, budgets are also reserved in Redis
        (one round trip), so the sidecars sharing them cannot together overshoot."""
        worst = None if data is None or basis is None else (lambda: estimate(basis, data, op))
        wall = self.gate.wall()
        admission = self.gate.admit(grant, group, wall, worst)
        if not admission.budgeted or not self.budgets.active:
            return admission
        budgets = [(s, b) for s in admission.budgeted if (b := self.gate.budget_of(s, grant)) is not None]
        try:
            held, refused = await self.budgets.reserve(request_id, budgets, admission.held, wall)
        except BaseException:  # cancelled while waiting (the shutdown drain): nothing may stay reserved
            self.gate.undo(admission, self.gate.wall())
            raise
        if refused is not None:
            self.gate.undo(admission, self.gate.wall())
            budget = self.gate.budget_of(refused, grant)
            amount = f"${budget.amount:g} per {budget.period}" if budget is not None else ""
            raise RateLimited(f"the {refused.split(':', 1)[0]}'s budget of {amount} is spent (or held by requests "
                              "in flight on the sidecars sharing it)", code="budget_exceeded", retry_after=None)
        return admission if held is None else replace(admission, remote=held)

    async def authenticate(self, scope: Scope, *, google: bool = False) -> Grant | None:
        """The caller's grant: a JWT when `auth.jwt` is set and the token is one, else a key (with
        `google`, also Google's `x-goog-api-key` header or `?key=`: Gemini clients and pass-through)."""
        token = token_of(scope["headers"])
        if token is None and google:
            token = google_key(scope)
        if token is not None and self.jwt is not None and looks_like_jwt(token):
            return await self.jwt.verify(token)
        return self.gate.authenticate(token)

    def settle(self, admission: Admission, call: Call) -> None:
        """Release counters and reservations, count spend and queue the spend row."""
        usage = call.usage
        estimated = usage is None and bool(call.answer or call.answer_text)
        cost = 0.0
        try:
            if estimated:
                # The provider reported no usage for an answer that was served: count it locally
                # (after the answer went out) and flag the spend row.
                answer, text = call.answer_events()
                usage = call.usage = estimate_usage(call.request, answer, call.op, text)
                call.extra["usage_estimated"] = True
            cost = cost_of(usage, call.price) if usage is not None else 0.0
        except Exception as exc:  # a reservation must never leak: settle with what is known
            self.logger.error("usage_count_failed", request_id=call.request_id, error=f"{type(exc).__name__}: {exc}")
        if admission.remote is not None:
            self.budgets.settle_nowait(admission.remote, cost)
        for subject in self.gate.settle(admission, self.gate.wall(), usage, cost):
            scope = subject.split(":", 1)[0]
            self.logger.warning("budget_soft_threshold", subject=scope, name=subject.split(":", 1)[1][:12])
            if self.metrics is not None:
                self.metrics.budget_soft_crossings.labels(scope).inc()
        call.extra["cost"] = round(cost, 8)
        if self.spend is None:
            return
        grant = admission.grant
        self.spend.record_nowait(SpendRow(
            request_id=call.request_id, key_hash=grant.hash if grant else None, team=grant.team if grant else None,
            user=grant.user if grant else None, model=call.group, deployment=call.deployment,
            prompt_tokens=usage.prompt if usage else 0, completion_tokens=usage.completion if usage else 0,
            cached_tokens=usage.cached if usage else 0, reasoning_tokens=usage.reasoning if usage else 0,
            cost=cost, estimated=estimated, latency_ms=round((time.perf_counter() - call.t0) * 1000, 2),
            status=call.status, created_at=time.time(), cache_hit=call.extra.get("cache") == "hit",
            saved_cost=call.extra.get("saved_cost", 0.0), guardrails=guardrail_summary(call.extra.get("guardrails")),
        ))

    async def admin_call(self, method: str, path: str, scope: Scope, receive: Receive, limit: int, *,
                         body_timeout: float = 30.0, depth: int = 64) -> Any:
        """An admin API answer; master key only."""
        grant = self.gate.authenticate(token_of(scope["headers"]))
        if grant is None:
            raise AuthError("the admin API needs the master key")
        if not grant.master:
            raise Forbidden("the admin API needs the master key", code="forbidden")
        if self.admin is None:
            raise AuthError("the store is not open yet")
        body: dict[str, Any] = {}
        if method == "POST":
            raw = await read_body(scope, receive, limit, body_timeout)
            body = json_object(raw) if raw else {}
            check_depth(body, depth, raw)
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        return await self.admin.handle(method, path, query, body)


def _guardrail_names(runtime: Runtime) -> frozenset[str]:
    """The plan's declared guardrails (what the admin API lets a key name)."""
    plan = runtime.plan.guardrails
    return frozenset(r.name for r in plan.rules) if plan is not None else frozenset()
