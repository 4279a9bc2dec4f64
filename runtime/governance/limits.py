"""Per key, team and user rate limits and budgets, counted in memory (sans-IO: `now` passed in).

Limits: rpm, tpm and parallel requests in one-minute windows. Budgets: USD per period (`1d`,
`7d`, `30d` as fixed windows from the epoch, or `month` for the calendar month, UTC). Requests in
flight hold reservations (their worst-case tokens and cost) until they finish: a request is
refused once the settled amount plus the reservations has reached the limit, so the one that
crosses it is the last admitted and the overshoot is bounded by one request. Soft thresholds are
reported, not enforced.

Shared mode (`share()`, with Redis): every count is also kept as a pending delta; the sync task
takes the deltas (`take_pending`), adds them to the shared totals and hands back what every
sidecar counted (`apply_shared`). Parallel requests stay per process.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

from sidegate.runtime.governance.window import WINDOW, WindowCounter

__all__ = ["Budget", "Ledger", "Limits", "Pending", "period_seconds", "period_start"]


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
    refuse_unpriced: bool = False
    """Refuse requests that may be served by a deployment without a price (fail-closed)."""


def period_seconds(period: str) -> float:
    """Longest length of a budget period, seconds (a month: 31 days)."""
    return 31 * 86400.0 if period == "month" else int(period.rstrip("d")) * 86400.0


@dataclass(slots=True)
class Pending:
    """Counts not yet added to the shared totals."""

    windows: dict[tuple[str, int], list[int]]
    """(subject, minute window) -> [requests, tokens]."""
    spend: dict[tuple[str, float], list[float]]
    """(subject, period start) -> [USD, seconds the period lasts at most]."""

    def merge(self, other: Pending) -> None:
        """Add `other`'s counts (a sync that failed hands its deltas back)."""
        for key, (r, t) in other.windows.items():
            mine = self.windows.setdefault(key, [0, 0])
            mine[0] += r
            mine[1] += t
        for skey, (amount, ttl) in other.spend.items():
            spent = self.spend.setdefault(skey, [0.0, ttl])
            spent[0] += amount


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
        self._shared = False
        self._pending = Pending({}, {})
        self._spend_ttl: dict[str, float] = {}
        self._held: dict[str, tuple[float, int]] = {}
        """subject -> (USD reserved by requests in flight, how many)."""

    def share(self, on: bool) -> None:
        """Keep pending deltas for a sync task (True), or count alone (False)."""
        self._shared = on
        if not on:
            self._pending = Pending({}, {})

    def take_pending(self, now: float) -> Pending:
        """The deltas counted since the last call, plus a zero delta for every subject active in the
        current window and every budgeted subject (so the sync reads what the others counted)."""
        out, self._pending = self._pending, Pending({}, {})
        window = int(now // WINDOW)
        for subject, w in self._windows.items():
            if w.window == window:
                out.windows.setdefault((subject, window), [0, 0])
        for subject, (start, _) in self._spend.items():
            ttl = self._spend_ttl.get(subject)
            if ttl is not None:
                out.spend.setdefault((subject, start), [0.0, ttl])
        return out

    def give_back(self, pending: Pending, now: float) -> None:
        """Deltas a failed sync could not push: pushed with the next one (those of minutes that are
        over are dropped: their shared counters have expired)."""
        if self._shared:
            current = int(now // WINDOW)
            pending.windows = {k: v for k, v in pending.windows.items() if k[1] >= current - 1}
            self._pending.merge(pending)

    def apply_shared(self, windows: dict[tuple[str, int], tuple[int, int]],
                     spend: dict[tuple[str, float], float]) -> None:
        """Adopt the shared totals (which include this process's pushed deltas): each counter becomes
        the shared total plus what was counted here since the push, never less than it already was."""
        for (subject, window), (requests, tokens) in windows.items():
            w = self._windows.get(subject)
            if w is None or w.window != window:
                continue
            since = self._pending.windows.get((subject, window), (0, 0))
            w.requests = max(w.requests, requests + since[0])
            # the shared total holds this process's reservations too: they are counted in `reserved`
            w.tokens = max(w.tokens, tokens + since[1] - w.reserved)
        for (subject, start), amount in spend.items():
            current = self._spend.get(subject)
            if current is None or current[0] != start:
                continue
            since_spend = self._pending.spend.get((subject, start), (0.0, 0.0))[0]
            self._spend[subject] = (start, max(current[1], amount + since_spend))

    def _window(self, subject: str) -> WindowCounter:
        w = self._windows.get(subject)
        if w is None:
            w = self._windows[subject] = WindowCounter()
        return w

    def limited_for(self, subject: str, limits: Limits, now: float) -> float | None:
        """Seconds until `subject` may send a request, or None when it may now."""
        return self._window(subject).limited_for(limits.rpm, limits.tpm, limits.parallel, now)

    def start(self, subject: str, now: float, reserve: int = 0) -> int:
        """Count a request of `subject`, reserving `reserve` tokens (its worst case) so requests in
        flight count against tpm too; returns the window it was counted in."""
        w = self._window(subject)
        w.start(now)
        w.reserved += reserve
        if self._shared:
            delta = self._pending.windows.setdefault((subject, w.window), [0, 0])
            delta[0] += 1
            delta[1] += reserve
        return w.window

    def finish(self, subject: str, now: float, tokens: int, reserved: int = 0, window: int = -1) -> None:
        """Count a finished request of `subject` and its tokens, releasing what `start` reserved (the
        shared delta replaces the reservation pushed in `window`, when that is still the current one)."""
        w = self._window(subject)
        w.roll(now)
        w.reserved = max(0, w.reserved - reserved)
        w.finish(now, tokens)
        delta = tokens - reserved if window == w.window else tokens
        if self._shared and delta:
            self._pending.windows.setdefault((subject, w.window), [0, 0])[1] += delta

    def add_tokens(self, subject: str, now: float, tokens: int) -> None:
        """Count tokens of a request still in flight (a realtime session's response) against tpm."""
        w = self._window(subject)
        w.roll(now)
        w.tokens += tokens
        if self._shared and tokens:
            self._pending.windows.setdefault((subject, w.window), [0, 0])[1] += tokens

    def spent(self, subject: str, budget: Budget, wall: float) -> float:
        """What `subject` spent in the current period."""
        start = period_start(budget.period, wall)
        since, amount = self._spend.get(subject, (start, 0.0))
        return amount if since == start else 0.0

    def held(self, subject: str) -> float:
        """USD reserved by `subject`'s requests in flight."""
        return self._held.get(subject, (0.0, 0))[0]

    def over_budget(self, subject: str, budget: Budget, wall: float) -> bool:
        """True once the period's spend plus what requests in flight hold has reached the budget."""
        if self._shared and subject not in self._spend_ttl:  # read the shared spend from the next sync on
            self._spend_ttl[subject] = period_seconds(budget.period)
            self._spend.setdefault(subject, (period_start(budget.period, wall), 0.0))
        return self.spent(subject, budget, wall) + self.held(subject) >= budget.amount

    def hold(self, subject: str, cost: float) -> None:
        """Reserve a request's worst-case cost until `release`."""
        usd, n = self._held.get(subject, (0.0, 0))
        self._held[subject] = (usd + cost, n + 1)

    def release(self, subject: str, cost: float) -> None:
        """Give back what `hold` reserved (exactly zero once no request of `subject` is in flight)."""
        usd, n = self._held.get(subject, (0.0, 0))
        if n <= 1:
            self._held.pop(subject, None)
        else:
            self._held[subject] = (max(0.0, usd - cost), n - 1)

    def undo_start(self, subject: str, now: float, reserve: int, window: int) -> None:
        """Take back a `start` whose request was refused after all (by the shared budgets)."""
        w = self._window(subject)
        w.roll(now)
        w.reserved = max(0, w.reserved - reserve)
        w.in_flight -= 1
        if w.window == window:
            w.requests = max(0, w.requests - 1)
            if self._shared:
                delta = self._pending.windows.setdefault((subject, window), [0, 0])
                delta[0] -= 1
                delta[1] -= reserve

    def queue_spend(self, subject: str, start: float, cost: float, ttl: float) -> None:
        """Have the next sync push `cost` to the shared spend (a settlement Redis did not take)."""
        if self._shared:
            self._pending.spend.setdefault((subject, start), [0.0, ttl])[0] += cost

    def add_spend(self, subject: str, cost: float, budget: Budget | None, wall: float, pushed: bool = False) -> bool:
        """Add a request's cost (`pushed`: the shared spend has it already, through a settled
        reservation); True when this crossed the soft threshold."""
        if budget is None:
            start = 0.0
            before = self._spend.get(subject, (0.0, 0.0))[1]
        else:
            start = period_start(budget.period, wall)
            before = self.spent(subject, budget, wall)
        self._spend[subject] = (start, before + cost)
        if self._shared and budget is not None:
            ttl = self._spend_ttl[subject] = period_seconds(budget.period)
            if not pushed:
                self._pending.spend.setdefault((subject, start), [0.0, ttl])[0] += cost
        if budget is None or budget.soft is None:
            return False
        line = budget.soft * budget.amount
        return before < line <= before + cost

    def load_spend(self, subject: str, budget: Budget, amount: float, wall: float) -> None:
        """Seed the period's spend (at start, from the store)."""
        self._spend[subject] = (period_start(budget.period, wall), amount)
        self._spend_ttl[subject] = period_seconds(budget.period)
