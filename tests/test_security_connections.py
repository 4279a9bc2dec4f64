"""Connection exhaustion (issue 15, case 6): under a lowered RLIMIT_NOFILE, idle sockets can no
longer lock every new client out. Connections past `server.max_connections` (clamped to half the
descriptors) get an immediate 503 in the error envelope while the open ones keep being served; at
the descriptor limit itself a reserved descriptor lets the waiting client be refused the same way;
the log says so in one rate-limited warning line, never a traceback."""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from sidegate.runtime.listen import BUSY, _accept_loop, _accepted, _Gate, connection_budget
from sidegate.runtime.netio import LeanStream

SPEC = """version: 1
server: {listen: "127.0.0.1:0", max_connections: 100000, keep_alive: 5m}
providers:
  fake: {type: mock}
models:
  demo:
    targets: [{provider: fake, model: demo}]
"""
_BODY = b'{"model":"demo","messages":[{"role":"user","content":"x"}]}'
REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
           b"content-length: %d\r\n\r\n" % len(_BODY)) + _BODY


_LIMITED = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); "
            "sys.argv[0] = 'sidegate'; runpy.run_module('sidegate.compiler.cli', run_name='__main__')")


async def _ask(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(REQUEST)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            answer += chunk
        return answer
    finally:
        await stream.aclose()


async def test_idle_sockets_at_the_limit_do_not_lock_new_clients_out(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    # The limit is set by the child itself (preexec_fn is unsafe in a process with threads).
    process = subprocess.Popen([sys.executable, "-c", _LIMITED, "serve", str(spec)], stderr=subprocess.PIPE)
    idle: list[socket.socket] = []
    try:
        assert process.stderr is not None
        port = 0
        while not port:
            line = await trio.to_thread.run_sync(process.stderr.readline)
            assert line, "the gateway exited before it started"
            record = json.loads(line)
            if record.get("event") == "started":
                port = int(record["listen"].rsplit(":", 1)[1])
        with trio.fail_after(30):
            first = await _ask(port)
            for _ in range(200):  # far more idle connections than the gateway has descriptors
                s = socket.create_connection(("127.0.0.1", port))
                idle.append(s)
            refused = await _ask(port)
            again = await _ask(port)
            # the open connections are still served: one of the idle ones sends a request now
            idle[0].sendall(REQUEST)
            served = await trio.to_thread.run_sync(lambda: idle[0].recv(65536))
            for s in idle[16:]:
                s.close()
    finally:
        for s in idle:
            s.close()
        process.terminate()
        _, err = await trio.to_thread.run_sync(process.communicate)
    assert first.startswith(b"HTTP/1.1 200")
    assert refused.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in refused, refused[:200]
    assert again.startswith(b"HTTP/1.1 503")
    assert served.startswith(b"HTTP/1.1 200"), served[:100]
    text = err.decode()
    warnings = [json.loads(x) for x in text.splitlines() if '"connections_refused"' in x]
    assert len(warnings) == 1 and warnings[0]["limit"] == connection_budget_for(64), warnings
    assert "Traceback" not in text and "Too many open files" not in text


def connection_budget_for(soft: int) -> int:
    return max(8, (soft - 32) // 2)


class _Exhausted:
    """A listening socket whose first accept fails with EMFILE (the process is out of descriptors),
    then hands out `conns` one per accept, then has an empty queue (parks on `parked`'s descriptor,
    a listening socket nobody connects to)."""

    def __init__(self, conns: list[socket.socket], parked: socket.socket) -> None:
        self.conns = conns
        self.parked = parked
        self.failed = False

    def fileno(self) -> int:
        return self.parked.fileno()

    def accept(self) -> tuple[socket.socket, Any]:
        if not self.failed:
            self.failed = True
            raise OSError(24, "Too many open files")
        if not self.conns:
            raise BlockingIOError
        return self.conns.pop(0), None


async def test_at_the_descriptor_limit_the_waiting_client_is_refused_cleanly() -> None:
    pairs = [socket.socketpair() for _ in range(2)]
    parked = socket.socket()
    parked.bind(("127.0.0.1", 0))
    parked.listen(1)
    warnings: list[dict[str, Any]] = []
    handled: list[Any] = []

    async def handler(stream: Any) -> None:
        handled.append(stream)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            gate = _Gate(10, lambda event, **kw: warnings.append({"event": event, **kw}))
            listening = _Exhausted([a for a, _ in pairs], parked)
            nursery.start_soon(_accept_loop, listening, handler, nursery, gate)
            refused_peer = pairs[0][1]
            refused_peer.sendall(REQUEST)
            answer = await trio.to_thread.run_sync(lambda: refused_peer.recv(65536))
            while not handled:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert answer == BUSY, "the client waiting at the limit got the 503, not a hang"
    assert [h.raw for h in handled] == [pairs[1][0]], "the next connection is served normally"
    assert warnings == [{"event": "connections_refused", "reason": "fd_limit", "refused": 1, "open": 0,
                         "limit": 10}]
    assert connection_budget(10**6) <= resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    for _, b in pairs:
        b.close()
    parked.close()


async def test_a_burst_of_new_clients_is_taken_from_the_accept_queue_at_once() -> None:
    """Connections already waiting are accepted in one pass (one per scheduler pass starved the last
    of 200 arriving together for seconds); each becomes a trio stream that carries bytes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    clients = [socket.create_connection(sock.getsockname()) for _ in range(20)]
    try:
        streams: list[LeanStream] = []
        with trio.fail_after(5):
            while len(streams) < 20:  # the handshakes complete in the kernel, maybe not all at once
                streams += await _accepted(sock)
        assert len(streams) == 20
        with trio.move_on_after(0.05) as waiting:
            await _accepted(sock)
        assert waiting.cancelled_caught, "an empty queue parks until a client arrives"
        clients[0].sendall(b"ping")
        got = b"".join([await s.receive_some(10) for s in streams if s.socket.getpeername() == clients[0].getsockname()])
        assert got == b"ping"
        for s in streams:
            await s.aclose()
    finally:
        for c in clients:
            c.close()
        sock.close()
