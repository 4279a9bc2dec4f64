"""The A2A gateway: agents declared in the spec, fronted at `/a2a/{agent}` with their cards
rewritten to point at sidegate, calls relayed (JSON-RPC and HTTP+JSON, streams event by event),
permissions checked, calls counted and agent health tracked.

Lives here: the registry of agents and their cards (`registry`, `card`), the relay (`relay`),
permissions and metrics. The HTTP endpoint that fronts them is `runtime.http.a2a_endpoint`.
May import: the plan, `runtime.errors`, `runtime.asgi`, `runtime.observe`, `runtime.governance` (keys).
"""
