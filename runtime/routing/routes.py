"""Model-name resolution: exact names and aliases, `prefix/*` wildcards and `*` globs, built once
per plan.

Order: an exact name or alias; else the longest matching `prefix/*` (the part after the prefix is
forwarded); else the most specific matching glob (most literal characters, then name order), which
forwards the whole requested name to a target whose model is `*`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sidegate.runtime.plan import ModelGroup, Plan

__all__ = ["Route", "RouteTable", "glob_regex", "is_prefix_wildcard"]


def is_prefix_wildcard(name: str) -> bool:
    """Whether `name` is a `prefix/*` wildcard (one `*`, the last character, after a `/`)."""
    return name.endswith("/*") and "*" not in name[:-1]


def glob_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression of a glob name: `*` is any run of one or more characters, everything
    else literal."""
    return re.compile("".join(".+" if piece == "*" else re.escape(piece) for piece in re.split(r"(\*)", pattern)))


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved request: its group, and for a wildcard the name forwarded to a `*` target (the
    part after the prefix, or for a glob the whole name)."""

    group: ModelGroup
    suffix: str | None


class RouteTable:
    """Maps a requested model name to its group; built at start, read-only afterwards."""

    __slots__ = ("_exact", "_globs", "_wildcards")

    def __init__(self, plan: Plan) -> None:
        self._exact: dict[str, Route] = {}
        wild: list[tuple[str, ModelGroup]] = []
        globs: list[tuple[re.Pattern[str], ModelGroup]] = []
        for group in plan.models:
            if group.wildcard_prefix is not None:
                wild.append((group.wildcard_prefix, group))
            elif group.glob is not None:
                globs.append((glob_regex(group.glob), group))
            else:
                self._exact[group.name] = Route(group, None)
            for alias in group.aliases:
                self._exact[alias] = Route(group, None)
        # Longest prefix wins, so `openai/gpt-4o/*` beats `openai/*`.
        wild.sort(key=lambda pair: -len(pair[0]))
        self._wildcards = tuple(wild)
        globs.sort(key=lambda pair: (-len((pair[1].glob or "").replace("*", "")), pair[1].name))
        self._globs = tuple(globs)

    def resolve(self, model: str) -> Route | None:
        """The route for `model`, or None when no group serves it."""
        route = self._exact.get(model)
        if route is not None:
            return route
        for prefix, group in self._wildcards:
            if model.startswith(prefix) and len(model) > len(prefix):
                return Route(group, model[len(prefix) :])
        for regex, group in self._globs:
            if regex.fullmatch(model):
                return Route(group, model)
        return None
