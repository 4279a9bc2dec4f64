"""An upstream MCP server run as a subprocess speaking newline-delimited JSON-RPC on stdin/stdout,
started at boot or at the first request, restarted with backoff when it exits, and killed when
the gateway shuts down or the server leaves the plan."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import orjson
import trio

from runtime.mcp.sse import Lines
from runtime.mcp.stream_upstream import StreamUpstream
from runtime.mcp.upstream import ResolvedServer
from runtime.plan import McpStart

__all__ = ["StdioUpstream"]

_MAX_LINE = 16 * 1024 * 1024


class StdioUpstream(StreamUpstream):
    """A stdio upstream and its supervisor."""

    def __init__(self, resolved: ResolvedServer, on_event: Any = None) -> None:
        super().__init__(resolved, on_event, boot=resolved.server.start is McpStart.BOOT)
        self.pid: int | None = None
        self._stdin: trio.abc.SendStream | None = None
        self._write_lock = trio.Lock()

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
