"""The `a2a` section and the `a2a` permission members of keys and teams: agents with their card
location, upstream auth (secret references), deadlines and refresh; policies as glob lists."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from sidegate.compiler.diagnostics import Collector, did_you_mean, join_pointer
from sidegate.runtime.plan import A2A, A2AAgent, A2APolicy, Header, Secret, SecretPart, SecretSource

__all__ = ["RESERVED_AGENT_NAMES", "a2a_policy", "check_a2a", "resolve_a2a"]

WELL_KNOWN = "/.well-known/agent-card.json"
RESERVED_AGENT_NAMES = frozenset({"agents"})
"""Names taken by sidegate's own routes (`GET /a2a/agents` lists the agents)."""

Reference = Callable[[Mapping[str, Any], str, str, str], "Secret | None"]


def a2a_policy(raw: Mapping[str, Any] | None) -> A2APolicy | None:
    """The `a2a: {allow, deny}` member of a key or team."""
    if raw is None:
        return None
    return A2APolicy(allow=tuple(raw.get("allow", ())), deny=tuple(raw.get("deny", ())))


def _auth_headers(raw: Mapping[str, Any] | None, pointer: str, reference: Reference) -> tuple[Header, ...]:
    if raw is None:
        return ()
    forms = "(${ENV}, {env: ...} or {file: ...})"
    if "bearer" in raw:
        token = reference(raw, "bearer", pointer, forms)
        if token is None:
            return ()
        value = Secret(parts=(SecretPart(source=SecretSource.TEXT, value="Bearer "), *token.parts))
        return (Header(name="authorization", value=value),)
    header = raw["header"]
    value_ref = reference(header, "value", f"{pointer}/header", forms)
    return () if value_ref is None else (Header(name=header["name"].lower(), value=value_ref),)


def resolve_a2a(spec: Mapping[str, Any], reference: Reference, seconds: Callable[[str], float]) -> A2A | None:
    """Resolve `a2a` (None when the spec has no such section). Agents are sorted by name."""
    raw = spec.get("a2a")
    if raw is None:
        return None
    refresh = seconds(raw.get("refresh", "60s"))
    agents = []
    for name in sorted(raw["agents"]):
        a = raw["agents"][name]
        pointer = join_pointer("/a2a/agents", name)
        card_url = a["card_url"] if "card_url" in a else a["url"].rstrip("/") + WELL_KNOWN
        agents.append(A2AAgent(
            name=name,
            card_url=card_url,
            headers=_auth_headers(a.get("auth"), f"{pointer}/auth", reference),
            connect_timeout=seconds(a.get("connect_timeout", "5s")),
            timeout=seconds(a.get("timeout", "60s")),
            stream_idle=seconds(a.get("stream_idle", "5m")),
            refresh=seconds(a["refresh"]) if "refresh" in a else refresh,
        ))
    return A2A(agents=tuple(agents))


def _has_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def check_a2a(
    a2a: A2A | None, policies: Iterable[tuple[str, A2APolicy | None]], out: Collector,
) -> None:
    """Reserved agent names are errors; policy patterns that can match no declared agent are warnings."""
    names = {a.name for a in a2a.agents} if a2a is not None else set()
    for name in sorted(names & RESERVED_AGENT_NAMES):
        out.error("a2a.reserved-name", join_pointer("/a2a/agents", name),
                  f"'{name}' is taken by sidegate's own route /a2a/{name}; choose another agent name", at_key=True)
    for pointer, policy in policies:
        if policy is None:
            continue
        for member, patterns in (("allow", policy.allow), ("deny", policy.deny)):
            for i, pattern in enumerate(patterns):
                if not any(fnmatchcase(n, pattern) for n in names):
                    hint = "" if _has_glob(pattern) else did_you_mean(pattern, names)
                    out.warning("ref.unknown-agent", f"{pointer}/a2a/{member}/{i}",
                                f"'{pattern}' matches no agent under a2a.agents{hint}")
