"""`just bench`: measure sidegate against a fast local mock upstream with wrk.

Gateway pinned to core 0, mock upstream and wrk to core 1 (when the machine has two cores).
Scenarios: the mock called directly (baseline), a hypercorn+trio hello world (the stack's ceiling),
sidegate non-stream and stream at each concurrency, sidegate with keys, limits, budgets and spend
logging on, sidegate with 2 workers, and (`--vs litellm`) the LiteLLM proxy on the same mock.
Prints a table and the issue's targets (met or missed); writes JSON to bench-results/.

Usage: python -m tests.bench.run [--duration 5] [--concurrency 1,10,50,200] [--chunks 20] [--quick]
                                 [--vs litellm] [--no-workers]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench import litellm
from tests.bench.wrk import pin, wrk

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
_ENV = {"BENCH_KEY": "sk-bench", "BENCH_MASTER": "sk-bench-master", "BENCH_CLIENT_KEY": "sk-bench-client"}
Result = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float = 10.0) -> float:
    """Seconds until `url` first answers 200."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def rss_peak_mb(pid: int) -> float:
    """Peak RSS of `pid` and its children (workers), in MB."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Bench:
    """One run: processes to stop at the end, and the rows measured so far."""

    def __init__(self, tmpdir: Path, duration: float) -> None:
        self.tmpdir = tmpdir
        self.duration = duration
        self.procs: list[subprocess.Popen[bytes]] = []
        self.results: list[Result] = []
        self.facts: dict[str, float] = {}

    def start(self, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **_ENV, **(env or {})}, stdout=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()
        proc.wait(timeout=20)

    def gateway(self, port: int, mock: int, extra: str = "", workers: int = 1, cores: str = "0") -> tuple[
            subprocess.Popen[bytes], float]:
        spec = self.tmpdir / f"gw-{port}.yaml"
        spec.write_text(_SPEC.format(port=port, mock=mock) + extra)
        prefix = ["taskset", "-c", cores] if pin(0) else []
        cmd = [*prefix, sys.executable, "-m", "compiler.cli", "serve", str(spec)]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        proc = self.start(cmd)
        return proc, wait_ready(f"http://127.0.0.1:{port}/health/ready")

    def run(self, name: str, url: str, body: str, c: int) -> Result:
        r: Result = {"scenario": name, "c": c, **wrk(url, body, c, self.duration, self.tmpdir)}
        self.results.append(r)
        print(f"{name:<30} c={c:<4} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:8.2f} ms  "
              f"p99 {r['p99_ms']:8.2f} ms  errors {r['errors']:.0f}", flush=True)
        return r

    def find(self, name: str, c: int) -> Result | None:
        return next((r for r in self.results if r["scenario"] == name and r["c"] == c), None)


def _targets(b: Bench, conc: list[int]) -> list[tuple[str, str, bool | None]]:
    """The issue's targets as (what, measured, met); met is None when the run lacks the data."""
    out: list[tuple[str, str, bool | None]] = []

    def rps(name: str, c: int) -> float | None:
        r = b.find(name, c)
        return float(r["rps"]) if r else None

    def add(what: str, value: float | None, fmt: Callable[[float], str], ok: Callable[[float], bool]) -> None:
        out.append((what, "n/a" if value is None else fmt(value), None if value is None else ok(value)))

    hello, sg50 = rps("hello-world ceiling", 50), rps("sidegate", 50)
    add("non-stream c=50 >= 75% of hello world", sg50 / hello if sg50 and hello else None,
        lambda v: f"{v:.0%}", lambda v: v >= 0.75)
    add("stream c=50 >= 750 streams/s", rps("sidegate stream", 50), lambda v: f"{v:.0f}", lambda v: v >= 750)
    s10, s200 = rps("sidegate", 10), rps("sidegate", 200)
    h10, h200 = rps("hello-world ceiling", 10), rps("hello-world ceiling", 200)
    add("c=200 throughput >= 90% of c=10", s200 / s10 if s10 and s200 else None,
        lambda v: f"{v:.0%}" + (f" (hello world itself: {h200 / h10:.0%})" if h10 and h200 else ""),
        lambda v: v >= 0.9)
    r200 = b.find("sidegate", 200)
    add("p99 at c=200 < 1 s", float(r200["p99_ms"]) if r200 else None, lambda v: f"{v:.0f} ms", lambda v: v < 1000)
    one, direct = b.find("sidegate", 1), b.find("direct", 1)
    if one and direct:
        add("added p50 at c=1 <= 0.6 ms", float(one["p50_ms"]) - float(direct["p50_ms"]),
            lambda v: f"{v:.2f} ms", lambda v: v <= 0.6)
        add("added p99 at c=1 <= 1.5 ms", float(one["p99_ms"]) - float(direct["p99_ms"]),
            lambda v: f"{v:.2f} ms", lambda v: v <= 1.5)
    c = max(conc)
    gov, plain = rps("sidegate +keys/limits/spend", 50 if 50 in conc else c), rps("sidegate", 50 if 50 in conc else c)
    add("keys+limits+spend cost <= 10%", 1 - gov / plain if gov and plain else None,
        lambda v: f"{v:.1%}", lambda v: v <= 0.10)
    add("peak RSS <= 100 MB per worker", b.facts.get("peak_rss_mb"), lambda v: f"{v:.0f} MB", lambda v: v <= 100)
    add("cold start <= 1 s", b.facts.get("cold_start_s"), lambda v: f"{v * 1000:.0f} ms", lambda v: v <= 1.0)
    w2 = rps("sidegate 2 workers", 50)
    add("2 workers >= 1.8x one (needs 2 free cores)", w2 / sg50 if w2 and sg50 else None,
        lambda v: f"{v:.2f}x", lambda v: v >= 1.8)
    for name, label in (("sidegate", "non-stream"), ("sidegate stream", "stream")):
        lite = rps(f"litellm{name[len('sidegate'):]}", 50)
        ours = rps(name, 50)
        add(f"{label} c=50 >= 10x LiteLLM", ours / lite if ours and lite else None,
            lambda v: f"{v:.1f}x", lambda v: v >= 10)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", default="1,10,50,200")
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="c=1 and c=50 only, 3 s each, no 2-worker run")
    ap.add_argument("--vs", choices=["litellm"], help="also run the scenarios against another gateway")
    ap.add_argument("--no-workers", action="store_true", help="skip the 2-worker scenario")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    if args.vs == "litellm" and litellm.executable() is None:
        print(f"bench: no LiteLLM proxy at {litellm.VENV}; run `just bench-litellm-setup`", file=sys.stderr)
        return 1
    conc = [1, 50] if args.quick else [int(c) for c in args.concurrency.split(",")]
    chat = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}]})
    stream = json.dumps({"model": "bench", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(Path(tmp), 3.0 if args.quick else args.duration)
        try:
            _scenarios(b, args, conc, chat, stream)
        finally:
            for p in b.procs:
                p.terminate()
            for p in b.procs:
                p.wait(timeout=20)
    _report(b, conc, args)
    return 0


def _scenarios(b: Bench, args: argparse.Namespace, conc: list[int], chat: str, stream: str) -> None:
    py = sys.executable
    mock, hello = free_port(), free_port()
    b.start([*pin(1), py, "-m", "tests.bench.mock_upstream", str(mock), str(args.chunks)])
    b.start([*pin(0), py, "-m", "tests.bench.hello", str(hello)])
    wait_ready(f"http://127.0.0.1:{hello}/", 10)
    port = free_port()
    gw, b.facts["cold_start_s"] = b.gateway(port, mock)
    for c in conc:
        b.run("direct", f"http://127.0.0.1:{mock}/v1/chat/completions", chat, c)
    for c in sorted({*conc, 50}):
        b.run("hello-world ceiling", f"http://127.0.0.1:{hello}/", "{}", c)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    for c in conc:
        b.run("sidegate", url, chat, c)
    for c in conc:
        b.run("sidegate stream", url, stream, c)
    b.facts["peak_rss_mb"] = rss_peak_mb(gw.pid)
    b.stop(gw)
    port = free_port()
    gov, _ = b.gateway(port, mock, _GOVERNED.format(db=b.tmpdir / "gw.db"))
    for c in conc:
        b.run("sidegate +keys/limits/spend", f"http://127.0.0.1:{port}/v1/chat/completions", chat, c)
    b.facts["peak_rss_governed_mb"] = rss_peak_mb(gov.pid)
    b.stop(gov)
    if not (args.quick or args.no_workers):
        # Two workers may use both cores, which wrk and the mock share: on a 2-core machine this
        # measures contention as much as scaling (reported as such).
        port = free_port()
        two, _ = b.gateway(port, mock, workers=2, cores="0,1")
        b.run("sidegate 2 workers", f"http://127.0.0.1:{port}/v1/chat/completions", chat, 50)
        b.stop(two)
    if args.vs == "litellm":
        port = free_port()
        lite = litellm.start(port, mock, b.tmpdir, pin(0))
        b.procs.append(lite)
        b.facts["litellm_cold_start_s"] = wait_ready(f"http://127.0.0.1:{port}/health/liveliness", 180)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        for c in conc:
            b.run("litellm", url, chat, c)
        for c in conc:
            b.run("litellm stream", url, stream, c)
        b.facts["litellm_peak_rss_mb"] = rss_peak_mb(lite.pid)


def _report(b: Bench, conc: list[int], args: argparse.Namespace) -> None:
    direct = {r["c"]: r for r in b.results if r["scenario"] == "direct"}
    print()
    for r in b.results:
        if r["scenario"] in ("sidegate", "litellm") and r["c"] in direct:
            d = direct[r["c"]]
            print(f"added latency {r['scenario']} c={r['c']}: p50 {r['p50_ms'] - d['p50_ms']:.2f} ms, "
                  f"p99 {r['p99_ms'] - d['p99_ms']:.2f} ms")
    facts = ", ".join(f"{k} {v:.3g}" for k, v in b.facts.items())
    print(f"{facts}\n\ntargets:")
    targets = _targets(b, conc)
    for what, measured, met in targets:
        mark = "n/a   " if met is None else "met   " if met else "MISSED"
        print(f"  {mark} {what:<46} {measured}")
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"bench-{stamp}.json").write_text(json.dumps(
        {"date": stamp, "cpus": os.cpu_count(), "pinned": bool(pin(0)), "args": vars(args), **b.facts,
         "results": b.results, "targets": [{"what": w, "measured": m, "met": ok} for w, m, ok in targets]},
        indent=2))


if __name__ == "__main__":
    sys.exit(main())
