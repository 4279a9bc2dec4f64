"""Per key, team and user rate limits and budgets, counted in memory (sans-IO: `now` passed in).

Limits: rpm, tpm and parallel requests in one-minute windows. Budgets: USD per period (`1d`,
`7d`, `30d` as fixed windows from the epoch, or `month` for the calendar month, UTC); a request
is refused once the period's spend has reached the budget, so the one that crosses it is the last
served. Soft thresholds are reported, not enforced.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

from runtime.window import WindowCounter

__all__ = ["Budget", "Ledger", "Limits", "period_start"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Rate limits of one subject."""

    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    """A spend limit of one subject."""

    amount: float
    period: str
    """`1d`, `7d`, `30d`... (days) or `month`."""
    soft: float | None = None
    """Share of the amount at which a warning is logged and counted."""


def period_start(period: str, now: float) -> float:
    """Start (epoch seconds, UTC) of the budget period that contains `now`."""
    if period == "month":
        t = time.gmtime(now)
        return float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)))
    days = int(period.rstrip("d"))
    span = days * 86400
    return float(int(now // span) * span)


class Ledger:
    """Counters and spend for every subject (`key:<hash>`, `team:<name>`, `user:<id>`)."""

    def __init__(self) -> None:
        self._windows: dict[str, WindowCounter] = {}
        self._spend: dict[str, tuple[float, float]] = {}
        """subject -> (period start, spend in that period)."""

    def _window(self, subject: str) -> WindowCounter:
        w = self._windows.get(subject)
        if w is None:
            w = self._windows[subject] = WindowCounter()
        return w

    def limited_for(self, subject: str, limits: Limits, now: float) -> float | None:
        """Seconds until `subject` may send a request, or None when it may now."""
        return self._window(subject).limited_for(limits.rpm, limits.tpm, limits.parallel, now)

    def start(self, subject: str, now: float) -> None:
        """Count a request of `subject`."""
        self._window(subject).start(now)

    def finish(self, subject: str, now: float, tokens: int) -> None:
        """Count a finished request of `subject` and its tokens."""
        self._window(subject).finish(now, tokens)

    def spent(self, subject: str, budget: Budget, wall: float) -> float:
        """What `subject` spent in the current period."""
        start = period_start(budget.period, wall)
        since, amount = self._spend.get(subject, (start, 0.0))
        return amount if since == start else 0.0

    def over_budget(self, subject: str, budget: Budget, wall: float) -> bool:
        """True once the period's spend has reached the budget."""
        return self.spent(subject, budget, wall) >= budget.amount

    def add_spend(self, subject: str, cost: float, budget: Budget | None, wall: float) -> bool:
        """Add a request's cost; True when this crossed the soft threshold."""
        if budget is None:
            start = 0.0
            before = self._spend.get(subject, (0.0, 0.0))[1]
        else:
            start = period_start(budget.period, wall)
            before = self.spent(subject, budget, wall)
        self._spend[subject] = (start, before + cost)
        if budget is None or budget.soft is None:
            return False
        line = budget.soft * budget.amount
        return before < line <= before + cost

    def load_spend(self, subject: str, budget: Budget, amount: float, wall: float) -> None:
        """Seed the period's spend (at start, from the store)."""
        self._spend[subject] = (period_start(budget.period, wall), amount)
