"""Who may see and call which MCP name: glob rules from the key (spec key or virtual-key metadata
`mcp: {allow, deny}`) and from its team. Every rule that applies must allow a name; deny wins."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from sidegate.runtime.governance.keys import Grant
from sidegate.runtime.plan import McpAccess

__all__ = ["Permissions", "permissions_for"]


@dataclass(frozen=True, slots=True)
class _Rule:
    allow: tuple[str, ...] | None
    deny: tuple[str, ...]

    def permits(self, name: str) -> bool:
        if any(fnmatchcase(name, p) for p in self.deny):
            return False
        return self.allow is None or any(fnmatchcase(name, p) for p in self.allow)


_NOTHING = _Rule(allow=(), deny=())


def _from_metadata(raw: Any) -> _Rule | None:
    """A virtual key's `metadata.mcp`; a malformed rule allows nothing (fail closed)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        return _NOTHING
    allow, deny = raw.get("allow"), raw.get("deny", ())
    ok = (allow is None or (isinstance(allow, (list, tuple)) and all(isinstance(p, str) for p in allow))) and (
        isinstance(deny, (list, tuple)) and all(isinstance(p, str) for p in deny))
    if not ok:
        return _NOTHING
    return _Rule(allow=None if allow is None else tuple(allow), deny=tuple(deny))


@dataclass(frozen=True, slots=True)
class Permissions:
    """The rules that apply to one caller."""

    rules: tuple[_Rule, ...]

    def permits(self, name: str) -> bool:
        """Whether the namespaced `name` (`<server><sep><tool>`) is usable."""
        return all(r.permits(name) for r in self.rules)


def permissions_for(grant: Grant | None, teams: Mapping[str, McpAccess | None]) -> Permissions:
    """The caller's rules: none without auth or for the master key."""
    if grant is None or grant.master:
        return Permissions(())
    rules: list[_Rule] = []
    key_rule = _from_metadata(grant.metadata.get("mcp"))
    if key_rule is not None:
        rules.append(key_rule)
    team = teams.get(grant.team) if grant.team is not None else None
    if team is not None:
        rules.append(_Rule(allow=team.allow, deny=team.deny))
    return Permissions(tuple(rules))
