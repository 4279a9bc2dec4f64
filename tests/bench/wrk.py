"""Drive wrk and read its report: throughput, p50/p99 from the latency distribution, errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.body = '{body}'
"""


def pin(core: int) -> list[str]:
    """A taskset prefix pinning to `core` (empty on a one-core machine)."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core)]
    return []


def to_ms(value: str) -> float:
    """wrk's duration text (`523.00us`, `1.02ms`, `1.50s`, `2.00m`) in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(f"not a wrk duration: {value!r}")
    n = float(m.group(1))
    return {"us": n / 1000, "ms": n, "s": n * 1000, "m": n * 60_000}[m.group(2)]


def parse(out: str) -> dict[str, float]:
    """Throughput, p50/p99 and error count from `wrk --latency` output.

    The percentiles come from the "Latency Distribution" block only: the thread-stats line above it
    also ends in a percentage (`+/- Stdev`), which an unanchored `50%` pattern would match."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)[ \t]*$", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)[ \t]*$", out, re.M)
    if not (rps and p50 and p99):
        raise ValueError(f"unreadable wrk output:\n{out}")
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return {"rps": float(rps.group(1)), "p50_ms": to_ms(p50.group(1)), "p99_ms": to_ms(p99.group(1)),
            "errors": errors}


def wrk(url: str, body: str, conns: int, duration: float, script_dir: Path, key: str = "sk-bench-client") -> dict[str, float]:
    """One wrk run (pinned to core 1) POSTing `body` to `url` over `conns` connections."""
    script = script_dir / "post.lua"
    script.write_text(_LUA.format(body=body, key=key))
    cmd = [*pin(1), "wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "--timeout", "10s", "--latency",
           "-s", str(script), url]
    return parse(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
