"""Fixed one-minute windows of requests and tokens plus requests in flight: the counters behind
deployment caps and key/team/user rate limits (sans-IO: `now` is passed in)."""

from __future__ import annotations

__all__ = ["WINDOW", "WindowCounter"]

WINDOW = 60.0
"""Length of the rpm/tpm counting window, seconds."""


class WindowCounter:
    """Requests and tokens in the current minute, and requests in flight."""

    __slots__ = ("in_flight", "requests", "reserved", "tokens", "window")

    def __init__(self) -> None:
        self.in_flight = 0
        self.window = -1
        self.requests = 0
        self.tokens = 0
        self.reserved = 0
        """Tokens reserved by requests in flight (whatever minute they started in: kept across windows)."""

    def roll(self, now: float) -> None:
        """Start a new window when `now` has left the current one."""
        window = int(now // WINDOW)
        if window != self.window:
            self.window = window
            self.requests = 0
            self.tokens = 0

    def limited_for(self, rpm: int | None, tpm: int | None, parallel: int | None, now: float) -> float | None:
        """Seconds until a request fits under these limits, or None when it fits now."""
        self.roll(now)
        if parallel is not None and self.in_flight >= parallel:
            return 1.0
        if (rpm is not None and self.requests >= rpm) or (tpm is not None and self.tokens + self.reserved >= tpm):
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
