"""Choosing where `sidegate serve` listens: `--listen`/`--host`/`--port`, the SIDEGATE_LISTEN,
SIDEGATE_HOST and SIDEGATE_PORT environment variables, and `${PORT}` references in the spec's
`listen` (flag over environment over spec); and the hint for a plan passed without `--plan`."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.test_serve_cli import ROOT, serving

PORT_SPEC = """version: 1
server: {listen: "127.0.0.1:${PORT}"}
providers: {fake: {type: mock}}
models: {demo: {targets: [{provider: fake, model: demo}]}}
"""


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _live(listen: object) -> str:
    with urllib.request.urlopen(f"http://{listen}/health/live", timeout=10) as answer:
        return answer.read().decode()


CLEAN = {"SIDEGATE_LISTEN": None, "SIDEGATE_HOST": None, "SIDEGATE_PORT": None, "PORT": None}


def test_port_flag_overrides_the_spec() -> None:
    with environment(**CLEAN), serving("examples/quickstart.yaml", "--port", "0") as (_, started):
        listen = str(started[0]["listen"])
        assert listen.startswith("127.0.0.1:") and listen != "127.0.0.1:4000"
        assert _live(listen) == '{"status":"ok"}'


def test_environment_overrides_the_spec_and_flags_override_the_environment() -> None:
    with environment(**{**CLEAN, "SIDEGATE_HOST": "127.0.0.3", "SIDEGATE_PORT": "0"}):
        with serving("examples/quickstart.yaml") as (_, started):
            assert str(started[0]["listen"]).startswith("127.0.0.3:"), "both parts from the environment"
            assert _live(started[0]["listen"]) == '{"status":"ok"}'
        with serving("examples/quickstart.yaml", "--listen", "127.0.0.1:0") as (_, started):
            assert str(started[0]["listen"]).startswith("127.0.0.1:"), "the flag wins over SIDEGATE_HOST"
    with environment(**{**CLEAN, "SIDEGATE_LISTEN": "127.0.0.4:0"}), \
            serving("examples/quickstart.yaml", "--host", "127.0.0.5") as (_, started):
        assert str(started[0]["listen"]).startswith("127.0.0.5:"), "--host over the environment's host"


def test_a_port_reference_in_the_spec_is_read_at_start(tmp_path: Path) -> None:
    spec = tmp_path / "port.yaml"
    spec.write_text(PORT_SPEC)
    lint = subprocess.run([sys.executable, "-m", "sidegate.compiler.cli", "lint", "--strict", str(spec)], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    compiled = subprocess.run([sys.executable, "-m", "sidegate.compiler.cli", "compile", str(spec)], cwd=ROOT,
                              capture_output=True, text=True, check=True, env={**os.environ, "PORT": "4999"})
    assert "4999" not in compiled.stdout, "the plan keeps the reference, not the compiling machine's value"
    with environment(**{**CLEAN, "PORT": "0"}), serving(str(spec)) as (_, started):
        assert _live(started[0]["listen"]) == '{"status":"ok"}'
    with environment(**CLEAN):
        missing = subprocess.run([sys.executable, "-m", "sidegate.compiler.cli", "serve", str(spec)], cwd=ROOT,
                                 capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 1 and "environment variable PORT is not set" in missing.stderr


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--port", "99999"], {}, "--port: '99999' is not a port"),
    (["--listen", "nowhere"], {}, "--listen: 'nowhere' is not host:port"),
    ([], {"SIDEGATE_PORT": "http"}, "SIDEGATE_PORT: 'http' is not a port"),
])
def test_a_malformed_override_names_where_it_came_from(args: list[str], env: dict[str, str], message: str) -> None:
    with environment(**{**CLEAN, **env}):
        done = subprocess.run([sys.executable, "-m", "sidegate.compiler.cli", "serve", "examples/quickstart.yaml", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and message in done.stderr


def test_a_plan_given_as_a_spec_gets_a_hint(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    subprocess.run([sys.executable, "-m", "sidegate.compiler.cli", "compile", "examples/quickstart.yaml", "-o", str(plan)],
                   cwd=ROOT, check=True)
    done = subprocess.run([sys.executable, "-m", "sidegate.compiler.cli", "serve", str(plan)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 64 and f"serve it with --plan {plan}" in done.stderr
