"""Sans-IO deployment choice: the group's strategy among the deployments that are healthy, not
at their caps and (when others exist) not yet tried by this request.

Pure functions of (targets, observed state, now, a random generator), tested without sockets or
clocks. Caps are counted per deployment in fixed one-minute windows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from sidegate.runtime.governance.window import WINDOW, WindowCounter
from sidegate.runtime.plan import ModelGroup, Strategy, Target
from sidegate.runtime.routing.breaker import Breaker

__all__ = ["EXPLORE", "WINDOW", "Choice", "DeploymentState", "GroupState", "choose"]

EXPLORE = 0.1
"""Share of picks the latency strategy spends on a random deployment, to keep estimates fresh."""


class DeploymentState(WindowCounter):
    """Mutable counters and health for one deployment (one process; never shared across threads)."""

    __slots__ = ("breaker",)

    def __init__(self) -> None:
        super().__init__()
        self.breaker = Breaker()

    def capped_for(self, target: Target, now: float) -> float | None:
        """Seconds until this deployment is under its caps again, or None when it is now."""
        return self.limited_for(target.rpm, target.tpm, target.max_parallel, now)

    def usage(self, target: Target) -> float:
        """The larger share of its rpm and tpm caps used in this window (0 without caps)."""
        shares = [0.0]
        if target.rpm:
            shares.append(self.requests / target.rpm)
        if target.tpm:
            shares.append(self.tokens / target.tpm)
        return max(shares)

    def start(self, now: float) -> None:
        """Count a request that is being sent (in half-open state it is the breaker's probe)."""
        super().start(now)
        self.breaker.begin()


class GroupState:
    """Per-group strategy state (the round-robin cursor)."""

    __slots__ = ("cursor",)

    def __init__(self) -> None:
        self.cursor = 0


@dataclass(frozen=True, slots=True)
class Choice:
    """The chosen target's index; or None, with the seconds until one may free up and whether
    it is the caps (429) or the health of the deployments (503) that keeps them all out."""

    index: int | None
    retry_after: float = 0.0
    capped: bool = False


def _weighted(targets: Sequence[Target], options: Sequence[int], rng: random.Random) -> int:
    total = sum(targets[i].weight for i in options)
    point = rng.random() * total
    for i in options:
        point -= targets[i].weight
        if point < 0:
            return i
    return options[-1]


def _cost(target: Target, tokens_in: int, tokens_out: int) -> float:
    if target.price is None:
        return float("inf")
    return tokens_in * target.price.input + tokens_out * target.price.output


def choose(
    group: ModelGroup,
    states: Sequence[DeploymentState],
    now: float,
    rng: random.Random,
    *,
    tried: frozenset[int] = frozenset(),
    tokens: tuple[int, int] = (0, 0),
    cursor: GroupState | None = None,
    stream: bool = False,
    skip: frozenset[int] = frozenset(),
) -> Choice:
    """Pick a deployment of `group` by its strategy; untried ones first when there are any;
    never one in `skip` (e.g. its context window is too small)."""
    targets = group.targets
    ready: list[int] = []
    capped_wait, health_wait = float("inf"), float("inf")
    for i, (target, state) in enumerate(zip(targets, states, strict=True)):
        if i in skip:
            continue
        cap = state.capped_for(target, now)
        if cap is not None:
            capped_wait = min(capped_wait, cap)
        elif not state.breaker.available(now):
            health_wait = min(health_wait, state.breaker.wait(now))
        else:
            ready.append(i)
    if not ready:
        if health_wait == float("inf") and capped_wait == float("inf"):
            return Choice(None, 1.0, capped=False)
        if health_wait == float("inf"):
            return Choice(None, capped_wait, capped=True)
        return Choice(None, min(health_wait, capped_wait), capped=False)
    fresh = [i for i in ready if i not in tried]
    options = fresh or ready
    strategy = group.strategy
    if strategy is Strategy.WEIGHTED or len(options) == 1:
        return Choice(_weighted(targets, options, rng))
    if strategy is Strategy.ROUND_ROBIN:
        state_ = cursor or GroupState()
        pick = options[state_.cursor % len(options)]
        state_.cursor += 1
        return Choice(pick)
    if strategy is Strategy.PRIORITY:
        tier = min(targets[i].tier for i in options)
        return Choice(_weighted(targets, [i for i in options if targets[i].tier == tier], rng))
    if strategy is Strategy.LATENCY and rng.random() < EXPLORE:
        return Choice(options[int(rng.random() * len(options))])
    if strategy is Strategy.LEAST_BUSY:
        score = [float(states[i].in_flight) for i in options]
    elif strategy is Strategy.LATENCY:
        def estimate(i: int) -> float:
            b = states[i].breaker
            value = b.ttft if stream else b.per_token
            return 0.0 if value is None else value  # unmeasured deployments get measured first

        score = [estimate(i) for i in options]
    elif strategy is Strategy.USAGE:
        score = [states[i].usage(targets[i]) for i in options]
    else:
        score = [_cost(targets[i], *tokens) for i in options]
    best = min(score)
    return Choice(_weighted(targets, [i for i, s in zip(options, score, strict=True) if s == best], rng))
