"""`just bench`: measure sidegate against a fast local mock upstream (and, with `--vs`, Portkey and
LiteLLM on the same mock, in the same run) with wrk and the paced-streams client.

Each gateway runs alone, one process, pinned to core 0; the mock upstream, wrk and the paced client
share core 1 (when the machine has two cores). The mock writes each SSE event as its own chunk, as
real upstreams do. Scenarios, for each gateway: non-stream and stream (20 events) at each
concurrency; PACED_STREAMS concurrent paced streams (20 events at --paced-rate events/s each: relay
delay added to every event, gateway CPU per relayed event, peak RSS); as many clients cutting their
streams after 3 events (is the gateway still healthy, and its RSS after). sidegate also: the mock
called directly (baseline), a hypercorn+trio hello world (the stack's ceiling), streams sent in one
chunk (the old, unrealistic mock: a labelled extra), keys/limits/budgets/spend logging on,
OpenTelemetry tracing at 100% sampling (exported to a local sink), a regex guardrail (pre_call on a
4 KB prompt, against the same prompt unguarded; during_call on the stream), and 2 workers. Prints a table, the ratios sidegate/each other gateway, and the issue's targets (met or
missed); a scenario with errors (socket errors, non-2xx, a stream without [DONE]) is flagged and
makes the comparisons it is in invalid. Writes JSON to bench-results/.

Usage: python -m tests.bench.run [--duration 5] [--concurrency 1,10,50,200] [--chunks 20] [--quick]
           [--vs portkey] [--vs litellm] [--paced-streams 1000] [--paced-rate 10] [--no-workers]
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench import litellm, portkey, procstat, report
from tests.bench.paced import raise_fd_limit
from tests.bench.wrk import pin, wrk

ROOT = Path(__file__).resolve().parents[2]
_SPEC = """# yaml-language-server: $schema=../schema/gateway.schema.json
version: 1
server: {{listen: "127.0.0.1:{port}", max_connections: 8192}}
providers:
  bench:
    type: openai-compatible
    base_url: http://127.0.0.1:{mock}/v1
    api_key: ${{BENCH_KEY}}
models:
  bench:
    targets: [{{provider: bench, model: bench-model}}]
  bench-paced:
    targets: [{{provider: bench, model: paced}}]
  bench-one-chunk:
    targets: [{{provider: bench, model: one-chunk}}]
  bench-guarded:
    guardrails: [secrets]
    targets: [{{provider: bench, model: bench-model}}]
  bench-guarded-stream:
    guardrails: [leaks]
    targets: [{{provider: bench, model: bench-model}}]
guardrails:
  secrets: {{kind: regex, presets: [api_keys, aws_keys, private_keys]}}
  leaks: {{kind: regex, mode: during_call, patterns: ['\\bPROJECT-[0-9]{{4}}\\b']}}
observability:
  logs: {{level: warning}}
"""
_TRACED = """  tracing: {{endpoint: "http://127.0.0.1:{sink}", sampling: 1}}
"""
"""OpenTelemetry on, every request sampled, exported to a local sink (appended under `observability`)."""
_GOVERNED = """
auth:
  master_key: ${{BENCH_MASTER}}
  keys:
    - {{name: bench, key: "${{BENCH_CLIENT_KEY}}", team: bench, limits: {{rpm: 100000000}}}}
teams:
  bench: {{budget: {{amount: 1000000, period: 30d}}, limits: {{rpm: 100000000, parallel: 100000}}}}
store: {{database: "sqlite:///{db}"}}
"""
_CACHED = """
cache: {ttl: 1h, max_size: 256MiB}
"""
_ENV = {"BENCH_KEY": "sk-bench", "BENCH_MASTER": "sk-bench-master", "BENCH_CLIENT_KEY": "sk-bench-client"}
CUT_AFTER = 3
Result = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0) -> None:
    """Until something accepts connections on `port` (the mock upstream has no readiness route)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


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


def answers(url: str, headers: dict[str, str], body: str) -> bool:
    """Whether a POST of `body` to `url` answers 200."""
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return bool(r.status == 200)
    except OSError:
        return False


