"""Upstream MCP servers for the MCP tests: SDK-built servers run as subprocesses on free ports."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SERVER = str(Path(__file__).with_name("mcp_server.py"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_http(name: str, python: str = sys.executable, stateless: bool = False, transport: str = "http",
               extra: tuple[str, ...] = ()) -> Running:
    port = free_port()
    argv = [python, SERVER, name, transport, str(port), *(["--stateless"] if stateless else []), *extra]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"MCP server {name} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return Running(name, port, process)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"MCP server {name} did not listen on {port}")


def stdio_command(name: str, python: str = sys.executable) -> list[str]:
    return [python, SERVER, name, "stdio"]
