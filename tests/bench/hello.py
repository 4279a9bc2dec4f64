"""The stack's ceiling: a trivial hypercorn + trio ASGI app answering a fixed JSON body.
Usage: python -m tests.bench.hello PORT"""

from __future__ import annotations

import sys
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

_BODY = b'{"ok":true}'


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            done = message["type"].replace("lifespan.", "lifespan.") + ".complete"
            await send({"type": done})
            if message["type"] == "lifespan.shutdown":
                return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")]})
    await send({"type": "http.response.body", "body": _BODY})


if __name__ == "__main__":
    config = Config()
    config.bind = [f"127.0.0.1:{sys.argv[1]}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    trio.run(serve, app, config)
