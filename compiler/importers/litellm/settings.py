"""LiteLLM config -> sidegate spec, part two: the draft being built, and the proxy-wide settings.

`router_settings`, `litellm_settings`, `general_settings` and `environment_variables` become
`defaults` (timeout, retries, cooldown, strategy), group `fallbacks` and `aliases`, `auth` and
`observability` where the schema has a place for them; everything else is reported, at its key, as
left behind. What the schema offers is read from the schema itself (:class:`Features`), so the
translation grows with the language (the router's fallbacks and strategies, auth's master key)
without this module guessing.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidegate.compiler.diagnostics import Collector, join_pointer
from sidegate.compiler.importers.yamlwrite import Path
from sidegate.compiler.schemafile import load_schema

__all__ = ["Draft", "Features", "duration", "env_reference", "features", "translate_settings"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRATEGIES = {
    "simple-shuffle": "weighted",
    "least-busy": "least-busy",
    "latency-based-routing": "latency",
    "usage-based-routing": "usage",
    "usage-based-routing-v2": "usage",
    "cost-based-routing": "cost",
}
_FALLBACK_KINDS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
_OVERRIDABLE = ("num_retries", "allowed_fails", "cooldown_time", *_FALLBACK_KINDS)
"""Settings both router_settings and litellm_settings may hold (router_settings wins)."""
_REASONS = {
    "retry_policy": "sidegate retries by failure kind, in retry.on, not with per-exception counts",
    "allowed_fails_policy": "sidegate's circuit breaker counts failures by kind, without per-exception limits",
    "default_fallbacks": "sidegate has no fallbacks for every group; give each group its own",
    "enable_pre_call_checks": "sidegate checks context windows itself for groups with context_window_fallbacks",
    "drop_params": "sidegate passes request parameters through unchanged",
    "database_url": "store.database takes a postgresql:// URL written in the spec, its password as a reference",
    "master_key": "this schema has no auth section",
    "set_verbose": "use observability.logs.level",
    "aws_access_key_id": "sidegate signs with the AWS default chain: set AWS_ACCESS_KEY_ID in its environment",
    "aws_secret_access_key": "sidegate signs with the AWS default chain: set AWS_SECRET_ACCESS_KEY in its environment",
    "aws_session_token": "sidegate signs with the AWS default chain: set AWS_SESSION_TOKEN in its environment",
}


@dataclass(frozen=True, slots=True)
class Features:
    """Which optional parts of the spec language this schema has."""

    names: frozenset[str]
    strategies: frozenset[str]

    def __contains__(self, name: object) -> bool:
        return name in self.names


def _props(node: Any, defs: Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        node = defs.get(node["$ref"].rsplit("/", 1)[-1], {})
    props = node.get("properties", {}) if isinstance(node, Mapping) else {}
    return props if isinstance(props, Mapping) else {}


@functools.cache
def features() -> Features:
    """The optional parts of the spec language, read from the schema."""
    schema = load_schema()
    defs: Mapping[str, Any] = schema.get("$defs", {})
    top = _props(schema, defs)
    sections = {
        "defaults": _props(top.get("defaults"), defs),
        "group": _props(defs.get("model_group"), defs),
        "target": _props(defs.get("target"), defs),
        "auth": _props(top.get("auth"), defs),
        "store": _props(top.get("store"), defs),
        "logs": _props(_props(top.get("observability"), defs).get("logs"), defs),
    }
    names = frozenset(f"{section}.{name}" for section, props in sections.items() for name in props)
    enum = defs.get("strategy", {}).get("enum", [])
    return Features(names, frozenset(s for s in enum if isinstance(s, str)))


def env_reference(value: object) -> str | None:
    """``os.environ/NAME`` -> ``${NAME}``; None for anything else."""
    if isinstance(value, str) and value.startswith("os.environ/"):
        name = value[len("os.environ/") :]
        if _ENV_NAME.fullmatch(name):
            return "${" + name + "}"
    return None


def duration(seconds: object) -> str | None:
    """A positive number of seconds as a spec duration (``30s``, ``1500ms``); None when it is not one."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return None
    if seconds <= 0:
        return None
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass
class Draft:
    """The spec being built, its comments, and what was left behind."""

    out: Collector
    features: Features
    defaults: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Group name -> its mapping (targets filled in by the model_list translation)."""
    top: dict[str, Any] = field(default_factory=dict)
    """Other top-level sections (auth, observability)."""
    notes: dict[Path, list[str]] = field(default_factory=dict)
    left_behind: list[tuple[int, int, str]] = field(default_factory=list)
    """(line, column, note) of every setting left behind or assumed."""
    redis: dict[str, tuple[object, str]] = field(default_factory=dict)
    """router_settings' redis_host/port/password: value and pointer, joined into store.redis."""

    def where(self, pointer: str) -> str:
        """``line N`` of the node at ``pointer`` in the LiteLLM file."""
        return f"line {self.out.locate(pointer, True)[0]}"

    def note(self, path: Path, text: str) -> None:
        """A comment above the node at ``path`` of the spec."""
        self.notes.setdefault(path, []).append(text)

    def skip(self, pointer: str, message: str, code: str = "litellm.not-translated") -> None:
        """Report a setting left behind (at its key) and list it at the end of the spec."""
        self.out.warning(code, pointer, message, at_key=True)
        line, column = self.out.locate(pointer, True)
        self.left_behind.append((line, column, f"line {line}: {message}"))

    def unused(self, pointer: str, name: str) -> None:
        """Report a setting without a sidegate equivalent."""
        reason = _REASONS.get(name.rsplit(".", 1)[-1])
        self.skip(pointer, f"{name} has no sidegate equivalent{' (' + reason + ')' if reason else ''}; left out")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _strategy(draft: Draft, value: object, pointer: str) -> None:
    wanted = _STRATEGIES.get(value) if isinstance(value, str) else None
    if wanted is None or "defaults.strategy" not in draft.features or wanted not in draft.features.strategies:
        if wanted == "weighted":
            return  # the default both ways
        draft.skip(pointer, f"routing_strategy {value!r} has no sidegate equivalent yet; groups pick by weight")
        return
    if wanted != "weighted":
        draft.defaults["strategy"] = wanted
        draft.note(("defaults", "strategy"), f"routing_strategy {value} ({draft.where(pointer)})")


