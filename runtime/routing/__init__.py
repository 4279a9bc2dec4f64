"""Where a model call goes: the per-plan runtime state with its deployments (`state`), model-name
resolution (`routes`), one request's record (`call`), the routing loop with retries, fallbacks and
hedging (`proxy`), one attempt (`relay`), strategies (`balance`), the circuit breaker (`breaker`)
and active health probes (`prober`).

May import: the plan, `runtime.errors`, `runtime.observe`, `runtime.upstream`, `runtime.governance`
(policies and windows) and `runtime.mcp` (the per-plan state resolves MCP servers' credentials).
Never `runtime.http`.
"""
