"""Model-name resolution: exact names, aliases and `prefix/*` wildcards, built once per plan."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.plan import ModelGroup, Plan

__all__ = ["Route", "RouteTable"]


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved request: its group, and for a wildcard the part after the prefix."""

    group: ModelGroup
    suffix: str | None


class RouteTable:
    """Maps a requested model name to its group; built at start, read-only afterwards."""

    __slots__ = ("_exact", "_wildcards")

    def __init__(self, plan: Plan) -> None:
        self._exact: dict[str, Route] = {}
        wild: list[tuple[str, ModelGroup]] = []
        for group in plan.models:
            if group.wildcard_prefix is not None:
                wild.append((group.wildcard_prefix, group))
            else:
                self._exact[group.name] = Route(group, None)
            for alias in group.aliases:
                self._exact[alias] = Route(group, None)
        # Longest prefix wins, so `openai/gpt-4o/*` beats `openai/*`.
        wild.sort(key=lambda pair: -len(pair[0]))
        self._wildcards = tuple(wild)

    def resolve(self, model: str) -> Route | None:
        """The route for `model`, or None when no group serves it."""
        route = self._exact.get(model)
        if route is not None:
            return route
        for prefix, group in self._wildcards:
            if model.startswith(prefix) and len(model) > len(prefix):
                return Route(group, model[len(prefix) :])
        return None
