"""The bench's report: the paced rows as they come, then added latency, the ratios sidegate/each other
gateway, the issue's targets (met, missed, n/a, or ERRORS when a scenario they compare had errors,
which makes the comparison meaningless), and the JSON file in bench-results/."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench.wrk import pin

Result = dict[str, Any]
Target = tuple[str, str, bool | None]  # what, measured, met (None: no data; see `errors`)
ERRORS = "ERRORS"
RSS_MB = 100.0
_NAMES = {"portkey": "Portkey", "litellm": "LiteLLM"}


def paced_line(r: Result) -> None:
    """One paced or cut-streams row, printed as it is measured."""
    added = f" (added {r['added_p50_ms']:.2f} / {r['added_p99_ms']:.2f})" if "added_p50_ms" in r else ""
    cpu = f"  CPU {r['cpu_us_per_event']:.0f} us/event" if r.get("cpu_us_per_event") else ""
    rss = f"  RSS peak {r['rss_peak_mb']:.0f} MB" if "rss_peak_mb" in r else ""
    flag = "  <-- ERRORS " + "; ".join(r["error_samples"][:2]) if r["errors"] else ""
    print(f"{r['scenario']:<30} n={r['c']:<4} {r['completed']} done {r['cut']} cut  {r['events_per_s']:.0f} events/s"
          f"  delay p50/p99 {r['delay_p50_ms']:.2f} / {r['delay_p99_ms']:.2f} ms{added}"
          f"  first event p99 {r['first_event_p99_ms']:.0f} ms{cpu}{rss}  errors {r['errors']}{flag}", flush=True)


class _Rows:
    def __init__(self, results: list[Result]) -> None:
        self.results = results

    def find(self, name: str, c: int | None = None) -> Result | None:
        return next((r for r in self.results if r["scenario"] == name and (c is None or r["c"] == c)), None)

    def get(self, name: str, key: str, c: int | None = None) -> float | None:
        r = self.find(name, c)
        return None if r is None or r.get(key) is None else float(r[key])

    def errors(self, *names: tuple[str, int | None]) -> str:
        """'' or which of these scenarios had errors."""
        bad = [f"{n}{'' if c is None else f' c={c}'}: {r['errors']:.0f} errors"
               for n, c in names if (r := self.find(n, c)) and r["errors"]]
        return "; ".join(bad)


def _at_least(floor: float) -> Callable[[float], bool]:
    return lambda v: v >= floor


def targets(results: list[Result], facts: dict[str, float]) -> list[Target]:
    """The issue's targets as (what, measured, met); a comparison with an errored scenario: ERRORS."""
    rows, out = _Rows(results), list[Target]()

    def add(what: str, value: float | None, fmt: Callable[[float], str], ok: Callable[[float], bool],
            used: tuple[tuple[str, int | None], ...] = ()) -> None:
        bad = rows.errors(*used)
        if bad:
            out.append((what, f"{ERRORS}: {bad}", None))
        else:
            out.append((what, "n/a" if value is None else fmt(value), None if value is None else ok(value)))

    def ratio(a: str, b: str, c: int) -> float | None:
        x, y = rows.get(a, "rps", c), rows.get(b, "rps", c)
        return x / y if x and y else None

    x = "{:.2f}x".format
    for label, ours, need in (("stream", "sidegate stream", (1.2, 20.0)), ("non-stream", "sidegate", (1.3, 10.0))):
        for other, floor in zip(("portkey", "litellm"), need, strict=True):
            theirs = other + ours[len("sidegate"):]
            add(f"{label} c=50 >= {floor:g}x {_NAMES[other]}", ratio(ours, theirs, 50), x,
                _at_least(floor), ((ours, 50), (theirs, 50)))
    add("non-stream c=50 >= 75% of hello world", ratio("sidegate", "hello-world ceiling", 50), "{:.0%}".format,
        lambda v: v >= 0.75, (("sidegate", 50),))
    h10, h200 = rows.get("hello-world ceiling", "rps", 10), rows.get("hello-world ceiling", "rps", 200)
    own = f" (hello world's own: {h200 / h10:.0%})" if h10 and h200 else ""
    s10, s200 = rows.get("sidegate", "rps", 10), rows.get("sidegate", "rps", 200)
    add("c=200 throughput >= 90% of c=10", s200 / s10 if s10 and s200 else None, lambda v: f"{v:.0%}{own}",
        lambda v: v >= 0.9, (("sidegate", 10), ("sidegate", 200)))
    add("p99 at c=200 < 1 s", rows.get("sidegate", "p99_ms", 200), "{:.0f} ms".format, lambda v: v < 1000,
        (("sidegate", 200),))
    one, direct = rows.get("sidegate", "p50_ms", 1), rows.get("direct", "p50_ms", 1)
    add("added latency c=1 p50 <= 0.6 ms", one - direct if one is not None and direct is not None else None,
        "{:.2f} ms".format, lambda v: v <= 0.6, (("sidegate", 1), ("direct", 1)))
    paced = rows.find("sidegate paced")
    n = f"{paced['c']} " if paced else ""
    add(f"{n}paced streams: added inter-event delay p99 <= 5 ms", rows.get("sidegate paced", "added_p99_ms"),
        "{:.2f} ms".format, lambda v: v <= 5, (("direct paced", None), ("sidegate paced", None)))
    add(f"{n}paced streams: no errors", rows.get("sidegate paced", "errors"), "{:.0f} errors".format,
        lambda v: v == 0)
    add(f"{n}paced streams: RSS <= 100 MB", rows.get("sidegate paced", "rss_peak_mb"), "{:.0f} MB".format,
        lambda v: v <= RSS_MB)
    peaks = [v for k, v in facts.items() if k.startswith(("peak_rss", "sidegate_peak_rss"))]
    add("peak RSS <= 100 MB per worker, every scenario", max(peaks) if peaks else None, "{:.0f} MB".format,
        lambda v: v <= RSS_MB)
    add("RSS after cut streams <= 100 MB", rows.get("sidegate cut", "rss_peak_mb"), "{:.0f} MB".format,
        lambda v: v <= RSS_MB, (("sidegate cut", None),))
    add("cold start <= 1 s", facts.get("cold_start_s"), lambda v: f"{v * 1000:.0f} ms", lambda v: v <= 1.0)
    return out