@dataclass
class Gateway:
    """A gateway under test: where to send requests, with which headers, and its process."""

    name: str
    url: str
    health: str
    proc: subprocess.Popen[bytes]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": "Bearer sk-bench-client", **self.headers}


class Bench:
    """One run: processes to stop at the end, and the rows measured so far."""

    def __init__(self, tmpdir: Path, args: argparse.Namespace) -> None:
        self.tmpdir = tmpdir
        self.args = args
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

    def sidegate(self, mock: int, extra: str = "", workers: int = 1, cores: str = "0") -> tuple[Gateway, float]:
        port = free_port()
        spec = self.tmpdir / f"gw-{port}.yaml"
        spec.write_text(_SPEC.format(port=port, mock=mock) + extra)
        prefix = ["taskset", "-c", cores] if pin(0) else []
        cmd = [*prefix, sys.executable, "-m", "sidegate.compiler.cli", "serve", str(spec)]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        proc = self.start(cmd)
        health = f"http://127.0.0.1:{port}/health/ready"
        return Gateway("sidegate", f"http://127.0.0.1:{port}/v1/chat/completions", health, proc), wait_ready(health)

    def run(self, name: str, url: str, body: str, c: int, headers: dict[str, str] | None = None,
            stream: bool = False, vary: str | None = None) -> Result:
        r: Result = {"scenario": name, "c": c, **wrk(url, body, c, self.args.duration, self.tmpdir,
                                                    headers=headers, check_done=stream, vary=vary)}
        self.results.append(r)
        flag = "  <-- ERRORS" if r["errors"] else ""
        print(f"{name:<30} c={c:<4} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:8.2f} ms  "
              f"p99 {r['p99_ms']:8.2f} ms  errors {r['errors']:.0f}{flag}", flush=True)
        return r

    def paced(self, name: str, url: str, headers: dict[str, str], pid: int | None, cut_after: int = 0) -> Result:
        """One run of the paced-streams client (pinned to core 1), as a row."""
        a = self.args
        cmd = [*pin(1), sys.executable, "-m", "tests.bench.paced", url, "--streams", str(a.paced_streams),
               "--timeout", str(a.paced_timeout), *(["--pid", str(pid)] if pid else []),
               *(["--cut-after", str(cut_after)] if cut_after else [])]
        for k, v in headers.items():
            cmd += ["--header", f"{k}: {v}"]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        r: Result = {"scenario": name, "c": a.paced_streams, **json.loads(out)}
        base = self.find("direct paced", a.paced_streams)
        if base and not cut_after:
            r["added_p50_ms"] = r["delay_p50_ms"] - base["delay_p50_ms"]
            r["added_p99_ms"] = r["delay_p99_ms"] - base["delay_p99_ms"]
        self.results.append(r)
        report.paced_line(r)
        return r

    def find(self, name: str, c: int) -> Result | None:
        return next((r for r in self.results if r["scenario"] == name and r["c"] == c), None)

    def suite(self, gw: Gateway, conc: list[int], chat: str, stream: str) -> None:
        """The scenarios every gateway runs: non-stream, stream, paced streams, cut streams."""
        for c in conc:
            self.run(gw.name, gw.url, chat, c, gw.headers)
        for c in conc:
            self.run(f"{gw.name} stream", gw.url, stream, c, gw.headers, stream=True)
        self.facts[f"{gw.name}_peak_rss_wrk_mb"] = procstat.rss_peak_mb(gw.proc.pid)
        self.paced(f"{gw.name} paced", gw.url, gw.auth, gw.proc.pid)
        cut = self.paced(f"{gw.name} cut", gw.url, gw.auth, gw.proc.pid, cut_after=CUT_AFTER)
        time.sleep(0.5)  # let the gateway notice the closed connections and settle
        healthy = answers(gw.url, gw.auth, chat)
        try:
            wait_ready(gw.health, 5)
        except RuntimeError:
            healthy = False
        cut.update(healthy=healthy, rss_after_mb=round(procstat.rss_now_mb(gw.proc.pid), 1),
                   rss_peak_mb=round(procstat.rss_peak_mb(gw.proc.pid), 1))
        cut["errors"] += 0 if healthy else 1
        print(f"{'':<30} after the cut streams: {'healthy' if healthy else 'NOT HEALTHY'}, "
              f"RSS {cut['rss_after_mb']:.0f} MB (peak {cut['rss_peak_mb']:.0f} MB)", flush=True)
        self.facts[f"{gw.name}_peak_rss_mb"] = procstat.rss_peak_mb(gw.proc.pid)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--concurrency", default="1,10,50,200")
    ap.add_argument("--chunks", type=int, default=20, help="content events of a (non-paced) stream")
    ap.add_argument("--quick", action="store_true", help="c=1 and c=50 only, 3 s each, no 2-worker run")
    ap.add_argument("--vs", action="append", choices=["portkey", "litellm"], default=[],
                    help="also run the scenarios against another gateway (repeatable)")
    ap.add_argument("--paced-streams", type=int, default=1000)
    ap.add_argument("--paced-events", type=int, default=20)
    ap.add_argument("--paced-rate", type=float, default=10.0, help="events/s of each paced stream")
    ap.add_argument("--paced-timeout", type=float, default=60.0)
    ap.add_argument("--no-workers", action="store_true", help="skip the 2-worker scenario")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    if "litellm" in args.vs and litellm.executable() is None:
        print(f"bench: no LiteLLM proxy at {litellm.VENV}; run `just bench-litellm-setup`", file=sys.stderr)
        return 1
    if "portkey" in args.vs and not portkey.installed():
        print(f"bench: no Portkey gateway at {portkey.DIR}; run `just bench-portkey-setup`", file=sys.stderr)
        return 1
    if args.quick:
        args.duration = min(args.duration, 3.0)
    conc = [1, 50] if args.quick else [int(c) for c in args.concurrency.split(",")]
    raise_fd_limit()  # 1,000 streams hold 3,000 sockets across the gateway, the mock and the client
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(Path(tmp), args)
        try:
            _scenarios(b, args, conc)
        finally:
            for p in b.procs:
                p.terminate()
            for p in b.procs:
                p.wait(timeout=20)
    report.report(b.results, b.facts, conc, vars(args), ROOT / "bench-results")
    return 0


