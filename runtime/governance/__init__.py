"""Who may call what, how fast and for how much: the hot-path gate (`gate`), virtual keys and their
cache (`keys`), limits and budgets (`limits`) over one-minute windows (`window`), JWT bearer tokens
(`jwt_auth`) and counters shared through Redis (`redis_sync`).

May import: the plan, `runtime.errors`, `runtime.observe`, `runtime.upstream` (usage and token counts).
"""
