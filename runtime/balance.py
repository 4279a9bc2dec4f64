"""Sans-IO deployment choice: weighted pick among the targets not at their caps.

Pure functions of (targets, observed state, now, a random draw), so they are tested without
sockets or clocks. Caps are counted per deployment in fixed one-minute windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runtime.plan import Target

__all__ = ["WINDOW", "Choice", "DeploymentState", "choose"]

WINDOW = 60.0
"""Length of the rpm/tpm counting window, seconds."""


class DeploymentState:
    """Mutable counters for one deployment (one process; never shared across threads)."""

    __slots__ = ("in_flight", "requests", "tokens", "window")

    def __init__(self) -> None:
        self.in_flight = 0
        self.window = -1
        self.requests = 0
        self.tokens = 0

    def roll(self, now: float) -> None:
        """Start a new window when `now` has left the current one."""
        window = int(now // WINDOW)
        if window != self.window:
            self.window = window
            self.requests = 0
            self.tokens = 0

    def blocked_for(self, target: Target, now: float) -> float | None:
        """Seconds until this deployment may take a request, or None when it may now."""
        self.roll(now)
        if target.max_parallel is not None and self.in_flight >= target.max_parallel:
            return 1.0
        if (target.rpm is not None and self.requests >= target.rpm) or (
            target.tpm is not None and self.tokens >= target.tpm
        ):
            return (self.window + 1) * WINDOW - now
        return None

    def start(self, now: float) -> None:
        """Count a request that is being sent."""
        self.roll(now)
        self.in_flight += 1
        self.requests += 1

    def finish(self, now: float, tokens: int) -> None:
        """Count a finished request and the tokens it used."""
        self.roll(now)
        self.in_flight -= 1
        self.tokens += tokens


@dataclass(frozen=True, slots=True)
class Choice:
    """The chosen target's index, or None with the seconds until one frees up."""

    index: int | None
    retry_after: float


def choose(targets: Sequence[Target], states: Sequence[DeploymentState], now: float, draw: float) -> Choice:
    """Pick a target by weight among those not blocked; `draw` is uniform in [0, 1)."""
    total = 0.0
    open_: list[int] = []
    soonest = float("inf")
    for i, (target, state) in enumerate(zip(targets, states, strict=True)):
        wait = state.blocked_for(target, now)
        if wait is None:
            open_.append(i)
            total += target.weight
        else:
            soonest = min(soonest, wait)
    if not open_:
        return Choice(None, soonest)
    point = draw * total
    for i in open_:
        point -= targets[i].weight
        if point < 0:
            return Choice(i, 0.0)
    return Choice(open_[-1], 0.0)
