"""The admin API (master key only): virtual keys, teams, users, spend logs and reports, in shapes a
LiteLLM user would recognise (`/key/generate`, `/key/info`, `/key/update`, `/key/delete`,
`/team/new`, `/team/info`, `/user/new`, `/user/info`, `/spend/logs`, `/spend/report`). Every
database call goes through the store's worker-thread seam; the key cache (and the gate's stored
teams and users) are updated at once so this pod sees changes immediately."""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, cast

import orjson

from sidegate.runtime.errors import BadRequest, NotFound
from sidegate.runtime.governance.gate import TeamPolicy
from sidegate.runtime.governance.keys import Grant, KeyCache, display_prefix, hash_key, new_key
from sidegate.runtime.governance.limits import Budget, Limits
from sidegate.runtime.http.key_guardrails import key_guardrails
from sidegate.runtime.store.database import Store
from sidegate.runtime.store.models import ApiKey, DailySpend, SpendLog, Team, User
from sidegate.runtime.store.orm import peewee

_MAX_PAGE = 1_000_000_000
"""Pages past this are refused (a larger offset overflows the database's integers)."""

__all__ = ["ADMIN_ROUTES", "Admin", "grant_from_row", "team_from_row", "user_limits_from_row"]

ADMIN_ROUTES = {
    ("POST", "/key/generate"), ("GET", "/key/info"), ("POST", "/key/update"), ("POST", "/key/delete"),
    ("POST", "/team/new"), ("GET", "/team/info"), ("POST", "/user/new"), ("GET", "/user/info"),
    ("GET", "/spend/logs"), ("GET", "/spend/report"), ("POST", "/cache/purge"),
}
_PERIOD = re.compile(r"^([0-9]+d|month)$")
_DURATION = re.compile(r"^([0-9]+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def grant_from_row(row: ApiKey) -> Grant:
    """The cache entry for a stored key."""
    models = orjson.loads(row.models)
    return Grant(
        hash=row.hash, name=row.name, team=row.team, user=row.user,
        models=frozenset(models) if models else None, budget=row.budget, budget_period=row.budget_period,
        rpm=row.rpm, tpm=row.tpm, parallel=row.parallel, expires_at=row.expires_at, revoked=row.revoked,
        metadata=orjson.loads(row.metadata or "{}"), guardrails=tuple(orjson.loads(row.guardrails or "[]")),
    )


def team_from_row(row: Team) -> TeamPolicy:
    """The gate's policy for a stored team."""
    models = orjson.loads(row.models)
    limits = Limits(row.rpm, row.tpm, row.parallel) if (row.rpm, row.tpm, row.parallel) != (None, None, None) else None
    budget = Budget(row.budget, row.budget_period or "30d") if row.budget is not None else None
    return TeamPolicy(name=row.name, models=frozenset(models) if models else None, limits=limits, budget=budget)


def user_limits_from_row(row: User) -> Limits | None:
    """The gate's limits for a stored user."""
    return Limits(row.rpm, row.tpm, row.parallel) if (row.rpm, row.tpm, row.parallel) != (None, None, None) else None


def _opt_int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"'{name}' must be a positive integer", param=name)
    return value


def _opt_float(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"'{name}' must be a non-negative number", param=name)
    return float(value)


def _period(body: Mapping[str, Any]) -> str | None:
    value = body.get("budget_duration")
    if value is None:
        return None
    if not isinstance(value, str) or not _PERIOD.match(value):
        raise BadRequest("'budget_duration' must be like 1d, 7d, 30d or month", param="budget_duration")
    return value


MAX_NAME = 255
"""Longest key alias, team or user id (the columns are VARCHAR(255) on PostgreSQL)."""


def _text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or len(value) > MAX_NAME):
        raise BadRequest(f"'{name}' must be a string of at most {MAX_NAME} characters", param=name)
    return value


def _models(body: Mapping[str, Any]) -> str:
    value = body.get("models", [])
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise BadRequest("'models' must be a list of model names", param="models")
    return orjson.dumps(sorted(value)).decode()


def _metadata(body: Mapping[str, Any]) -> str:
    value = body.get("metadata", {})
    if not isinstance(value, dict):
        raise BadRequest("'metadata' must be a JSON object", param="metadata")
    return orjson.dumps(value).decode()


def _limit_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "budget": _opt_float(body, "max_budget"),
        "budget_period": _period(body) or ("30d" if body.get("max_budget") is not None else None),
        "rpm": _opt_int(body, "rpm_limit"),
        "tpm": _opt_int(body, "tpm_limit"),
        "parallel": _opt_int(body, "max_parallel_requests"),
    }


