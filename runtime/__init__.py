"""sidegate runtime: executes a compiled plan as an LLM gateway sidecar (Trio + hypercorn)."""

__all__: list[str] = []
