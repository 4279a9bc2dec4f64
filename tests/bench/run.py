"""`just bench`: measure sidegate against a fast local mock upstream with wrk.

Gateway pinned to core 0, mock upstream and wrk to core 1 (when the machine has two cores).
Scenarios: the mock called directly (baseline), a hypercorn+trio hello world (the stack's ceiling),
sidegate non-stream and stream at several concurrencies. Prints a table; writes JSON to
bench-results/bench-<date>.json.

Usage: python -m tests.bench.run [--duration 5] [--concurrency 1,10,50,200] [--chunks 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_SPEC = """# yaml-language-server: $schema=../schema/gateway.schema.json
version: 1
server: {{listen: "127.0.0.1:{port}"}}
providers:
  bench:
    type: openai-compatible
    base_url: http://127.0.0.1:{mock}/v1
    api_key: ${{BENCH_KEY}}
models:
  bench:
    targets: [{{provider: bench, model: bench-model}}]
observability:
  logs: {{level: warning}}
"""
_GOVERNED = """
auth:
  master_key: ${{BENCH_MASTER}}
  keys:
    - {{name: bench, key: "${{BENCH_CLIENT_KEY}}", team: bench, limits: {{rpm: 100000000}}}}
teams:
  bench: {{budget: {{amount: 1000000, period: 30d}}, limits: {{rpm: 100000000, parallel: 100000}}}}
store: {{database: "sqlite:///{db}"}}
"""
_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-client"
wrk.body = '{body}'
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(core: int) -> list[str]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core)]
    return []


def wait_ready(url: str, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def _ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    if not m:
        return float("nan")
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n if unit == "ms" else n * 1000


def wrk(url: str, body: str, conns: int, duration: float, script_dir: Path) -> dict[str, float]:
    script = script_dir / "post.lua"
    script.write_text(_LUA.format(body=body))
    cmd = [*pin(1), "wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors}


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", default="1,10,50,200")
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="c=1 and c=50 only, 3 s each")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    conc = [1, 50] if args.quick else [int(c) for c in args.concurrency.split(",")]
    duration = 3.0 if args.quick else args.duration
    mock_port, hello_port, gw_port, gov_port = free_port(), free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    results: list[dict[str, object]] = []
    chat = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}]})
    stream = json.dumps({"model": "bench", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        try:
            py = sys.executable
            procs.append(subprocess.Popen([*pin(1), py, "-m", "tests.bench.mock_upstream", str(mock_port),
                                           str(args.chunks)], cwd=ROOT, stdout=subprocess.DEVNULL))
            procs.append(subprocess.Popen([*pin(0), py, "-m", "tests.bench.hello", str(hello_port)], cwd=ROOT))
            spec = tmpdir / "bench.yaml"
            spec.write_text(_SPEC.format(port=gw_port, mock=mock_port))
            time.sleep(0.3)
            t0 = time.monotonic()
            gw = subprocess.Popen([*pin(0), py, "-m", "compiler.cli", "serve", str(spec)], cwd=ROOT,
                                  env={**os.environ, "BENCH_KEY": "sk-bench"})
            procs.append(gw)
            cold = wait_ready(f"http://127.0.0.1:{gw_port}/health/ready") + 0 * t0
            wait_ready(f"http://127.0.0.1:{hello_port}/", 10)

            def run(name: str, url: str, body: str, c: int) -> None:
                r = wrk(url, body, c, duration, tmpdir)
                results.append({"scenario": name, "c": c, **r})
                print(f"{name:<28} c={c:<4} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                      f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']:.0f}", flush=True)

            for c in conc:
                run("direct", f"http://127.0.0.1:{mock_port}/v1/chat/completions", chat, c)
            run("hello-world ceiling", f"http://127.0.0.1:{hello_port}/", "{}", 50)
            for c in conc:
                run("sidegate", f"http://127.0.0.1:{gw_port}/v1/chat/completions", chat, c)
            for c in conc:
                run("sidegate stream", f"http://127.0.0.1:{gw_port}/v1/chat/completions", stream, c)
            peak = rss_peak_mb(gw.pid)
            gw.terminate()
            gw.wait(timeout=15)
            # The same with keys, team limits, budgets and spend logging on.
            governed = tmpdir / "governed.yaml"
            governed.write_text(_SPEC.format(port=gov_port, mock=mock_port) + _GOVERNED.format(db=tmpdir / "gw.db"))
            gov = subprocess.Popen([*pin(0), py, "-m", "compiler.cli", "serve", str(governed)], cwd=ROOT,
                                   env={**os.environ, "BENCH_KEY": "sk-bench", "BENCH_MASTER": "sk-bench-master",
                                        "BENCH_CLIENT_KEY": "sk-bench-client"})
            procs.append(gov)
            wait_ready(f"http://127.0.0.1:{gov_port}/health/ready")
            for c in conc:
                run("sidegate +keys/limits/spend", f"http://127.0.0.1:{gov_port}/v1/chat/completions", chat, c)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=15)
    direct = {r["c"]: r for r in results if r["scenario"] == "direct"}
    print()
    for r in results:
        if r["scenario"] == "sidegate" and r["c"] in direct:
            d = direct[r["c"]]
            print(f"added latency c={r['c']}: p50 {float(r['p50_ms']) - float(d['p50_ms']):.2f} ms, "  # type: ignore[arg-type]
                  f"p99 {float(r['p99_ms']) - float(d['p99_ms']):.2f} ms")  # type: ignore[arg-type]
    print(f"cold start to ready: {cold * 1000:.0f} ms; gateway peak RSS: {peak:.0f} MB")
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"bench-{stamp}.json").write_text(json.dumps(
        {"date": stamp, "cpus": os.cpu_count(), "pinned": bool(pin(0)), "cold_start_s": cold,
         "peak_rss_mb": peak, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
