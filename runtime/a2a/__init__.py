"""The A2A gateway: agents declared in the spec, fronted at `/a2a/{agent}` with their cards
rewritten to point at sidegate, calls relayed (JSON-RPC and HTTP+JSON, streams event by event),
permissions checked, calls counted and agent health tracked."""

from runtime.a2a.endpoint import A2AGateway
from runtime.a2a.metrics import A2AMetrics

__all__ = ["A2AGateway", "A2AMetrics"]
