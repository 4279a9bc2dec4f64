"""The `store` section, and `store.archive`: the spend archive's bucket, period, format, retention and credentials. The
secret access key must be a reference; `keep_days` may not be shorter than a budget period of the
spec (budgets are summed from the spend rows the archive prunes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sidegate.compiler.diagnostics import Collector
from sidegate.compiler.sections.governance import check_redis_url
from sidegate.runtime.plan import Secret, Store
from sidegate.runtime.plan.archive import Archive, ArchiveFormat

__all__ = ["resolve_archive", "resolve_store"]

SecretOf = Callable[[Any, str], "Secret | None"]
Reference = Callable[[Mapping[str, Any], str, str, str], "Secret | None"]
_POINTER = "/store/archive"
_FORMS = "(${NAME}, {env: NAME} or {file: /path})"


def _budget_days(value: Any) -> Iterator[int]:
    """The length in days of every budget period declared anywhere in the spec (a month: 31)."""
    if isinstance(value, Mapping):
        budget = value.get("budget")
        if isinstance(budget, Mapping) and isinstance(budget.get("period"), str):
            period = budget["period"]
            if period == "month":
                yield 31
            elif period.endswith("d") and period[:-1].isdigit():
                yield int(period[:-1])
        for item in value.values():
            yield from _budget_days(item)
    elif isinstance(value, list):
        for item in value:
            yield from _budget_days(item)


def resolve_store(spec: Mapping[str, Any], secret: SecretOf, reference: Reference,
                  seconds: Callable[[str], float], out: Collector) -> Store:
    """Lower the `store` section (its database, Redis, retention, journal and archive)."""
    raw = spec.get("store", {})
    redis = secret(raw["redis"], "/store/redis") if "redis" in raw else None
    check_redis_url(redis, out)
    sync = seconds(raw.get("redis_sync", "500ms"))
    if not 0.05 <= sync <= 10.0:
        out.error("store.redis-sync-range", "/store/redis_sync",
                  f"redis_sync must be between 50ms and 10s (got {raw['redis_sync']})")
    database = secret(raw.get("database", "sqlite://:memory:"), "/store/database") or Secret(parts=())
    return Store(database=database, redis=redis, redis_sync=sync, journal=raw.get("journal"),
                 spend_buffer=raw.get("spend_buffer", 100_000),
                 responses_retention=seconds(raw.get("responses_retention", "30d")),
                 archive=resolve_archive(spec, secret, reference, seconds, out))


def resolve_archive(spec: Mapping[str, Any], secret: SecretOf, reference: Reference,
                    seconds: Callable[[str], float], out: Collector) -> Archive | None:
    """Lower `store.archive` (None when the spec has none); problems go to `out`."""
    raw = spec.get("store", {}).get("archive")
    if raw is None:
        return None
    bucket, _, prefix = raw["url"][len("s3://"):].partition("/")
    every = seconds(raw.get("every", "1h"))
    if not 300 <= every <= 86400 or 86400 % every:
        out.error("store.archive-every", f"{_POINTER}/every",
                  f"every must be between 5m and 1d and divide a day evenly (got {raw['every']})")
    grace = seconds(raw.get("grace", "5m"))
    if grace > 86400:
        out.error("store.archive-grace", f"{_POINTER}/grace", f"grace must be at most 1d (got {raw['grace']})")
    keep = raw.get("keep_days")
    longest = max(_budget_days({k: v for k, v in spec.items() if k != "store"}), default=0)
    if keep is not None and keep < longest:
        out.error("store.archive-keep-days", f"{_POINTER}/keep_days",
                  f"keep_days {keep} is shorter than a budget period of this spec ({longest} days): budgets are "
                  f"summed from the spend rows kept in the database; keep them at least {longest} days")
    key_id = secret(raw["access_key_id"], f"{_POINTER}/access_key_id") if "access_key_id" in raw else None
    key = reference(raw, "secret_access_key", _POINTER, _FORMS)
    if (key_id is None) != ("secret_access_key" not in raw):
        missing = "secret_access_key" if "access_key_id" in raw else "access_key_id"
        out.error("store.archive-credentials", f"{_POINTER}/{missing}",
                  f"access_key_id and secret_access_key go together: add {missing}, or remove both to use "
                  "botocore's default credential chain")
    endpoint = raw.get("endpoint_url")
    return Archive(
        bucket=bucket,
        prefix=prefix.strip("/"),
        every=every,
        grace=grace,
        format=ArchiveFormat(raw.get("format", "jsonl.gz")),
        keep_days=keep,
        endpoint_url=endpoint,
        region=raw.get("region", "us-east-1"),
        access_key_id=key_id,
        secret_access_key=key,
        path_style=raw.get("path_style", endpoint is not None),
    )
