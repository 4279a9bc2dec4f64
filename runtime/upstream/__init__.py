"""Everything that talks to an upstream: the transport seam (`transport`, with httpx) and the lean
hot-path HTTP/1.1 pool (`h11pool`, its wire `http1`: request heads and httptools-parsed answers), the adapter seam
(`adapter`), OpenAI's wire format for the `openai`/`azure` families (`openai_wire`), the media
routes' wire and units (`media_wire`, uploads encoded by `multipart`), the native
provider adapters (`providers/`), the in-process `mock` provider and local token counts (`tokens`,
over the lean byte-pair counter `bpe`).

May import: the plan and `runtime.errors`.
"""
