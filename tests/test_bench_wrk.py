"""The benchmark's wrk report reader: percentiles from the distribution block, never from the
thread-stats line (whose `+/- Stdev` column also ends in a percentage); its Lua script; the Portkey
setup's patch; the /proc readings."""

from __future__ import annotations

import json
import os

import pytest

from tests.bench import portkey, procstat
from tests.bench.wrk import parse, script, to_ms

OUT = """Running 1s test @ http://127.0.0.1:18999/v1/chat/completions
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   666.41us    1.45ms  10.19ms   87.80%
    Req/Sec    34.12k    19.01k   60.51k    50.00%
  Latency Distribution
     50%   34.00us{TRAILING}
     75%  256.00us
     90%    2.60ms
     99%    1.20s
  33863 requests in 1.00s, 11.79MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  33856.16
Transfer/sec:     11.79MB
""".replace("{TRAILING}", " ")  # wrk pads some values with a blank


def test_reads_the_distribution_block() -> None:
    r = parse(OUT)
    assert r == {"rps": 33856.16, "p50_ms": 0.034, "p99_ms": 1200.0, "errors": 6}


def test_units_and_garbage() -> None:
    assert [to_ms(v) for v in ("523.00us", "1.02ms", "1.50s", "2.00m")] == [0.523, 1.02, 1500.0, 120000.0]
    with pytest.raises(ValueError):
        to_ms("Req/Sec")
    with pytest.raises(ValueError):
        parse("unable to connect to 127.0.0.1:1 Connection refused")


def test_streams_without_done_are_errors_counted_once() -> None:
    out = OUT.replace("Requests/sec:", "Streams without [DONE]: 10\nRequests/sec:")
    assert parse(out)["errors"] == 3 + 3 + (10 - 3)  # socket errors, non-2xx, the other bodies without [DONE]


def test_the_script_sends_extra_headers_and_checks_streams() -> None:
    lua = script('{"stream":true}', headers={"x-portkey-provider": "openai"}, check_done=True)
    assert 'wrk.headers["x-portkey-provider"] = "openai"' in lua
    assert "function response(status, headers, body)" in lua and '"[DONE]", 1, true' in lua
    assert "function response" not in script("{}")


def test_portkey_patch_adds_the_await_once() -> None:
    line = "    try {\n      return responseViaResponseObject(res, outgoing, options);\n    } catch (e) {"
    patched, n = portkey.patch_text(line)
    assert n == 1 and "return await responseViaResponseObject(res, outgoing, options);" in patched
    assert portkey.patch_text(patched) == (patched, 0)
    pkg = json.loads(portkey.package_json())
    assert pkg["overrides"] == {"@hono/node-server": "1.13.5"}
    assert pkg["dependencies"]["@portkey-ai/gateway"].startswith("~1.15")


def test_procstat_reads_this_process() -> None:
    assert procstat.cpu_seconds(os.getpid()) > 0
    assert procstat.rss_peak_mb(os.getpid()) >= procstat.rss_now_mb(os.getpid()) > 1
    assert procstat.cpu_seconds(2**22 + 12345) == 0.0
