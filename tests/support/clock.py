"""Waiting out the edge of a clock minute: rpm/tpm count in fixed one-minute windows from the epoch,
so a test that counts requests against a limit through a served gateway (real wall clock) starts
its requests where the whole test fits in one window."""

from __future__ import annotations

import time

import trio

__all__ = ["away_from_a_minute_boundary"]


async def away_from_a_minute_boundary(seconds: float = 10.0) -> None:
    """Return at once when at least `seconds` are left in the current minute; otherwise wait for the
    next minute to begin (a condition on the clock, not a sleep sized for a machine's speed)."""
    left = 60 - time.time() % 60
    if left < seconds:
        await trio.sleep(left + 0.05)
