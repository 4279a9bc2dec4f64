"""`sidegate serve` as a user runs it: a real process on the quickstart spec, the official `openai`
SDK as the client; `--plan` mode; `--workers 2`; SIGHUP reload of a spec that is then broken."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = (ROOT / "examples" / "quickstart.yaml").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spec(tmp_path: Path, text: str = QUICKSTART) -> tuple[Path, int]:
    port = _free_port()
    spec = tmp_path / "sidegate.yaml"
    spec.write_text(text.replace("127.0.0.1:4000", f"127.0.0.1:{port}").replace("sqlite:///./sidegate.db",
                                                                                   f"sqlite:///{tmp_path}/s.db"))
    return spec, port


@contextmanager
def serving(*args: str, starts: int = 1) -> Iterator[tuple[subprocess.Popen[str], list[dict[str, object]]]]:
    proc = subprocess.Popen([sys.executable, "-m", "sidegate.compiler.cli", "serve", *args], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    started: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + 20
        while len(started) < starts and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if line.startswith("{") and json.loads(line).get("event") == "started":
                started.append(json.loads(line))
        assert len(started) == starts, "sidegate did not start"
        yield proc, started
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_quickstart_with_the_openai_sdk(tmp_path: Path) -> None:
    spec, port = _spec(tmp_path)
    with serving(str(spec)) as (proc, started):
        assert str(started[0]["plan"]).startswith("sha256:")
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=20)
        chat = c.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
        text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="echo", stream=True, messages=[{"role": "user", "content": "stream me back"}]) if ch.choices)
        tool = c.chat.completions.create(model="default", messages=[{"role": "user", "content": "Oslo"}], tools=[
            {"type": "function", "function": {"name": "weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}}}}}])
        floats = c.embeddings.create(model="embed", input="hello", encoding_format="float")
        b64 = c.embeddings.create(model="embed", input="hello")
        models = sorted(m.id for m in c.models.list())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert chat.choices[0].message.content == "Hello from sidegate."
    assert text == "stream me back"
    assert tool.choices[0].message.tool_calls[0].function.arguments == '{"city":"Oslo"}'  # type: ignore[index]
    assert floats.data[0].embedding == b64.data[0].embedding and len(floats.data[0].embedding) == 8
    assert models == ["default", "demo", "echo", "embed"]


def test_serve_plan_json_without_the_compiler(tmp_path: Path) -> None:
    spec, port = _spec(tmp_path)
    plan_file = tmp_path / "plan.json"
    subprocess.run([sys.executable, "-m", "sidegate.compiler.cli", "compile", str(spec), "-o", str(plan_file)], cwd=ROOT,
                   check=True)
    probe = ("import sys; path = sys.argv[1];"
             "import sidegate.compiler.cli, atexit;"
             "atexit.register(lambda: print('HEAVY', sorted(m for m in ('ruamel.yaml', 'jsonschema', 'sidegate.compiler.pipeline')"
             " if m in sys.modules), file=sys.stderr));"
             "sys.exit(sidegate.compiler.cli.main(['serve', '--plan', path]))")
    proc = subprocess.Popen([sys.executable, "-c", probe, str(plan_file)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    assert json.loads(proc.stderr.readline())["event"] == "started"
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=20)
    assert c.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}]).choices[0].message.content
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    rest = proc.stderr.read()
    assert "HEAVY []" in rest, rest


def test_two_workers_share_the_port(tmp_path: Path) -> None:
    spec, port = _spec(tmp_path)
    with serving(str(spec), "--workers", "2", starts=2) as (proc, started):
        assert len({s["pid"] for s in started}) == 2
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=20)
        for _ in range(10):
            assert c.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}]).choices
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_sighup_reload_and_broken_spec_keeps_serving(tmp_path: Path) -> None:
    spec, port = _spec(tmp_path)
    with serving(str(spec)) as (proc, _):
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=20)
        spec.write_text(spec.read_text().replace("Hello from sidegate.", "Reloaded."))
        proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            reply = c.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
            if reply.choices[0].message.content == "Reloaded.":
                break
            time.sleep(0.05)
        assert reply.choices[0].message.content == "Reloaded."
        spec.write_text(spec.read_text().replace("targets:", "targetz:", 1))
        proc.send_signal(signal.SIGHUP)
        assert proc.stderr is not None
        failure = ""
        while "reload_failed" not in failure:
            failure = proc.stderr.readline()
            assert failure or proc.poll() is None, "sidegate exited instead of keeping the last plan"
        assert "targetz" in failure
        reply = c.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content == "Reloaded."
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=15) == 0
