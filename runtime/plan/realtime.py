"""The plan's `realtime` section: the limits of Realtime API sessions (`GET /v1/realtime`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Realtime"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Realtime:
    """Limits of each WebSocket session relayed to a realtime upstream."""

    max_duration: float = 1800.0
    """Seconds a session may last; then both sides are closed (the client is told why first)."""
    max_sessions_per_key: int | None = None
    """Sessions one key (or, without `auth`, the whole gateway) may hold open at once; None: no cap."""
    max_message: int = 16 << 20
    """Bytes of one WebSocket message in either direction (a longer one closes the session with 1009)."""