def _fallbacks(draft: Draft, kind: str, value: object, pointer: str) -> None:
    if f"group.{kind}" not in draft.features:
        draft.skip(pointer, f"{kind} have no sidegate equivalent yet; left out")
        return
    entries = value if isinstance(value, list) else [value]
    for index, entry in enumerate(entries):
        where = join_pointer(pointer, index) if isinstance(value, list) else pointer
        if not isinstance(entry, Mapping):
            draft.skip(where, f"{kind} entry is not a mapping of a model name to a list of models", "litellm.invalid")
            continue
        for group, chain in entry.items():
            at = join_pointer(where, group)
            if group not in draft.groups:
                draft.skip(at, f"{kind} for '{group}', which is not a translated model; left out", "litellm.invalid")
                continue
            names = chain if isinstance(chain, list) else [chain]
            kept = [n for n in names if isinstance(n, str) and n in draft.groups and n != group]
            for name in names:
                if name not in kept:
                    message = f"{kind} of '{group}': '{name}' is not a translated model; left out"
                    draft.skip(at, message, "litellm.invalid")
            if kept:
                target = draft.groups[group].setdefault(kind, [])
                target.extend(n for n in kept if n not in target)


def _retries(draft: Draft, value: object, pointer: str) -> None:
    retries = _int(value)
    if retries is None:
        draft.skip(pointer, "num_retries is not a whole number; left out", "litellm.invalid")
        return
    if "defaults.retry" not in draft.features:
        draft.unused(pointer, pointer[1:].replace("/", "."))
        return
    attempts = min(retries + 1, 10)
    draft.defaults.setdefault("retry", {})["attempts"] = attempts
    draft.note(("defaults", "retry"), f"num_retries {retries} ({draft.where(pointer)}): {attempts} attempts in all")
    if retries + 1 > 10:
        draft.skip(pointer, f"num_retries {retries} is over sidegate's limit; 10 attempts are kept", "litellm.invalid")


