"""Everything that talks to an upstream: the transport seam (`transport`, with httpx) and the lean
hot-path HTTP/1.1 pool (`h11pool`), the adapter seam (`adapter`), OpenAI's wire format for the
`openai`/`azure` families (`openai_wire`), the native provider adapters (`providers/`), the
in-process `mock` provider and local token counts (`tokens`).

May import: the plan and `runtime.errors`.
"""
