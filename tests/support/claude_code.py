"""Claude Code (`@anthropic-ai/claude-code` from npm) for the end-to-end tests, installed once into a
cache directory kept between runs (`$SIDEGATE_TEST_CACHE`, default `~/.cache/sidegate-tests`).

Without npm, or when the registry cannot be reached, the tests skip with the reason, except under
CI (`CI` set), where they fail: CI installs Node and npm and must run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["VERSION", "claude_binary", "claude_env"]

VERSION = os.environ.get("SIDEGATE_CLAUDE_CODE_VERSION", "2.1.197")
"""The Claude Code release the tests run (pinned, so a new release cannot break a run unseen)."""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Claude Code is needed under CI: {reason}")
    pytest.skip(reason)


def _version(binary: Path) -> str | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return None
    return out.stdout.split(" ", 1)[0].strip() if out.returncode == 0 else None


def claude_binary() -> Path:
    """The `claude` executable of `VERSION`, installed with npm into the cache on first use."""
    root = Path(os.environ.get("SIDEGATE_TEST_CACHE") or Path.home() / ".cache" / "sidegate-tests")
    prefix = root / f"claude-code-{VERSION}"
    binary = prefix / "node_modules" / ".bin" / "claude"
    if binary.exists() and _version(binary) == VERSION:
        return binary
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("npm is not installed (Claude Code comes from the npm registry)")
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run([str(npm), "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                               "--loglevel=error", f"@anthropic-ai/claude-code@{VERSION}"],
                              capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        _unavailable("npm install @anthropic-ai/claude-code timed out (registry unreachable?)")
    if done.returncode != 0 or _version(binary) != VERSION:
        _unavailable(f"npm install @anthropic-ai/claude-code@{VERSION} failed: {done.stderr.strip()[-500:]}")
    return binary


def claude_env(base_url: str, home: Path) -> dict[str, str]:
    """The environment Claude Code runs in: sidegate as its API, a throw-away HOME, nothing sent
    anywhere else (no telemetry, error reports, update checks or other non-essential traffic)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "sk-client",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
