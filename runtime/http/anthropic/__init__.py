"""The Anthropic surface: `POST /v1/messages` translated to and from OpenAI's shape (`messages`), the
dialect hook through which the routing loop serves it (`dialect`), and `count_tokens`.

May import: as `runtime.http`.
"""
