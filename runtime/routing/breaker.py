"""Sans-IO circuit breaker and latency estimate for one deployment.

closed -> open after `failures` failures of one kind (429s apart from 5xx/timeouts/connect errors)
within `window`, or an error rate over `window` at or above `error_rate` with `min_requests`;
open -> half-open once `duration` has passed, letting exactly one probe request through;
half-open -> closed on its success, -> open again on its failure. A Retry-After from the upstream
also keeps the deployment out until it has passed.
"""

from __future__ import annotations

import enum
from collections import deque

from runtime.plan import CooldownPolicy

__all__ = ["Breaker", "Circuit", "FailureKind"]

_ALPHA = 0.3
"""Weight of the newest sample in the latency moving averages."""


class Circuit(enum.Enum):
    """Breaker states (the value is the metric's number)."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class FailureKind(enum.Enum):
    """What kind of failure an attempt had (429s are counted apart from the rest)."""

    RATE_LIMIT = "429"
    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    CONNECT = "connect"


class Breaker:
    """One deployment's health as seen by the router."""

    __slots__ = (
        "_others",
        "_outcomes",
        "_rate_limits",
        "blocked_until",
        "circuit",
        "failures_total",
        "open_until",
        "per_token",
        "probing",
        "ttft",
    )

    def __init__(self) -> None:
        self.circuit = Circuit.CLOSED
        self.open_until = 0.0
        self.blocked_until = 0.0
        self.probing = False
        self._rate_limits: deque[float] = deque()
        self._others: deque[float] = deque()
        self._outcomes: deque[tuple[float, bool]] = deque()
        self.failures_total = 0
        self.ttft: float | None = None
        """Moving average of time to first byte of streams (seconds)."""
        self.per_token: float | None = None
        """Moving average of latency per output token of whole answers (seconds)."""

    def available(self, now: float) -> bool:
        """Whether a request may be sent now (moves open -> half-open when its time has come)."""
        if now < self.blocked_until:
            return False
        if self.circuit is Circuit.OPEN:
            if now < self.open_until:
                return False
            self.circuit = Circuit.HALF_OPEN
            self.probing = False
        if self.circuit is Circuit.HALF_OPEN:
            return not self.probing
        return True

    def wait(self, now: float) -> float:
        """Seconds until this deployment may be available again."""
        until = max(self.blocked_until, self.open_until if self.circuit is Circuit.OPEN else 0.0)
        return max(0.0, until - now)

    def begin(self) -> None:
        """A request is being sent (in half-open state it is the one probe)."""
        if self.circuit is Circuit.HALF_OPEN:
            self.probing = True

    def success(self, now: float, policy: CooldownPolicy, *, ttft: float | None = None,
                per_token: float | None = None) -> None:
        """The request succeeded: close the breaker and update the latency estimates."""
        self.circuit = Circuit.CLOSED
        self.probing = False
        self._rate_limits.clear()
        self._others.clear()
        self._record(now, True, policy)
        if ttft is not None:
            self.ttft = ttft if self.ttft is None else (1 - _ALPHA) * self.ttft + _ALPHA * ttft
        if per_token is not None:
            self.per_token = per_token if self.per_token is None else (1 - _ALPHA) * self.per_token + _ALPHA * per_token

    def failure(self, now: float, kind: FailureKind, policy: CooldownPolicy, retry_after: float | None = None) -> None:
        """The request failed; open the breaker when the policy says so."""
        self.failures_total += 1
        self.probing = False
        if retry_after:
            self.blocked_until = max(self.blocked_until, now + retry_after)
        self._record(now, False, policy)
        if self.circuit is Circuit.HALF_OPEN:
            self._open(now, policy)
            return
        q = self._rate_limits if kind is FailureKind.RATE_LIMIT else self._others
        q.append(now)
        while q and q[0] <= now - policy.window:
            q.popleft()
        if len(q) >= policy.failures or self._rate_exceeded(policy):
            self._open(now, policy)

    def _record(self, now: float, ok: bool, policy: CooldownPolicy) -> None:
        self._outcomes.append((now, ok))
        while self._outcomes and self._outcomes[0][0] <= now - policy.window:
            self._outcomes.popleft()

    def _rate_exceeded(self, policy: CooldownPolicy) -> bool:
        if policy.error_rate is None or len(self._outcomes) < policy.min_requests:
            return False
        failed = sum(1 for _, ok in self._outcomes if not ok)
        return failed / len(self._outcomes) >= policy.error_rate

    def _open(self, now: float, policy: CooldownPolicy) -> None:
        self.circuit = Circuit.OPEN
        self.open_until = now + policy.duration
        self._rate_limits.clear()
        self._others.clear()
