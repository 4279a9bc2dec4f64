"""Gemini's native API (`POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`)
served from any backend: the request translated to OpenAI's chat shape (`request`), the answer and
stream translated back (`answer`), the hook the routing loop calls and Google's error envelope
(`dialect`). May import what `runtime.http` may."""
