"""Process-level behaviour: start-up, readiness, hot reload (good and broken plans), graceful drain
on SIGTERM with an open stream, metrics and request logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import trio

from sidegate.runtime.plan.canonical import dumps
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import group, mock_provider, plan, quick, target

ROOT = Path(__file__).resolve().parents[1]


async def test_ready_live_and_metrics() -> None:
    with trio.fail_after(10):
        async with open_gateway(quick()) as gw:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as c:
                live = await c.get("/health/live")
                ready = await c.get("/health/ready")
                await c.post("/v1/chat/completions", json={"model": "demo", "messages": [{"role": "user", "content": "x"}]})
                await c.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
                metrics = (await c.get("/metrics")).text
    assert live.status_code == 200
    assert ready.status_code == 200 and ready.json()["plan"].startswith("sha256:")
    assert 'sidegate_requests_total{deployment="fake/demo",model="demo",status="200"} 1.0' in metrics
    assert 'sidegate_requests_total{deployment="",model="unknown",status="404"} 1.0' in metrics
    assert "sidegate_request_duration_seconds_bucket" in metrics
    assert 'sidegate_requests_in_flight{model="demo"} 0.0' in metrics


async def test_litellm_probe_routes_answer_like_sidegate_s() -> None:
    """A deployment migrated from LiteLLM keeps its probes: /health/liveliness and /health/liveness
    answer as /health/live, /health/readiness and /health as /health/ready."""
    with trio.fail_after(10):
        async with open_gateway(quick()) as gw:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as c:
                answers = {path: await c.get(path) for path in (
                    "/health/live", "/health/liveliness", "/health/liveness",
                    "/health/ready", "/health/readiness", "/health")}
                missing = await c.get("/health/nope")
    assert {p: r.status_code for p, r in answers.items()} == dict.fromkeys(answers, 200)
    assert answers["/health/liveliness"].json() == answers["/health/live"].json()
    assert answers["/health"].json() == answers["/health/readiness"].json() == answers["/health/ready"].json()
    assert missing.status_code == 404


async def test_reload_swaps_plan_and_broken_plan_keeps_serving() -> None:
    first = quick()
    second = plan([mock_provider("fake", text="second plan")], [group("demo", target("fake", "demo"))])
    plans: list[object] = [second, ValueError("spec.yaml:3:1: error[schema.type] broken")]

    def load() -> object:
        nxt = plans.pop(0)
        if isinstance(nxt, Exception):
            raise nxt
        return nxt

    with trio.fail_after(10):
        async with open_gateway(first, load_plan=load) as gw:  # type: ignore[arg-type]
            c = openai.AsyncOpenAI(base_url=base_url(gw), api_key="x", max_retries=0)
            before = await c.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
            await gw.reload().wait()
            after = await c.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
            await gw.reload().wait()
            still = await c.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
            metrics = gw.app.metrics.render().decode()
    assert before.choices[0].message.content == "Hello from sidegate."
    assert after.choices[0].message.content == "second plan"
    assert still.choices[0].message.content == "second plan"
    assert "sidegate_reload_failures_total 1.0" in metrics and "sidegate_reloads_total 1.0" in metrics


async def test_spec_file_change_triggers_reload(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text("1")
    second = plan([mock_provider("fake", text="changed")], [group("demo", target("fake", "demo"))])
    with trio.fail_after(10):
        async with open_gateway(quick(), load_plan=lambda: second, watch_path=str(spec), poll_interval=0.05) as gw:
            await trio.sleep(0.1)
            os.utime(spec, (time.time() + 5, time.time() + 5))
            for _ in range(100):
                if gw.app.runtime.plan is second:
                    break
                await trio.sleep(0.02)
            assert gw.app.runtime.plan is second


async def test_in_flight_request_finishes_on_the_plan_it_started_with() -> None:
    slow = plan([mock_provider("fake", text="a b c d e f", latency_per_token=0.05)], [group("demo", target("fake", "demo"))])
    second = plan([mock_provider("fake", text="new")], [group("demo", target("fake", "demo"))])
    with trio.fail_after(10):
        async with open_gateway(slow, load_plan=lambda: second) as gw:
            c = openai.AsyncOpenAI(base_url=base_url(gw), api_key="x", max_retries=0)
            stream = await c.chat.completions.create(model="demo", stream=True, messages=[{"role": "user", "content": "x"}])
            text = ""
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content == "a ":
                    await gw.reload().wait()
                text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
            fresh = await c.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
    assert text == "a b c d e f"
    assert fresh.choices[0].message.content == "new"


def _start(tmp_path: Path, p: object, *extra_env: tuple[str, str]) -> tuple[subprocess.Popen[str], int]:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(dumps(p))  # type: ignore[arg-type]
    code = ("import sys; from sidegate.runtime.plan.canonical import loads; from sidegate.runtime.server import run; "
            "p = loads(open(sys.argv[1]).read()); sys.exit(run(p, load_plan=lambda: p, watch_path=None, workers=1))")
    env = {**os.environ, **dict(extra_env)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(plan_file)], cwd=ROOT, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    started = json.loads(line)
    assert started["event"] == "started", line
    return proc, int(started["listen"].rsplit(":", 1)[1])


def test_sigterm_drains_an_open_stream_then_exits_zero(tmp_path: Path) -> None:
    words = " ".join(f"w{i}" for i in range(20))
    p = plan([mock_provider("fake", text=words, latency_per_token=0.05)], [group("demo", target("fake", "demo"))],
             drain=10.0)
    t0 = time.monotonic()
    proc, port = _start(tmp_path, p)
    assert time.monotonic() - t0 < 5
    try:
        with httpx.Client(timeout=10) as c, c.stream(
            "POST", f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "demo", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        ) as r:
            body = b""
            for chunk in r.iter_bytes():
                if not body:
                    proc.send_signal(signal.SIGTERM)
                body += chunk
        assert body.endswith(b"data: [DONE]\n\n")
        assert body.count(b'"content":"w') == 20
        assert proc.wait(timeout=10) == 0
        rest = proc.stderr.read()  # type: ignore[union-attr]
        assert '"event":"draining"' in rest and '"event":"stopped"' in rest
    finally:
        proc.kill()


def test_logs_one_json_line_per_request_without_secrets_or_prompts(tmp_path: Path) -> None:
    p = plan([mock_provider("fake")], [group("demo", target("fake", "demo"))])
    proc, port = _start(tmp_path, p)
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"authorization": "Bearer sk-client-secret"},
                       json={"model": "demo", "messages": [{"role": "user", "content": "my private prompt"}]})
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        lines = [json.loads(x) for x in proc.stderr.read().splitlines()]  # type: ignore[union-attr]
    finally:
        proc.kill()
    requests = [x for x in lines if x["event"] == "request"]
    assert len(requests) == 1
    rec = requests[0]
    assert rec["status"] == 200 and rec["deployment"] == "fake/demo" and rec["completion_tokens"] == 3
    assert {"request_id", "model", "latency_ms", "upstream_ms", "prompt_tokens"} <= set(rec)
    raw = json.dumps(lines)
    assert "sk-client-secret" not in raw and "my private prompt" not in raw


def test_logs_carry_bodies_only_when_the_spec_asks(tmp_path: Path) -> None:
    p = plan([mock_provider("fake")], [group("demo", target("fake", "demo"))], bodies=True)
    proc, port = _start(tmp_path, p)
    try:
        httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                   json={"model": "demo", "messages": [{"role": "user", "content": "my private prompt"}]})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        lines = [json.loads(x) for x in proc.stderr.read().splitlines()]  # type: ignore[union-attr]
    finally:
        proc.kill()
    (rec,) = [x for x in lines if x["event"] == "request"]
    assert "my private prompt" in rec["request_body"] and "Hello from sidegate." in rec["response_body"]


def test_missing_secret_fails_start_naming_only_the_reference(tmp_path: Path) -> None:
    from sidegate.runtime.plan import Family
    from tests.support.plans import openai_provider

    p = plan([openai_provider("up", "http://127.0.0.1:9/v1", "SIDEGATE_TEST_UNSET_KEY", family=Family.OPENAI)],
             [group("m", target("up", "x"))])
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(dumps(p))
    code = ("import sys; from sidegate.runtime.plan.canonical import loads; from sidegate.runtime.server import run; "
            "p = loads(open(sys.argv[1]).read()); sys.exit(run(p, load_plan=lambda: p, watch_path=None, workers=1))")
    out = subprocess.run([sys.executable, "-c", code, str(plan_file)], cwd=ROOT, capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 1
    assert "SIDEGATE_TEST_UNSET_KEY is not set" in out.stderr and "Traceback" not in out.stderr


async def test_the_health_listener_answers_only_the_health_routes() -> None:
    """`server.health_listen`: probes reach a second listener; the API is not served there."""
    from dataclasses import replace

    base = quick()
    p = replace(base, server=replace(base.server, health_host="127.0.0.1", health_port=0))
    with trio.fail_after(10):
        async with open_gateway(p) as gw:
            assert gw.app.health_port is not None and gw.app.health_port != gw.port
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.app.health_port}") as health, \
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as api:
                probes = [await health.get(path) for path in ("/health/live", "/health/ready", "/health/readiness")]
                refused = [await health.get("/v1/models"), await health.post(
                    "/v1/chat/completions", json={"model": "demo", "messages": [{"role": "user", "content": "x"}]})]
                served = await api.get("/v1/models")
    assert [r.status_code for r in probes] == [200, 200, 200]
    assert [r.status_code for r in refused] == [404, 404] and refused[0].json()["error"]["type"]
    assert served.status_code == 200