def earlier(results: list[Result]) -> list[Target]:
    """Targets of earlier issues, still printed so a regression shows."""
    rows, out = _Rows(results), list[Target]()
    gov, plain = rows.get("sidegate +keys/limits/spend", "rps", 50), rows.get("sidegate", "rps", 50)
    v = 1 - gov / plain if gov and plain else None
    out.append(("keys+limits+spend cost <= 10%", "n/a" if v is None else f"{v:.1%}", None if v is None else v <= 0.1))
    for label, guarded, base in (("regex guardrail cost (pre_call, 4 KB prompt)", "sidegate 4KB +regex guardrail",
                                  "sidegate 4KB prompt"),
                                 ("regex guardrail cost (during_call, stream)", "sidegate stream +during_call regex",
                                  "sidegate stream")):
        g, p = rows.get(guarded, "rps", 50), rows.get(base, "rps", 50)
        v = 1 - g / p if g and p else None
        out.append((f"{label}, c=50", "n/a" if v is None else f"{v:.1%}", None))
    w2 = rows.get("sidegate 2 workers", "rps", 50)
    v = w2 / plain if w2 and plain else None
    out.append(("2 workers >= 1.8x one (needs 2 free cores)", "n/a" if v is None else f"{v:.2f}x",
                None if v is None else v >= 1.8))
    return out


def ratios(results: list[Result], facts: dict[str, float], other: str) -> list[str]:
    """sidegate/`other` for each scenario both ran (higher is better for sidegate, except RSS)."""
    rows, out = _Rows(results), []
    for r in results:
        if not r["scenario"].startswith(other) or "rps" not in r:
            continue
        ours = rows.find("sidegate" + r["scenario"][len(other):], r["c"])
        if ours and r["rps"]:
            bad = " (ERRORS: invalid)" if ours["errors"] or r["errors"] else ""
            out.append(f"{r['scenario'][len(other):].strip() or 'non-stream'} c={r['c']}: "
                       f"{ours['rps'] / r['rps']:.2f}x{bad}")
    ours_p, theirs_p = rows.find("sidegate paced"), rows.find(f"{other} paced")
    if ours_p and theirs_p and ours_p.get("cpu_us_per_event") and theirs_p.get("cpu_us_per_event"):
        bad = " (ERRORS: invalid)" if ours_p["errors"] or theirs_p["errors"] else ""
        out.append(f"paced CPU per event: {theirs_p['cpu_us_per_event'] / ours_p['cpu_us_per_event']:.2f}x "
                   f"less ({ours_p['cpu_us_per_event']:.0f} vs {theirs_p['cpu_us_per_event']:.0f} us){bad}")
    a, b = facts.get("sidegate_peak_rss_mb"), facts.get(f"{other}_peak_rss_mb")
    if a and b:
        out.append(f"peak RSS: {a:.0f} vs {b:.0f} MB")
    return out


def report(results: list[Result], facts: dict[str, float], conc: list[int], args: dict[str, Any], out: Path) -> None:
    direct = {r["c"]: r for r in results if r["scenario"] == "direct"}
    print()
    for r in results:
        if r["c"] in direct and r["scenario"] in ("sidegate", "portkey", "litellm"):
            d = direct[r["c"]]
            print(f"added latency {r['scenario']} c={r['c']}: p50 {r['p50_ms'] - d['p50_ms']:.2f} ms, "
                  f"p99 {r['p99_ms'] - d['p99_ms']:.2f} ms")
    print(", ".join(f"{k} {v:.3g}" for k, v in facts.items()))
    for other in ("portkey", "litellm"):
        lines = ratios(results, facts, other)
        if lines:
            print(f"\nsidegate/{other}: " + "; ".join(lines))
    found, old = targets(results, facts), earlier(results)
    for title, rows in (("targets (issue 20)", found), ("earlier targets", old)):
        print(f"\n{title}:")
        for what, measured, met in rows:
            mark = ERRORS if measured.startswith(ERRORS) else "n/a" if met is None else "met" if met else "MISSED"
            print(f"  {mark:<6} {what:<52} {measured}")
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"bench-{stamp}.json").write_text(json.dumps(
        {"date": stamp, "cpus": os.cpu_count(), "pinned": bool(pin(0)), "args": args, "concurrency": conc,
         **facts, "results": results,
         "targets": [{"what": w, "measured": m, "met": ok} for w, m, ok in [*found, *old]]}, indent=2))
    print(f"\nresults: {out / f'bench-{stamp}.json'}")
