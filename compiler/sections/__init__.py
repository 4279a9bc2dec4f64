"""Per-section rules of the pipeline's resolve and check phases: routing policy (`routing`),
`auth`/`teams`/`users` (`governance`), `mcp` and `a2a`.

May import: `compiler.diagnostics`, `compiler.data` and `runtime.plan`.
"""
