"""The official MCP conformance suite (`@modelcontextprotocol/conformance`, pinned in
tests/support/mcp_conformance.py) against the reference upstream directly and through sidegate's
`/mcp/<server>`, in both protocol eras, with the upstream over Streamable HTTP and over stdio.

Through the gateway every scenario the upstream passes directly must pass, except those listed in
`tests/conformance/mcp-<transport>-<era>.yml` with their reasons; the suite itself fails the run on
any other failure and on a listed scenario that passes (a stale entry)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan import Plan
from tests.support.gateway import open_gateway
from tests.support.mcp_conformance import EXPECTED, ROOT, Reference, start_reference, suite

ERAS = ("2025-11-25", "2026-07-28")


@pytest.fixture(scope="module")
def reference() -> Iterator[Reference]:
    running = start_reference()
    try:
        yield running
    finally:
        running.stop()


def _plan(server: str) -> Plan:
    text = ("version: 1\nproviders: {fake: {type: mock}}\nmodels: {demo: {targets: [{provider: fake, model: demo}]}}\n"
            f"mcp:\n  servers:\n    ref: {server}\n")
    result = compile_text(text, "conformance.yaml")
    assert result.plan is not None, [d.format_text() for d in result.diagnostics]
    return result.plan


def _verdict(rc: int, report: str) -> str:
    lines = report.splitlines()
    total = next((i for i, line in enumerate(lines) if line.startswith("Total")), len(lines))
    failed = [line for line in lines[:total] if line.startswith("✗")]
    return f"exit {rc}:\n" + "\n".join(failed + lines[total:total + 40])


@pytest.mark.parametrize("era", ERAS)
async def test_the_suite_passes_through_the_gateway_over_streamable_http(
        era: str, reference: Reference, tmp_path: Path) -> None:
    conformance = suite()
    rc, report = await conformance.run(reference.url, era, None, tmp_path / "direct")
    assert rc == 0 and "0 failed" in report, "the reference upstream itself: " + _verdict(rc, report)
    async with open_gateway(_plan(f'{{url: "{reference.url}", timeout: 30s}}')) as gw:
        url = f"http://127.0.0.1:{gw.port}/mcp/ref"
        rc, report = await conformance.run(url, era, EXPECTED / f"mcp-http-{era}.yml", tmp_path / "gateway")
    assert rc == 0, "through sidegate: " + _verdict(rc, report)


@pytest.mark.parametrize("era", ERAS)
async def test_the_suite_passes_through_the_gateway_to_a_stdio_upstream(era: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tests.support.mcp_conformance_server", "--stdio"]
    server = f'{{command: {command!r}, env: {{PYTHONPATH: "{ROOT}"}}, timeout: 30s}}'.replace("'", '"')
    async with open_gateway(_plan(server)) as gw:
        url = f"http://127.0.0.1:{gw.port}/mcp/ref"
        rc, report = await suite().run(url, era, EXPECTED / f"mcp-stdio-{era}.yml", tmp_path / "gateway")
    assert rc == 0, "through sidegate: " + _verdict(rc, report)
