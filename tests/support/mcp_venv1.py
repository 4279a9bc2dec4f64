"""A cached virtual environment with mcp 1.x (the SDK's previous major), for an old client and an
old server in the MCP tests. Built once from the package registry under `.cache/` (gitignored)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REQUIREMENT = "mcp>=1.20,<2"
HOME = Path(__file__).resolve().parents[2] / ".cache" / "mcp1-venv"


def mcp1_python() -> str:
    """The venv's interpreter, building the venv first when it is missing or stale."""
    python = HOME / "bin" / "python"
    marker = HOME / "requirement.txt"
    if not (python.exists() and marker.exists() and marker.read_text() == REQUIREMENT):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(HOME)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", REQUIREMENT],
                       check=True, stdout=subprocess.DEVNULL)
        marker.write_text(REQUIREMENT)
    return str(python)
