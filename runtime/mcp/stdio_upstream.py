"""An upstream MCP server run as a subprocess speaking newline-delimited JSON-RPC on stdin/stdout,
started at boot or at the first request, restarted with backoff when it exits, and killed when
the gateway shuts down or the server leaves the plan."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import orjson
import trio

from sidegate.runtime.mcp.sse import Lines
from sidegate.runtime.mcp.stream_upstream import StreamUpstream
from sidegate.runtime.mcp.upstream import ResolvedServer
from sidegate.runtime.plan import McpStart

__all__ = ["StdioUpstream"]

_MAX_LINE = 16 * 1024 * 1024


class StdioUpstream(StreamUpstream):
    """A stdio upstream and its supervisor."""

    probe_modern = True

    def __init__(self, resolved: ResolvedServer, on_event: Any = None, parent: StdioUpstream | None = None) -> None:
        super().__init__(resolved, on_event, boot=parent is None and resolved.server.start is McpStart.BOOT)
        if parent is not None:  # the session-era twin of a server speaking both eras: one cap, one memory
            self.probe_modern = False
            self.limiter, self.tools, self.param_bindings = parent.limiter, parent.tools, parent.param_bindings
            self.deliver, self.followed, self.spawn = parent.deliver, parent.followed, parent.spawn
        self._twin: StdioUpstream | None = None
        self._twin_scope = trio.CancelScope()
        self.pid: int | None = None
        self._stdin: trio.abc.SendStream | None = None
        self._write_lock = trio.Lock()

    def session_twin(self) -> StdioUpstream | None:
        """For a session-era client of a server that speaks 2026-07-28 on its channel: a second
        process of the same command, in the session era, started at its first request and
        stopped with this one (None when this channel is in the session era already)."""
        if not self.modern or self.spawn is None:
            return None
        if self._twin is None:
            self._twin = StdioUpstream(self.resolved, self._on_event, parent=self)
            self.spawn(self._run_twin)
        return self._twin

    async def _run_twin(self) -> None:
        assert self._twin is not None
        with self._twin_scope:
            await self._twin.run()

    def follow(self, deliver: Any, followed: Any) -> None:
        super().follow(deliver, followed)
        if self._twin is not None:
            self._twin.deliver, self._twin.followed = deliver, followed

    async def aclose(self) -> None:
        self._twin_scope.cancel()
        await super().aclose()

    async def _send(self, message: dict[str, Any]) -> None:
        stdin = self._stdin
        if stdin is None:
            raise self.unavailable("not running")
        async with self._write_lock:
            try:
                await stdin.send_all(orjson.dumps(message) + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise self.unavailable("stdin closed") from None

    async def _open(self) -> str:
        env = {**os.environ, **dict(self.resolved.env)}
        process = await trio.lowlevel.open_process(
            list(self.server.command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )
        self.pid = process.pid
        assert process.stdin is not None and process.stdout is not None
        try:
            async with trio.open_nursery() as nursery:
                self._stdin = process.stdin
                nursery.start_soon(self._read, process.stdout, nursery.cancel_scope)
                await self._handshake()
                await process.wait()
                nursery.cancel_scope.cancel()
            return f"exited with status {process.returncode}"
        finally:
            self._stdin = None
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()

    async def _read(self, stdout: trio.abc.ReceiveStream, scope: trio.CancelScope) -> None:
        lines = Lines(_MAX_LINE)
        try:
            while True:
                chunk = await stdout.receive_some(65536)
                if not chunk:
                    break
                for line in lines.feed(chunk):
                    if line.strip():
                        await self._dispatch(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
            pass  # a line past the limit ends the channel (the supervisor restarts the server)
        scope.cancel()
