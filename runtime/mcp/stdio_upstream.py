"""An upstream MCP server run as a subprocess speaking newline-delimited JSON-RPC on stdin/stdout.

Its supervisor lives in the hub's nursery: it starts the process at boot or at the first request,
performs the `initialize` handshake, restarts it with exponential backoff when it exits, and kills
it when the gateway shuts down (or the server leaves the plan)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Any

import orjson
import trio

from runtime.mcp.protocol import INTERNAL_ERROR, LATEST_HANDSHAKE, METHOD_NOT_FOUND, McpError, strip_envelope
from runtime.mcp.upstream import CLIENT_INFO, ResolvedServer, Upstream
from runtime.plan import McpStart

__all__ = ["StdioUpstream"]

_MAX_LINE = 16 * 1024 * 1024
_BACKOFF = (0.25, 30.0)


class StdioUpstream(Upstream):
    """A stdio upstream and its supervisor."""

    def __init__(self, resolved: ResolvedServer, on_event: Any = None) -> None:
        super().__init__(resolved)
        self.wanted = trio.Event()
        if resolved.server.start is McpStart.BOOT:
            self.wanted.set()
        self.ready = trio.Event()
        self.pid: int | None = None
        self.restarts = 0
        self.down = False
        """Between an exit and the next successful start: requests fail at once instead of waiting."""
        self._stdin: trio.abc.SendStream | None = None
        self._write_lock = trio.Lock()
        self._pending: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._on_event = on_event

    async def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.wanted.set()
        if self.down:
            raise self.unavailable(self.last_error or "restarting")
        await self.ready.wait()
        return await self._call(method, strip_envelope(params))

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid = self.next_id()
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._pending[rid] = send
        try:
            await self._write({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
            message = await receive.receive()
        finally:
            self._pending.pop(rid, None)
        if "__gone__" in message:
            raise self.unavailable(message["__gone__"])
        error = message.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise McpError(code if isinstance(code, int) else INTERNAL_ERROR, str(error.get("message", "error")),
                           error.get("data"))
        result = message.get("result")
        if not isinstance(result, dict):
            raise self.unavailable(f"{method} answered without a result")
        return result

    async def _write(self, message: dict[str, Any]) -> None:
        stdin = self._stdin
        if stdin is None:
            raise self.unavailable("not running")
        async with self._write_lock:
            try:
                await stdin.send_all(orjson.dumps(message) + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise self.unavailable("stdin closed") from None

    async def run(self) -> None:
        """Supervise the subprocess until cancelled."""
        await self.wanted.wait()
        delay = _BACKOFF[0]
        while True:
            started = trio.current_time()
            why = "exited"
            try:
                why = await self._run_once()
            except (OSError, McpError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            self._fail_pending(why)
            self.last_error = why
            self.down = True
            if self._on_event is not None:
                self._on_event("mcp_upstream_exited", server=self.name, reason=why, restart_in=delay)
            if trio.current_time() - started > 60:
                delay = _BACKOFF[0]
            await trio.sleep(delay)
            delay = min(delay * 2, _BACKOFF[1])
            self.restarts += 1

    async def _run_once(self) -> str:
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
                with trio.fail_after(self.server.timeout):
                    result = await self._call("initialize", {
                        "protocolVersion": LATEST_HANDSHAKE, "capabilities": {}, "clientInfo": CLIENT_INFO})
                self.version = str(result.get("protocolVersion"))
                await self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})
                self.down = False
                self.ready.set()
                await process.wait()
                nursery.cancel_scope.cancel()
            return f"exited with status {process.returncode}"
        except trio.TooSlowError:
            return "no answer to initialize"
        finally:
            self._stdin = None
            self.ready = trio.Event()
            self.version = None
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()

    async def _read(self, stdout: trio.abc.ReceiveStream, scope: trio.CancelScope) -> None:
        buffer = b""
        try:
            while True:
                chunk = await stdout.receive_some(65536)
                if not chunk:
                    break
                buffer += chunk
                if len(buffer) > _MAX_LINE:
                    break
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        await self._dispatch(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    async def _dispatch(self, line: bytes) -> None:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        if "method" in message:
            if "id" in message:  # a request from the server: sidegate offers no client features
                answer: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
                if message["method"] == "ping":
                    answer["result"] = {}
                else:
                    answer["error"] = {"code": METHOD_NOT_FOUND, "message": "not supported by the gateway"}
                with contextlib.suppress(McpError):
                    await self._write(answer)
            return
        waiter = self._pending.get(message.get("id"))  # type: ignore[arg-type]
        if waiter is not None:
            waiter.send_nowait(message)

    def _fail_pending(self, why: str) -> None:
        for waiter in list(self._pending.values()):
            with contextlib.suppress(trio.WouldBlock):
                waiter.send_nowait({"__gone__": why})
