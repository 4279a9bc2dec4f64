"""What a request's cache entry is called: its scope (who may receive it), its canonical form
hashed, whether it may be cached at all, and the client's per-request opt-outs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from sidegate.runtime.errors import BadRequest
from sidegate.runtime.plan.cache import CachePolicy, CacheScope

__all__ = ["IGNORED", "Options", "cacheable", "context_digest", "group_tag", "options", "prompt_text",
           "request_digest", "scope_of"]

IGNORED = frozenset({"user", "stream", "stream_options", "metadata", "cache", "store", "service_tier",
                     "safety_identifier", "prompt_cache_key", "prompt_cache_retention"})
"""Request fields that do not change the answer (who asks, how it is delivered, where it is billed)."""
_PROMPT = ("messages", "prompt", "input", "system")
"""The fields semantic mode compares by meaning (the rest must be equal)."""


@dataclass(frozen=True, slots=True)
class Options:
    """The client's say for one request: `no_cache` (do not answer from the cache) and `no_store`
    (do not keep this answer)."""

    no_cache: bool = False
    no_store: bool = False


_NONE = Options()


def options(headers: list[tuple[bytes, bytes]], data: dict[str, Any]) -> Options:
    """`Cache-Control: no-cache / no-store` and the body's `cache: {no_cache, no_store}` (taken out of
    the body: it is sidegate's, never sent upstream). A malformed `cache` field is a 400."""
    no_cache = no_store = False
    field = data.pop("cache", None)
    if field is not None:
        if not isinstance(field, dict) or set(field) - {"no_cache", "no_store"} or not all(
                isinstance(v, bool) for v in field.values()):
            raise BadRequest("'cache' must be an object with the booleans no_cache and no_store, e.g. "
                             "{\"no_cache\": true}", param="cache")
        no_cache, no_store = field.get("no_cache", False), field.get("no_store", False)
    for name, value in headers:
        if name == b"cache-control":
            directives = {d.strip().split(b"=", 1)[0].lower() for d in value.split(b",")}
            no_cache = no_cache or b"no-cache" in directives
            no_store = no_store or b"no-store" in directives
    return _NONE if not (no_cache or no_store) else Options(no_cache, no_store)


def cacheable(policy: CachePolicy, op: str, data: dict[str, Any]) -> bool:
    """Whether the answer may be cached: embeddings always; otherwise `temperature: 0`, or any request
    when the policy says `sampled` (no temperature means the provider's default, above 0)."""
    if op == "embeddings" or policy.sampled:
        return True
    t = data.get("temperature")
    return isinstance(t, int | float) and not isinstance(t, bool) and t == 0


def scope_of(policy: CachePolicy, team: str | None, key_hash: str | None) -> str:
    """Who may receive the entry: everyone (`global`), the key's team, a key without a team alone,
    and without auth every caller."""
    if policy.scope is CacheScope.GLOBAL:
        return "*"
    if team:
        return "team:" + team
    return "key:" + key_hash if key_hash else "anonymous"


def _sha(parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def group_tag(group: str) -> str:
    """A short fixed-width tag of a group's name (keys carry it, so a purge by group can find them)."""
    return hashlib.sha256(group.encode()).hexdigest()[:16]


def request_digest(op: str, group: str, scope: str, data: dict[str, Any]) -> str:
    """The exact key: the canonical request (sorted keys, the group for the name asked for, the
    fields in `IGNORED` left out), with its operation and scope, hashed."""
    canonical = {k: v for k, v in data.items() if k not in IGNORED}
    canonical["model"] = group
    return f"{group_tag(group)}:{_sha([op, scope, canonical])}"


def context_digest(op: str, group: str, scope: str, data: dict[str, Any]) -> str:
    """What must be equal for a semantic hit: everything but the prompt itself."""
    canonical = {k: v for k, v in data.items() if k not in IGNORED and k not in _PROMPT}
    canonical["model"] = group
    return _sha(["semantic", op, scope, canonical])


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(p.get("text")) if isinstance(p, dict) else _text(p) for p in content)
    return ""


def prompt_text(op: str, data: dict[str, Any]) -> str:
    """The prompt semantic mode embeds: each message's text with its role (the system prompt first)."""
    if op == "completions":
        return _text(data.get("prompt"))
    lines = [f"system: {_text(data['system'])}"] if data.get("system") else []
    for m in data.get("messages") or ():
        if isinstance(m, dict):
            lines.append(f"{m.get('role')}: {_text(m.get('content'))}")
    return "\n".join(lines)
