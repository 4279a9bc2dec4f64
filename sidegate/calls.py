"""A library call, in the three hosting modes: the request goes through `Exchange` into the app in
the runtime thread; the answer comes back decoded (whole, or chunk by chunk for a stream)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from sidegate.exchange import Exchange
from sidegate.host import Closed, Host
from sidegate.wire import EventDecoder, Result, decode, failure

__all__ = ["call", "call_async", "stream", "stream_async"]

Headers = list[tuple[bytes, bytes]]


def _exchange(host: Host, path: str, payload: dict[str, Any], headers: Headers) -> Exchange:
    return Exchange(host.app, path, orjson.dumps(payload), headers)


def _event_stream(headers: Headers) -> bool:
    return any(k == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers)


def call(host: Host, path: str, payload: dict[str, Any], headers: Headers) -> Result:
    """A whole answer, blocking."""
    ex = _exchange(host, path, payload, headers)
    return decode(*host.submit(lambda: ex.whole(host.nursery)).wait())


async def call_async(host: Host, path: str, payload: dict[str, Any], headers: Headers) -> Result:
    """A whole answer, awaited from asyncio or Trio."""
    ex = _exchange(host, path, payload, headers)
    return decode(*await host.submit(lambda: ex.whole(host.nursery)).wait_async())


def stream(host: Host, path: str, payload: dict[str, Any], headers: Headers) -> Iterator[Result]:
    """The stream's chunks as they arrive, blocking on each. Closing the iterator early hangs up
    (the upstream call is cancelled, the spend row says 499)."""
    ex = _exchange(host, path, payload, headers)
    status, head = host.submit(lambda: ex.start(host.nursery)).wait()
    ended = False
    try:
        if status >= 400 or status == 0 or not _event_stream(head):
            body = host.submit(ex.rest).wait()
            ended = True
            if status >= 400 or status == 0:
                raise failure(status or 500, head, body)
            yield decode(status, head, body)
            return
        events = EventDecoder()
        while (piece := host.submit(ex.next).wait()) is not None:
            yield from events.feed(piece)
            if events.done:
                break
        ended = True
    finally:
        if not ended:
            with contextlib.suppress(Closed):
                host.submit(ex.hang_up).wait()


async def stream_async(host: Host, path: str, payload: dict[str, Any], headers: Headers) -> AsyncIterator[Result]:
    """The stream's chunks as they arrive, awaited from asyncio or Trio."""
    ex = _exchange(host, path, payload, headers)
    status, head = await host.submit(lambda: ex.start(host.nursery)).wait_async()
    ended = False
    try:
        if status >= 400 or status == 0 or not _event_stream(head):
            body = await host.submit(ex.rest).wait_async()
            ended = True
            if status >= 400 or status == 0:
                raise failure(status or 500, head, body)
            yield decode(status, head, body)
            return
        events = EventDecoder()
        while (piece := await host.submit(ex.next).wait_async()) is not None:
            for chunk in events.feed(piece):
                yield chunk
            if events.done:
                break
        ended = True
    finally:
        if not ended:
            _hang_up(host, ex)


def _hang_up(host: Host, ex: Exchange) -> None:
    """Tell the app the client went away (without waiting: this may run in a generator's close)."""
    with contextlib.suppress(Closed):
        host.submit(ex.hang_up)
