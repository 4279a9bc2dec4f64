"""The OpenAI Responses API (`/v1/responses`) on every backend.

Lives here: request checks and the lowering of a Responses request to chat completions
(`request`, `items`), response objects (`output`), the Responses event stream made from a chat
stream (`stream`), the dialect through which the routing loop serves it, passing it through to
OpenAI and Azure and translating for every other backend (`dialect`), and the stored responses
behind `previous_response_id` and `GET /v1/responses/{id}` (`records`). The HTTP routes are in
`runtime.http.responses`.
May import: the plan, `runtime.errors`, `runtime.upstream`, `runtime.store`, `runtime.routing`
(the deployment it is served by).
"""
