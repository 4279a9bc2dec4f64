"""Many concurrent paced streams against a gateway (or the mock directly, the baseline): the load an
LLM gateway holds in production, long-lived streams each trickling events.

Each stream is one connection, one POST asking for a paced stream (the mock's `paced` model); the
client reads the raw bytes (no dechunking: the markers and `[DONE]` are found in the raw stream)
and, for every `tok@<ns>` marker the mock embedded, records receive time minus send time: the
event's relay delay (CLOCK_MONOTONIC is system-wide, so the mock's clock and ours agree). Against
the mock directly that is the baseline; the gateway's added delay is the difference.

Streams start staggered over `--ramp` seconds (phases spread as real streams' are, and no connect
storm on the gateway's backlog). With `--cut-after K` each client closes its connection after K
events: the "clients that cut streams midway" scenario. A raw asyncio protocol per stream keeps the
client cheap: 1,000 streams from one core.

With `--pid` it also reads the gateway's CPU seconds (utime+stime) before and after and its peak RSS.
Prints one JSON object. Usage:
  python -m tests.bench.paced URL [--streams 1000] [--model bench-paced] [--header 'name: value']...
                                  [--cut-after K] [--ramp 1] [--timeout 60] [--pid PID]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.bench import procstat

MARK = b"tok@"
DONE = b"[DONE]"
_LAST_CHUNK = b"\r\n0\r\n\r\n"
_TAIL = 32  # bytes kept between reads, so a marker or [DONE] split across two reads is still found


@dataclass
class Tally:
    """What every stream of one run adds up to."""

    delays_ns: list[int] = field(default_factory=list)
    first_ns: list[int] = field(default_factory=list)
    """Per stream: connect start to the first event (what queueing at the gateway's door adds)."""
    events: int = 0
    completed: int = 0
    cut: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, why: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(why)


class _Stream(asyncio.Protocol):
    def __init__(self, request: bytes, tally: Tally, cut_after: int, done: asyncio.Future[None]) -> None:
        self.t0 = time.monotonic_ns()
        self.request = request
        self.tally = tally
        self.cut_after = cut_after
        self.done = done
        self.head = b""
        self.status: int | None = None
        self.tail = b""
        self.seen = 0
        self.saw_done = False
        self.finished = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if self.status is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            line = self.head[: self.head.find(b"\r\n")].split()
            self.status = int(line[1]) if len(line) > 1 and line[1].isdigit() else 0
            data, self.head = self.head[end + 4 :], b""
            if self.status != 200:
                self._finish(f"HTTP {self.status}")
                return
        buf = self.tail + data
        consumed = 0
        pos = buf.find(MARK)
        while pos >= 0:
            start = stop = pos + len(MARK)
            while stop < len(buf) and 48 <= buf[stop] <= 57:
                stop += 1
            if stop == len(buf):  # the digits may go on in the next read
                break
            if stop > start:
                self.tally.delays_ns.append(now - int(buf[start:stop]))
                if not self.seen:
                    self.tally.first_ns.append(now - self.t0)
                self.seen += 1
            consumed = stop
            pos = buf.find(MARK, stop)
        self.tally.events += buf.count(b"data:", max(0, len(self.tail) - 4))
        if self.cut_after and self.seen >= self.cut_after:
            self.tally.cut += 1
            self._finish(None)
            return
        if not self.saw_done and DONE in buf:
            self.saw_done = True
        if self.saw_done:
            if _LAST_CHUNK in buf:  # the body's end: close only once the answer is whole
                self._complete()
                return
            self.tail = buf[-_TAIL:]
        else:
            self.tail = buf[pos:] if pos >= 0 else buf[max(consumed, len(buf) - _TAIL) :]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.saw_done and not self.finished:  # an answer framed by the connection's close
            self._complete()
        if not self.finished:
            self._finish(f"closed after {self.seen} events" + (f": {exc}" if exc else ""))

    def _complete(self) -> None:
        self.tally.completed += 1
        self._finish(None)

    def _finish(self, error: str | None) -> None:
        if self.finished:
            return
        self.finished = True
        if error is not None:
            self.tally.error(error)
        self.transport.close()
        if not self.done.done():
            self.done.set_result(None)


def build_request(url: str, model: str, headers: dict[str, str]) -> tuple[str, int, bytes]:
    """(host, port, the raw POST) for a paced stream request to `url`."""
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    body = json.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    lines = [f"POST {u.path or '/'} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Accept: text/event-stream",
             *(f"{k}: {v}" for k, v in headers.items())]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _one(host: str, port: int, request: bytes, tally: Tally, cut_after: int, delay: float) -> None:
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    try:
        await loop.create_connection(lambda: _Stream(request, tally, cut_after, done), host, port)
    except OSError as e:
        tally.error(f"connect: {e}")
        return
    await done


async def run(url: str, streams: int, *, model: str = "bench-paced", headers: dict[str, str] | None = None,
              cut_after: int = 0, ramp: float = 1.0, deadline: float = 60.0) -> tuple[Tally, float]:
    """Run the streams; (their tally, wall seconds). Streams unfinished at `deadline` s count as errors."""
    host, port, request = build_request(url, model, headers or {})
    tally = Tally()
    t0 = time.monotonic()
    tasks = [asyncio.create_task(_one(host, port, request, tally, cut_after, ramp * i / max(streams, 1)))
             for i in range(streams)]
    _, pending = await asyncio.wait(tasks, timeout=deadline)
    for t in pending:
        t.cancel()
        tally.error(f"unfinished after {deadline:g} s")
    await asyncio.gather(*pending, return_exceptions=True)
    return tally, time.monotonic() - t0


def percentile(values: list[int], q: float) -> float:
    """The q-quantile (0..1) of `values` by nearest rank, in the values' unit (0 when empty)."""
    if not values:
        return 0.0
    s = sorted(values)
    return float(s[min(len(s) - 1, max(0, round(q * len(s)) - 1))])


def summary(tally: Tally, wall: float, streams: int) -> dict[str, Any]:
    d = tally.delays_ns
    return {"streams": streams, "completed": tally.completed, "cut": tally.cut, "errors": tally.errors,
            "error_samples": tally.error_samples, "events": tally.events, "paced_events": len(d),
            "wall_s": round(wall, 3), "events_per_s": round(tally.events / wall, 1) if wall else 0.0,
            "delay_p50_ms": percentile(d, 0.50) / 1e6, "delay_p99_ms": percentile(d, 0.99) / 1e6,
            "delay_max_ms": max(d, default=0) / 1e6,
            "first_event_p50_ms": percentile(tally.first_ns, 0.50) / 1e6,
            "first_event_p99_ms": percentile(tally.first_ns, 0.99) / 1e6}


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--model", default="bench-paced")
    ap.add_argument("--header", action="append", default=[], help="'name: value', repeatable")
    ap.add_argument("--cut-after", type=int, default=0, help="close each stream after K events")
    ap.add_argument("--ramp", type=float, default=1.0, help="seconds over which the streams start")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--pid", type=int, help="the gateway's pid: report its CPU per event and peak RSS")
    a = ap.parse_args()
    raise_fd_limit()
    headers = dict(h.split(":", 1) for h in a.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    cpu0 = procstat.cpu_seconds(a.pid) if a.pid else 0.0
    tally, wall = asyncio.run(run(a.url, a.streams, model=a.model, headers=headers, cut_after=a.cut_after,
                                  ramp=a.ramp, deadline=a.timeout))
    out = summary(tally, wall, a.streams)
    if a.pid:
        cpu = procstat.cpu_seconds(a.pid) - cpu0
        out["gateway_cpu_s"] = round(cpu, 3)
        out["cpu_us_per_event"] = round(cpu / tally.events * 1e6, 1) if tally.events else None
        out["rss_peak_mb"] = round(procstat.rss_peak_mb(a.pid), 1)
        out["rss_now_mb"] = round(procstat.rss_now_mb(a.pid), 1)
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