def _cooldown(draft: Draft, name: str, value: object, pointer: str) -> None:
    if "defaults.cooldown" not in draft.features:
        draft.unused(pointer, name)
        return
    cooldown = draft.defaults.setdefault("cooldown", {})
    if name == "allowed_fails" and _int(value) is not None:
        assert isinstance(value, int)
        cooldown["failures"] = value + 1  # LiteLLM cools a deployment down once it fails *more* than this
        draft.note(
            ("defaults", "cooldown"), f"allowed_fails {value} ({draft.where(pointer)}): open at the next failure"
        )
    elif name == "cooldown_time" and duration(value) is not None:
        cooldown["duration"] = duration(value)
    else:
        draft.skip(pointer, f"{name} is not a number; left out", "litellm.invalid")
    if not cooldown:
        del draft.defaults["cooldown"]


def _timeout(draft: Draft, name: str, value: object, pointer: str) -> None:
    if duration(value) is None:
        draft.skip(pointer, f"{name} is not a positive number of seconds; left out", "litellm.invalid")
        return
    draft.defaults["timeout"] = duration(value)
    draft.note(("defaults", "timeout"), f"{name} ({draft.where(pointer)}); in sidegate one deadline covers retries too")


def _alias(draft: Draft, value: object, pointer: str) -> None:
    if not isinstance(value, Mapping):
        draft.skip(pointer, "model_group_alias is not a mapping; left out", "litellm.invalid")
        return
    for alias, target in value.items():
        at = join_pointer(pointer, alias)
        group = target.get("model") if isinstance(target, Mapping) else target
        if not isinstance(group, str) or group not in draft.groups:
            draft.skip(at, f"alias '{alias}' names no translated model; left out", "litellm.invalid")
        elif alias in draft.groups or any(alias in g.get("aliases", ()) for g in draft.groups.values()):
            draft.skip(at, f"alias '{alias}' is already a model name; left out", "litellm.invalid")
        else:
            draft.groups[group].setdefault("aliases", []).append(alias)
            if isinstance(target, Mapping) and target.get("hidden"):
                draft.skip(join_pointer(at, "hidden"), "hidden aliases have no sidegate equivalent; it is listed")