def _key_view(row: ApiKey) -> dict[str, Any]:
    return {
        "token": row.hash, "key_prefix": row.prefix, "key_alias": row.name, "team_id": row.team,
        "user_id": row.user, "models": orjson.loads(row.models), "max_budget": row.budget,
        "budget_duration": row.budget_period, "rpm_limit": row.rpm, "tpm_limit": row.tpm,
        "max_parallel_requests": row.parallel, "expires": row.expires_at, "revoked": row.revoked,
        "created_at": row.created_at, "metadata": orjson.loads(row.metadata or "{}"),
        "guardrails": orjson.loads(row.guardrails or "[]"),
    }


def _hint(name: str, names: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


Known = Callable[[], tuple[Collection[str], Collection[str]]]
"""() -> (the model group names served, the spec's team names)."""


class Admin:
    """Admin request handlers; `now` is the wall clock (seconds since the epoch). With `known`,
    model and team names are checked (unknown ones are a 400): teams against the spec's and the
    store's."""

    def __init__(self, store: Store, cache: KeyCache, now: Callable[[], float] = time.time,
                 on_change: Callable[[], Awaitable[None]] | None = None, known: Known | None = None,
                 purge: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
                 guardrails: Callable[[], Collection[str]] = frozenset) -> None:
        self.store = store
        self.guardrails = guardrails
        """The plan's declared guardrail names (what a key's `guardrails` may name)."""
        self.purge = purge
        """The response cache's purge (`POST /cache/purge`)."""
        self.cache = cache
        self.now = now
        self.on_change = on_change
        """Called after a team or user is created, so the gate enforces it from the next request."""
        self.known = known

    def _check_models(self, body: Mapping[str, Any]) -> None:
        if self.known is None or "models" not in body:
            return
        groups = self.known()[0]
        for name in orjson.loads(_models(body)):
            if name not in groups:
                raise BadRequest(f"model '{name}' is not a model group of this gateway{_hint(name, groups)}",
                                 param="models", code="unknown_model")

    async def _check_team(self, body: Mapping[str, Any]) -> None:
        name = _text(body, "team_id")
        if self.known is None or name is None:
            return
        spec_teams = self.known()[1]
        if name in spec_teams:
            return
        stored = await self.store.run(lambda: [t.name for t in Team.select(Team.name)])
        if name not in stored:
            raise BadRequest(f"team '{name}' does not exist (create it with /team/new or declare it under teams)"
                             f"{_hint(name, [*spec_teams, *stored])}", param="team_id", code="unknown_team")

    async def handle(self, method: str, path: str, query: Mapping[str, str], body: Mapping[str, Any]) -> Any:
        """The JSON answer to one admin call (raises GatewayError for bad input)."""
        handler = {
            "/key/generate": self.key_generate, "/key/info": self.key_info, "/key/update": self.key_update,
            "/key/delete": self.key_delete, "/team/new": self.team_new, "/team/info": self.team_info,
            "/user/new": self.user_new, "/user/info": self.user_info,
            "/spend/logs": self.spend_logs, "/spend/report": self.spend_report, "/cache/purge": self.cache_purge,
        }[path]
        return await handler(query if method == "GET" else body)

    async def cache_purge(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Drop the response cache's entries of one model group (`{"model": ...}`) or all (`{}`)."""
        if set(body) - {"model"}:
            raise BadRequest("/cache/purge takes only 'model' (a model group; none: every entry)")
        return await self.purge(dict(body)) if self.purge is not None else {"purged": 0, "model": body.get("model")}

    async def key_generate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a virtual key; the only time its value is shown."""
        key = new_key()
        now = self.now()
        expires = None
        if body.get("duration") is not None:
            m = _DURATION.match(str(body["duration"]))
            if not m:
                raise BadRequest("'duration' must be like 30s, 10m, 12h or 30d", param="duration")
            expires = now + int(m.group(1)) * _UNIT[m.group(2)]
        self._check_models(body)
        await self._check_team(body)
        fields = {
            "hash": hash_key(key), "prefix": display_prefix(key), "name": _text(body, "key_alias"),
            "team": _text(body, "team_id"), "user": _text(body, "user_id"), "models": _models(body),
            **_limit_fields(body), "metadata": _metadata(body), "guardrails": key_guardrails(body, self.guardrails()),
            "expires_at": expires, "revoked": False, "created_at": now, "updated_at": now,
        }
        row = await self.store.run(lambda: ApiKey.create(**fields))
        self.cache.put(grant_from_row(row))
        return {"key": key, **_key_view(row)}

    async def _row(self, body: Mapping[str, Any]) -> ApiKey:
        key = body.get("key")
        if not isinstance(key, str) or not key:
            raise BadRequest("'key' is required (the key, or its token hash)", param="key")
        h = key if re.fullmatch(r"[0-9a-f]{64}", key) else hash_key(key)
        row = await self.store.run(lambda: ApiKey.get_or_none(ApiKey.hash == h))
        if row is None:
            raise NotFound("no such key", code="key_not_found")
        return row

    async def key_info(self, query: Mapping[str, Any]) -> dict[str, Any]:
        """A key's settings and its spend so far."""
        row = await self._row(query)
        spend = await self.store.run(
            lambda: SpendLog.select(peewee.fn.COALESCE(peewee.fn.SUM(SpendLog.cost), 0.0))
            .where(SpendLog.key_hash == row.hash).scalar()
        )
        return {"key": row.hash, "info": {**_key_view(row), "spend": spend}}

    async def key_update(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Change a key's models, limits or budget."""
        row = await self._row(body)
        self._check_models(body)
        await self._check_team(body)
        changes: dict[str, Any] = {"updated_at": self.now()}
        if "models" in body:
            changes["models"] = _models(body)
        if "metadata" in body:
            changes["metadata"] = _metadata(body)
        if "guardrails" in body:
            changes["guardrails"] = key_guardrails(body, self.guardrails())
        for name, value in _limit_fields(body).items():
            if value is not None:
                changes[name] = value
        for field, column in (("key_alias", "name"), ("team_id", "team"), ("user_id", "user")):
            if field in body:
                changes[column] = _text(body, field)

        def update() -> ApiKey:
            ApiKey.update(**changes).where(ApiKey.hash == row.hash).execute()
            return ApiKey.get(ApiKey.hash == row.hash)

        fresh = await self.store.run(update)
        self.cache.put(grant_from_row(fresh))
        return _key_view(fresh)

    async def key_delete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Revoke keys (rows stay for the spend history; the keys stop working at once here)."""
        keys = body.get("keys")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise BadRequest("'keys' must be a non-empty list of keys", param="keys")
        hashes = [k if re.fullmatch(r"[0-9a-f]{64}", k) else hash_key(k) for k in keys]
        now = self.now()

        def revoke() -> tuple[list[str], list[str]]:
            with ApiKey._meta.database.atomic():
                found = {r.hash: r.revoked for r in ApiKey.select(ApiKey.hash, ApiKey.revoked)
                         .where(ApiKey.hash.in_(hashes))}
                if len(found) < len(set(hashes)):
                    return [], [h for h in hashes if h not in found]
                ApiKey.update(revoked=True, updated_at=now).where(ApiKey.hash.in_(hashes)).execute()
                return [h for h in hashes if found[h]], []

        already, missing = await self.store.run(revoke)
        if missing:
            raise NotFound(f"no such key: {', '.join(h[:12] + '...' for h in missing)} (nothing was revoked)",
                           code="key_not_found")
        for h in hashes:
            self.cache.drop(h)
        return {"deleted_keys": hashes, "already_revoked": already}

    async def team_new(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a team."""
        name = _text(body, "team_id") or _text(body, "team_alias")
        if not name:
            raise BadRequest("'team_id' is required", param="team_id")
        self._check_models(body)
        fields = {"name": name, "models": _models(body), **_limit_fields(body), "created_at": self.now()}
        try:
            await self.store.run(lambda: Team.create(**fields))
        except peewee.IntegrityError:
            raise BadRequest(f"team '{name}' exists", param="team_id", code="team_exists") from None
        if self.on_change is not None:
            await self.on_change()
        return {"team_id": name, **{k: v for k, v in fields.items() if k not in ("name",)}}

    async def user_new(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a user with its rate limits (counted across all of the user's keys)."""
        name = _text(body, "user_id")
        if not name:
            raise BadRequest("'user_id' is required", param="user_id")
        limits = _limit_fields(body)
        if limits["budget"] is not None:
            raise BadRequest("users take rate limits only; budgets belong to keys and teams", param="max_budget")
        fields = {"name": name, "rpm": limits["rpm"], "tpm": limits["tpm"], "parallel": limits["parallel"],
                  "created_at": self.now()}
        try:
            await self.store.run(lambda: User.create(**fields))
        except peewee.IntegrityError:
            raise BadRequest(f"user '{name}' exists", param="user_id", code="user_exists") from None
        if self.on_change is not None:
            await self.on_change()
        return {"user_id": name, "rpm_limit": fields["rpm"], "tpm_limit": fields["tpm"],
                "max_parallel_requests": fields["parallel"], "created_at": fields["created_at"]}

    async def user_info(self, query: Mapping[str, Any]) -> dict[str, Any]:
        """A user's limits, keys and spend."""
        name = query.get("user_id")
        user = await self.store.run(lambda: User.get_or_none(User.name == name))
        if user is None:
            raise NotFound("no such user", code="user_not_found")
        keys, spend = await self._keys_and_spend("user", name)
        return {"user_id": name, "user_info": {"rpm_limit": user.rpm, "tpm_limit": user.tpm,
                                               "max_parallel_requests": user.parallel}, "keys": keys, "spend": spend}

    async def _keys_and_spend(self, column: str, name: Any) -> tuple[list[dict[str, Any]], float]:
        """The keys whose `column` (team or user) is `name`, and the spend logged under it."""

        def read() -> tuple[list[dict[str, Any]], float]:
            keys = [_key_view(k) for k in ApiKey.select().where(getattr(ApiKey, column) == name)]
            total = SpendLog.select(peewee.fn.COALESCE(peewee.fn.SUM(SpendLog.cost), 0.0))
            return keys, float(total.where(getattr(SpendLog, column) == name).scalar())

        return await self.store.run(read)

    async def team_info(self, query: Mapping[str, Any]) -> dict[str, Any]:
        """A team's settings, keys and spend."""
        name = query.get("team_id")
        team = await self.store.run(lambda: Team.get_or_none(Team.name == name))
        if team is None:
            raise NotFound("no such team", code="team_not_found")
        keys, spend = await self._keys_and_spend("team", name)
        return {"team_id": name, "team_info": {"models": orjson.loads(team.models), "max_budget": team.budget,
                                               "rpm_limit": team.rpm, "tpm_limit": team.tpm}, "keys": keys,
                "spend": spend}

    @staticmethod
    def _when(query: Mapping[str, Any], name: str) -> float | None:
        value = query.get(name)
        if not value:
            return None
        try:
            return time.mktime(time.strptime(str(value), "%Y-%m-%d")) - time.timezone
        except ValueError:
            raise BadRequest(f"'{name}' must be a date like 2026-11-24", param=name) from None

    async def spend_logs(self, query: Mapping[str, Any]) -> dict[str, Any]:
        """Spend rows, newest first, filtered by key, team, model and dates, paginated."""
        conds = []
        if query.get("api_key"):
            conds.append(SpendLog.key_hash == hash_key(str(query["api_key"])))
        if query.get("team_id"):
            conds.append(SpendLog.team == query["team_id"])
        if query.get("model"):
            conds.append(SpendLog.model == query["model"])
        start, end = self._when(query, "start_date"), self._when(query, "end_date")
        if start is not None:
            conds.append(SpendLog.created_at >= start)
        if end is not None:
            conds.append(SpendLog.created_at < end + 86400)
        try:
            limit = max(1, min(1000, int(query.get("limit", 100))))
            page = max(1, int(query.get("page", 1)))
        except ValueError:
            raise BadRequest("'limit' and 'page' must be integers") from None
        if page > _MAX_PAGE:
            raise BadRequest(f"'page' must be at most {_MAX_PAGE:,}", param="page")

        def read() -> list[dict[str, Any]]:
            q = SpendLog.select().order_by(SpendLog.created_at.desc(), SpendLog.request_id.desc())
            if conds:
                q = q.where(*conds)
            return cast(list[dict[str, Any]], list(q.paginate(page, limit).dicts()))

        rows = await self.store.run(read)
        return {"page": page, "limit": limit, "data": rows}

    async def spend_report(self, query: Mapping[str, Any]) -> dict[str, Any]:
        """Totals grouped by key, team, model or day (from the daily aggregates)."""
        group_by = query.get("group_by", "day")
        column = {"key": DailySpend.key_hash, "team": DailySpend.team, "model": DailySpend.model,
                  "day": DailySpend.day}.get(str(group_by))
        if column is None:
            raise BadRequest("'group_by' must be key, team, model or day", param="group_by")
        start, end = query.get("start_date"), query.get("end_date")

        def read() -> list[dict[str, Any]]:
            q = DailySpend.select(
                column.alias("group"), peewee.fn.SUM(DailySpend.requests).alias("requests"),
                peewee.fn.SUM(DailySpend.prompt_tokens).alias("prompt_tokens"),
                peewee.fn.SUM(DailySpend.completion_tokens).alias("completion_tokens"),
                peewee.fn.SUM(DailySpend.cost).alias("spend"),
            ).group_by(column).order_by(column)
            if start:
                q = q.where(DailySpend.day >= str(start))
            if end:
                q = q.where(DailySpend.day <= str(end))
            return cast(list[dict[str, Any]], list(q.dicts()))

        return {"group_by": group_by, "data": await self.store.run(read)}
