"""Drive wrk and read its report: throughput, p50/p99 from the latency distribution, errors.

Errors are socket errors, non-2xx answers and, for streams (`check_done`), answers whose body does
not hold `data: [DONE]` (a gateway answering 200 with an error body, or cutting the stream short)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
{headers}wrk.body = '{body}'
"""
# Counts stream answers without [DONE] in each thread and reports them at the end (wrk keeps one
# Lua state per thread; done() runs in another, so it asks the threads kept by setup()).
_CHECK_DONE = """local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 or not string.find(body, "[DONE]", 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("bad") end
  io.write(string.format("Streams without [DONE]: %d\\n", n))
end
"""


# Every request a new body (`vary`): the message's text ends in this run's tag and a counter, so a
# response cache sees only misses.
_VARY = """local n = 0
function request()
  n = n + 1
  return wrk.format(nil, nil, nil, string.format('{template}', n))
end
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
    m = re.search(r"^Streams without \[DONE\]: (\d+)", out, re.M)
    if m:  # a non-2xx answer is counted there too: count it once
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors += max(0, int(m.group(1)) - (int(non2xx.group(1)) if non2xx else 0))
    return {"rps": float(rps.group(1)), "p50_ms": to_ms(p50.group(1)), "p99_ms": to_ms(p99.group(1)),
            "errors": errors}


def script(body: str, key: str = "sk-bench-client", headers: dict[str, str] | None = None,
           check_done: bool = False, vary: str | None = None) -> str:
    """The Lua script POSTing `body` with the bench's headers (and the [DONE] check for streams)."""
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    out = _LUA.format(body=body, key=key, headers=extra) + (_CHECK_DONE if check_done else "")
    if vary is not None:
        out += _VARY.format(template=body.replace("%", "%%").replace("@VARY@", f"{vary} %d"))
    return out


def wrk(url: str, body: str, conns: int, duration: float, script_dir: Path, key: str = "sk-bench-client",
        headers: dict[str, str] | None = None, check_done: bool = False, vary: str | None = None) -> dict[str, float]:
    """One wrk run (pinned to core 1) POSTing `body` to `url` over `conns` connections (with `vary`,
    the `@VARY@` in `body` becomes `vary` and a counter, different for every request)."""
    path = script_dir / "post.lua"
    path.write_text(script(body, key, headers, check_done, vary))
    cmd = [*pin(1), "wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "--timeout", "10s", "--latency",
           "-s", str(path), url]
    return parse(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
