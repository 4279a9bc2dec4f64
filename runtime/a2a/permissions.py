"""Who may call which agent: the key's policy (a spec key's `a2a`, a virtual key's `metadata.a2a`)
and its team's policy must both let the agent through; the master key and an open gateway
(no `auth` in the spec) may call every agent."""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from sidegate.runtime.governance.keys import Grant
from sidegate.runtime.plan import A2APolicy

__all__ = ["allowed", "policy_from_metadata"]

_CLOSED = A2APolicy(allow=(), deny=("*",))


def policy_from_metadata(value: Any) -> A2APolicy | None:
    """A key's `metadata.a2a` as a policy; a malformed one denies every agent (fail closed)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - {"allow", "deny"}:
        return _CLOSED
    lists = [value.get(k, []) for k in ("allow", "deny")]
    if not all(isinstance(v, list | tuple) and all(isinstance(p, str) for p in v) for v in lists):
        return _CLOSED
    return A2APolicy(allow=tuple(lists[0]), deny=tuple(lists[1]))


def permits(policy: A2APolicy, agent: str) -> bool:
    """Whether `policy` lets `agent` through: an allow match (or no allow list) and no deny match."""
    if any(fnmatchcase(agent, p) for p in policy.deny):
        return False
    return not policy.allow or any(fnmatchcase(agent, p) for p in policy.allow)


def allowed(grant: Grant | None, agent: str, teams: Mapping[str, A2APolicy]) -> bool:
    """Whether the caller holding `grant` may call `agent`."""
    if grant is None or grant.master:
        return True
    key = policy_from_metadata(grant.metadata.get("a2a"))
    team = teams.get(grant.team) if grant.team else None
    return all(p is None or permits(p, agent) for p in (key, team))
