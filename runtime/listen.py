"""Accepting client connections within the process's means.

hypercorn's own accept loop (trio's `serve_listeners`) has no cap on open connections, and at the
file-descriptor limit it logs a traceback every 100 ms while every new client waits in the backlog.
This module runs the connection server (:mod:`runtime.h1`; hypercorn's `TCPServer` with
`SIDEGATE_FRONT=hypercorn`) and the app's ASGI lifespan under its own accept loop (the lifespan
driven here as hypercorn drives it; hypercorn's own with its front: `hypercorn.trio` is imported only
then, ~4 MB and ~40 ms of every start otherwise):

- at most `max_connections` client connections are open (`server.max_connections`, clamped to half
  the file descriptors the process may open: the rest is for upstream connections, the store and
  logs); a connection past the cap is answered `503` with `Retry-After` and closed at once;
- when `accept` fails for lack of descriptors anyway (EMFILE/ENFILE), one reserved descriptor is
  released to accept the waiting client, answer it the same `503` and close it; the open
  connections keep being served;
- either way, one warning line at most every 10 seconds (with the count refused), never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol

import trio
from hypercorn.config import Config

from sidegate.runtime.h1 import Front
from sidegate.runtime.netio import LeanStream, close_now

__all__ = ["BUSY", "WARN_EVERY", "connection_budget", "serve_http"]

_FD_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
WARN_EVERY = 10.0
"""Seconds between two `connections_refused` warnings (the count in between is in the next one)."""
_BODY = b'{"error":{"message":"sidegate is at its connection limit; retry shortly","type":"service_unavailable",' \
        b'"param":null,"code":"too_many_connections"}}'
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(_BODY)) + _BODY
"""What a refused connection is answered."""


def connection_budget(requested: int) -> int:
    """`requested`, clamped to half the descriptors this process may open (at least 8)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(8, min(requested, (soft - 32) // 2))


class _Gate:
    """Counts open connections and refusals; rate-limits the warning."""

    def __init__(self, limit: int, warn: Callable[..., None]) -> None:
        self.limit = limit
        self.open = 0
        self._warn = warn
        self._refused = 0
        self._last = -WARN_EVERY

    def refused(self, reason: str) -> None:
        self._refused += 1
        now = trio.current_time()
        if now - self._last >= WARN_EVERY:
            self._warn("connections_refused", reason=reason, refused=self._refused, open=self.open, limit=self.limit)
            self._refused, self._last = 0, now


async def _refuse(stream: trio.abc.HalfCloseableStream) -> None:
    """Answer 503 and close (the request is read first, so closing does not reset the answer away)."""
    with trio.move_on_after(1.0):
        try:
            await stream.receive_some(65536)
            await stream.send_all(BUSY)
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    await trio.aclose_forcefully(stream)


_BURST = 256
"""Connections taken from the accept queue in one go, without yielding to the scheduler between them.

Accepting one connection per scheduler pass starved a burst of new clients: with 200 arriving at
once on a busy worker, the last ones waited seconds in the queue (p99 3.9 s at c=200)."""
_IGNORED = frozenset(getattr(errno, name) for name in (
    "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH",
    "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT", "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET")
    if hasattr(errno, name))
"""Errors of one `accept` that concern only the client it would have been (as trio's listener)."""


class _Listening(Protocol):
    """A listening socket, non-blocking (what `_accepted` uses of it)."""

    def accept(self) -> tuple[socket.socket, Any]: ...
    def fileno(self) -> int: ...


async def _accepted(sock: _Listening, most: int = _BURST) -> list[LeanStream]:
    """The connections waiting in `sock`'s queue (at least one: parks until one arrives), at most
    `most`. An error that is not one client's (EMFILE...) is raised when nothing was taken yet."""
    out: list[LeanStream] = []
    while len(out) < most:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            if out:
                break
            await trio.lowlevel.wait_readable(sock)
        except OSError as exc:
            if exc.errno in _IGNORED:
                continue
            if out:
                break  # met again by the next call
            raise
        else:
            out.append(LeanStream(conn))
    return out


async def _accept_loop(sock: _Listening, handler: Callable[[Any], Awaitable[None]], nursery: trio.Nursery,
                       gate: _Gate) -> None:
    reserve: int | None = os.open(os.devnull, os.O_RDONLY)

    async def run(stream: LeanStream) -> None:
        try:
            await handler(stream)
        finally:
            gate.open -= 1
            await close_now(stream)

    try:
        while True:
            try:
                streams = await _accepted(sock)
            except OSError as exc:
                if exc.errno not in _FD_ERRNOS:
                    raise
                gate.refused("fd_limit")
                if reserve is not None:  # free one descriptor to take the waiting client and refuse it
                    os.close(reserve)
                    reserve = None
                    with contextlib.suppress(OSError):
                        for each in await _accepted(sock, 1):
                            nursery.start_soon(_refuse, each)
                    try:
                        reserve = os.open(os.devnull, os.O_RDONLY)
                    except OSError:
                        reserve = None
                await trio.sleep(0.01)
                continue
            for each in streams:
                if gate.open >= gate.limit:
                    gate.refused("max_connections")
                    nursery.start_soon(_refuse, each)
                else:
                    gate.open += 1  # counted now: the burst's next connection sees it
                    nursery.start_soon(run, each)
    finally:
        if reserve is not None:
            os.close(reserve)


class _Lifespan(Protocol):
    async def handle_lifespan(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...
    async def wait_for_startup(self) -> None: ...
    async def wait_for_shutdown(self) -> None: ...


class Lifespan:
    """The app's ASGI lifespan, as hypercorn's `Lifespan` runs it: `lifespan.startup` before the first
    connection (waited for up to `timeout` seconds), `lifespan.shutdown` after the drain; a failed
    startup raises; an app that raises on the lifespan scope is served without one."""

    def __init__(self, app: Any, state: dict[str, Any], startup_timeout: float, shutdown_timeout: float) -> None:
        self.app = app
        self.state = state
        self.timeouts = startup_timeout, shutdown_timeout
        self.supported = True
        self.startup = trio.Event()
        self.shutdown = trio.Event()
        self.failure = ""
        self._to_app, self._from_server = trio.open_memory_channel[dict[str, Any]](2)

    async def handle_lifespan(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        scope = {"type": "lifespan", "asgi": {"spec_version": "2.0", "version": "3.0"}, "state": self.state}
        try:
            await self.app(scope, self._from_server.receive, self._send)
        except Exception:
            self.supported = False
        finally:
            self.startup.set()
            self.shutdown.set()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            self.failure = str(message.get("message", "")) if kind.endswith("failed") else ""
            self.startup.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self.shutdown.set()
        else:
            raise RuntimeError(f"unexpected lifespan message {kind!r}")

    async def _step(self, kind: str, done: trio.Event, seconds: float) -> None:
        if not self.supported:
            return
        await self._to_app.send({"type": kind})
        with trio.fail_after(seconds):
            await done.wait()

    async def wait_for_startup(self) -> None:
        await self._step("lifespan.startup", self.startup, self.timeouts[0])
        if self.failure:
            raise RuntimeError(f"the app's lifespan startup failed: {self.failure}")

    async def wait_for_shutdown(self) -> None:
        await self._step("lifespan.shutdown", self.shutdown, self.timeouts[1])


async def serve_http(
    app: Any, config: Config, socks: Sequence[socket.socket], *, max_connections: int, warn: Callable[..., None],
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI `app` on `socks` until `shutdown_trigger` returns, then let open requests
    finish for up to `config.graceful_timeout` (as hypercorn's worker does). Connections are served
    by :class:`runtime.h1.Front`, or by hypercorn's own server with `SIDEGATE_FRONT=hypercorn` (kept
    to compare the two)."""
    hypercorn = os.environ.get("SIDEGATE_FRONT") == "hypercorn"
    lifespan_state: dict[str, Any] = {}
    lifespan: _Lifespan
    if hypercorn:
        from hypercorn.trio.lifespan import Lifespan as HypercornLifespan
        from hypercorn.trio.statsd import StatsdLogger
        from hypercorn.trio.worker_context import WorkerContext
        from hypercorn.utils import wrap_app

        config.set_statsd_logger_class(StatsdLogger)
        wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
        lifespan = HypercornLifespan(wrapped, config, lifespan_state)
        context = WorkerContext(None)
    else:
        lifespan = Lifespan(app, lifespan_state, config.startup_timeout, config.shutdown_timeout)
    gate = _Gate(max_connections, warn)
    front: Front | None = None
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            handler: Callable[[Any], Awaitable[None]]
            if hypercorn:
                from hypercorn.trio.tcp_server import TCPServer
                from hypercorn.typing import ConnectionState

                handler = partial(TCPServer, wrapped, config, context, ConnectionState(lifespan_state.copy()))
            else:
                front = Front(app, keep_alive=config.keep_alive_timeout, max_header=config.h11_max_incomplete_size,
                              state=dict(lifespan_state), warn=warn, max_message=config.websocket_max_message_size)
                handler = front.serve
            task_status.started()
            try:
                async with trio.open_nursery() as nursery:

                    async def stop_on(trigger: Callable[[], Awaitable[Any]]) -> None:
                        await trigger()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(stop_on, shutdown_trigger)
                    if hypercorn:
                        nursery.start_soon(stop_on, context.terminate.wait)
                    for sock in socks:
                        sock.setblocking(False)
                        nursery.start_soon(_accept_loop, sock, handler, server_nursery, gate)
            except BaseExceptionGroup as error:
                _, other = error.split(KeyboardInterrupt)
                if other is not None:
                    raise other from None
            finally:
                if hypercorn:
                    await context.terminated.set()
                if front is not None:
                    front.drain()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