def _scenarios(b: Bench, args: argparse.Namespace, conc: list[int]) -> None:
    py = sys.executable
    msg = [{"role": "user", "content": "hi"}]
    chat = json.dumps({"model": "bench", "messages": msg})
    stream = json.dumps({"model": "bench", "stream": True, "messages": msg})
    one_chunk = json.dumps({"model": "bench-one-chunk", "stream": True, "messages": msg})
    mock, hello = free_port(), free_port()
    b.start([*pin(1), py, "-m", "tests.bench.mock_upstream", str(mock), str(args.chunks),
             "--paced-events", str(args.paced_events), "--rate", str(args.paced_rate)])
    b.start([*pin(0), py, "-m", "tests.bench.hello", str(hello)])
    wait_ready(f"http://127.0.0.1:{hello}/", 10)
    wait_listening(mock)
    direct = f"http://127.0.0.1:{mock}/v1/chat/completions"
    for c in conc:
        b.run("direct", direct, chat, c)
    for c in conc:
        b.run("direct stream", direct, stream, c, stream=True)
    b.paced("direct paced", direct, {}, None)
    for c in sorted({*conc, 50}):
        b.run("hello-world ceiling", f"http://127.0.0.1:{hello}/", "{}", c)
    gw, b.facts["cold_start_s"] = b.sidegate(mock)
    b.suite(gw, conc, chat, stream)
    for c in conc:
        b.run("sidegate stream one-chunk", gw.url, one_chunk, c, stream=True)
    _guarded(b, gw, conc)
    b.facts["peak_rss_mb"] = procstat.rss_peak_mb(gw.proc.pid)
    b.stop(gw.proc)
    gov, _ = b.sidegate(mock, _GOVERNED.format(db=b.tmpdir / "gw.db"))
    for c in conc:
        b.run("sidegate +keys/limits/spend", gov.url, chat, c)
    b.facts["peak_rss_governed_mb"] = procstat.rss_peak_mb(gov.proc.pid)
    b.stop(gov.proc)
    sink = free_port()
    b.start([*pin(1), py, "-m", "tests.bench.otlp_sink", str(sink)])
    traced, _ = b.sidegate(mock, _TRACED.format(sink=sink))
    for c in conc:
        b.run("sidegate +tracing 100%", traced.url, chat, c)
    for c in conc:
        b.run("sidegate stream +tracing 100%", traced.url, stream, c, stream=True)
    b.facts["peak_rss_traced_mb"] = procstat.rss_peak_mb(traced.proc.pid)
    b.stop(traced.proc)
    _cache(b, mock, conc)
    if not (args.quick or args.no_workers):
        # Two workers may use both cores, which wrk and the mock share: on a 2-core machine this
        # measures contention as much as scaling (reported as such).
        two, _ = b.sidegate(mock, workers=2, cores="0,1")
        b.run("sidegate 2 workers", two.url, chat, 50)
        b.facts["peak_rss_2_workers_mb"] = procstat.rss_peak_mb(two.proc.pid)
        b.stop(two.proc)
    for other in args.vs:
        port = free_port()
        if other == "litellm":
            proc = litellm.start(port, mock, b.tmpdir, pin(0))
            gw = Gateway("litellm", f"http://127.0.0.1:{port}/v1/chat/completions",
                         f"http://127.0.0.1:{port}/health/liveliness", proc)
        else:
            proc = portkey.start(port, pin(0))
            gw = Gateway("portkey", f"http://127.0.0.1:{port}/v1/chat/completions", f"http://127.0.0.1:{port}/",
                         proc, portkey.headers(mock))
        b.procs.append(proc)
        b.facts[f"{other}_cold_start_s"] = wait_ready(gw.health, 180)
        b.suite(gw, conc, chat, stream)
        b.stop(proc)


