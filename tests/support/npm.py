"""Node CLIs from the npm registry for end-to-end tests, installed once into a cache directory.

Outside CI a missing `npm` or an unreachable registry skips the test with the reason; under CI
(`CI` set) it fails instead, so the suite cannot pass without having run the real client."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["npm_bin", "npm_modules"]

CACHE = Path(os.environ.get("SIDEGATE_NPM_CACHE", Path.home() / ".cache" / "sidegate-tests" / "npm"))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the real client must run)")
    pytest.skip(reason)


def npm_modules(package: str, marker: str) -> Path:
    """The `node_modules` folder holding npm `package` (e.g. `openai@6.9.0`), installed if `marker`
    (a path inside it) is missing."""
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("npm is not installed")
    assert npm is not None
    where = CACHE / package.replace("/", "_").replace("@", "")
    modules = where / "node_modules"
    if not (modules / marker).exists():
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(where), package],
                              capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0 or not (modules / marker).exists():
            _unavailable(f"npm could not install {package}: {done.stderr.strip()[-500:]}")
    return modules


def npm_bin(package: str, command: str) -> Path:
    """The path of `command` from npm `package` (e.g. `@openai/codex@0.171.0`), installed if needed."""
    return npm_modules(package, f".bin/{command}") / ".bin" / command