def _section(draft: Draft, name: str, raw: Mapping[str, Any], done: set[str]) -> None:
    base = "/" + name
    for key, value in raw.items():
        pointer = join_pointer(base, key)
        if key in done and key in _OVERRIDABLE:
            draft.skip(pointer, f"{name}.{key} is overridden by router_settings.{key}; left out")
        elif key == "routing_strategy" and name == "router_settings":
            _strategy(draft, value, pointer)
        elif key == "num_retries":
            _retries(draft, value, pointer)
        elif key in _FALLBACK_KINDS:
            _fallbacks(draft, key, value, pointer)
        elif key in ("allowed_fails", "cooldown_time") and name != "general_settings":
            _cooldown(draft, key, value, pointer)
        elif (key, name) in (("timeout", "router_settings"), ("request_timeout", "litellm_settings")):
            if name == "litellm_settings" and "timeout" in done:
                message = "litellm_settings.request_timeout is overridden by router_settings.timeout; left out"
                draft.skip(pointer, message)
            else:
                _timeout(draft, f"{name}.{key}", value, pointer)
        elif key == "model_group_alias" and name == "router_settings":
            _alias(draft, value, pointer)
        elif key == "max_parallel_requests" and name == "general_settings" and _int(value):
            for group in draft.groups.values():
                for target in group["targets"]:
                    target.setdefault("max_parallel", value)
        elif key == "json_logs" and name == "litellm_settings" and isinstance(value, bool):
            draft.top.setdefault("observability", {})["logs"] = {"format": "json" if value else "text"}
        elif key in ("redis_host", "redis_port", "redis_password") and "store.redis" in draft.features:
            draft.redis[key] = (value, pointer)
        elif key == "database_url" and name == "general_settings" and _postgres_url(value) is not None:
            draft.top.setdefault("store", {})["database"] = _postgres_url(value)
        elif key == "master_key" and name == "general_settings" and "auth.master_key" in draft.features:
            reference = env_reference(value)
            if reference is None:
                draft.skip(
                    pointer,
                    "a literal master_key is not copied; the spec reads ${SIDEGATE_MASTER_KEY}",
                    "litellm.literal-secret",
                )
                reference = "${SIDEGATE_MASTER_KEY}"
            draft.top.setdefault("auth", {})["master_key"] = reference
        else:
            draft.unused(pointer, f"{name}.{key}")
        done.add(key)


def _postgres_url(value: object) -> str | None:
    """A literal postgresql:// URL without a password in it (the spec wants passwords as references)."""
    if isinstance(value, str) and re.fullmatch(r"postgres(ql)?://[^:@/]+(@[^/]+)?/\S+", value):
        return value
    return None


def _redis(draft: Draft) -> None:
    """router_settings' redis_host, redis_port and redis_password as one `store.redis` URL."""
    host, host_at = draft.redis.get("redis_host", (None, ""))
    if host is None:
        for _value, pointer in draft.redis.values():
            draft.skip(pointer, "a Redis port or password without redis_host; left out")
        return
    host_ref = env_reference(host) or (str(host) if re.fullmatch(r"[A-Za-z0-9.-]+", str(host)) else None)
    if host_ref is None:
        draft.skip(host_at, f"redis_host {host!r} is not a host name; store.redis left out")
        for key, (_value, pointer) in draft.redis.items():
            if key != "redis_host":
                draft.skip(pointer, f"{key} left out with redis_host")
        return
    port, _ = draft.redis.get("redis_port", (6379, ""))
    port_ref = env_reference(port) or (str(port) if _int(port) else "6379")
    auth = ""
    if "redis_password" in draft.redis:
        password, password_at = draft.redis["redis_password"]
        reference = env_reference(password)
        if reference is None:
            draft.skip(password_at, "a literal redis_password is not copied; the URL reads ${REDIS_PASSWORD}",
                       "litellm.literal-secret")
            reference = "${REDIS_PASSWORD}"
        auth = ":" + reference + "@"
    draft.top.setdefault("store", {})["redis"] = f"redis://{auth}{host_ref}:{port_ref}/0"


def translate_settings(data: Mapping[str, Any], draft: Draft) -> None:
    """Translate the proxy-wide sections of a LiteLLM config (after its model_list) into ``draft``."""
    done: set[str] = set()
    for name in ("router_settings", "litellm_settings", "general_settings"):
        raw = data.get(name)
        if raw is None:
            continue
        if not isinstance(raw, Mapping):
            draft.skip("/" + name, f"{name} is not a mapping; left out", "litellm.invalid")
            continue
        _section(draft, name, raw, done)
    if draft.redis:
        _redis(draft)
    env = data.get("environment_variables")
    if env is not None and not isinstance(env, Mapping):
        draft.skip("/environment_variables", "environment_variables is not a mapping; left out", "litellm.invalid")
        env = None
    for key in env or {}:
        draft.skip(
            join_pointer("/environment_variables", key),
            f"environment variable {key} is set by LiteLLM from its config; set it in the sidecar's environment",
        )