def _guarded(b: Bench, gw: Gateway, conc: list[int]) -> None:
    """A regex guardrail's cost on the hot path: the secret presets (pre_call) on a 4 KB prompt
    against the same prompt unguarded, and a during_call pattern on the stream (vs `sidegate stream`)."""
    prompt = [{"role": "user", "content": ("Summarise this paragraph about deployments and keys. " * 80)[:4096]}]
    for c in conc:
        b.run("sidegate 4KB prompt", gw.url, json.dumps({"model": "bench", "messages": prompt}), c)
    for c in conc:
        b.run("sidegate 4KB +regex guardrail", gw.url, json.dumps({"model": "bench-guarded", "messages": prompt}), c)
    guarded = json.dumps({"model": "bench-guarded-stream", "stream": True, "messages": [{"role": "user",
                                                                                        "content": "hi"}]})
    for c in conc:
        b.run("sidegate stream +during_call regex", gw.url, guarded, c, stream=True)


def _cache(b: Bench, mock: int, conc: list[int]) -> None:
    """The response cache's cost: every request a new body (all misses) without and with the cache
    (memory backend), then one body over and over (all hits after the first)."""
    varied = json.dumps({"model": "bench", "temperature": 0, "messages": [{"role": "user", "content": "@VARY@"}]})
    same = json.dumps({"model": "bench", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]})
    off, _ = b.sidegate(mock)
    for c in conc:
        b.run("sidegate cache off", off.url, varied, c, vary=f"off-{c}")
    b.stop(off.proc)
    on, _ = b.sidegate(mock, _CACHED)
    for c in conc:
        b.run("sidegate cache miss", on.url, varied, c, vary=f"miss-{c}")
    for c in conc:
        b.run("sidegate cache hit", on.url, same, c)
    b.facts["peak_rss_cache_mb"] = procstat.rss_peak_mb(on.proc.pid)
    b.stop(on.proc)


if __name__ == "__main__":
    sys.exit(main())
