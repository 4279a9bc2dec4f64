"""The response cache: request keys and opt-outs (`keys`), entries and the capturing sink (`entry`),
replayed streams (`replay`) and assembled ones (`assemble`), the backends (`memory`; `shared`: Redis
and the store; `stores`), semantic mode over Qdrant (`semantic`), metrics, and the cache around one
model call (`service`).

May import: the plan, `runtime.errors`, `runtime.observe`, `runtime.upstream`, `runtime.store`,
`runtime.governance` (grants, prices) and `runtime.routing` (a miss is served, and semantic mode's
prompts embedded, through the routing loop). Never `runtime.http`.
"""
