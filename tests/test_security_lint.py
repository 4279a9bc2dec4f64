"""Literal credentials never pass lint and never get printed (issue 15, case 3): passwords in a URL's
user part, keys in a query, literal credential headers are errors under lint (`--strict` or not);
`compile` and `render kubernetes` refuse the spec without printing the literal (schema diagnostics
mask what they echo); whole-string references are accepted for `store.database` as for `redis`."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate.compiler.cli import main
from sidegate.compiler.deploy.render import render_text
from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan.secrets import resolve

GOLDEN = Path(__file__).parent / "golden"
LITERALS = {
    "literal-url-credentials": ["hunter2-pw", "AIzaSyLiteralKey000000000000", "ghp_abcdefghijklmnop1234", "secretpw",
                                "redispw", "tok3n", "user:pass"],
    "literal-credential-headers": ["sk-proj-literal0123456789", "sk-live-0123456789abcdef", "abc123def456",
                                   "literal-target-key", "mcp-literal-key"],
}
SPEC = """version: 1
providers:
  fake: {type: mock}
models:
  demo:
    targets: [{provider: fake, model: demo}]
store:
  database: %s
"""


@pytest.mark.parametrize("name", sorted(LITERALS))
def test_lint_compile_render_refuse_without_printing_the_literal(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(GOLDEN / "bad" / f"{name}.yaml")
    assert main(["lint", "--strict", path]) == 1
    assert main(["lint", "--format", "json", path]) == 1
    assert main(["compile", path]) == 1
    assert main(["render", "kubernetes", path]) != 0
    printed = capsys.readouterr()
    assert "secret.url-credentials" in printed.out + printed.err or "secret.literal-header" in printed.out + printed.err
    for literal in LITERALS[name]:
        assert literal not in printed.out and literal not in printed.err, literal


def test_schema_diagnostics_mask_what_they_echo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC % '"mysql://app:secretpw@db/x"')
    assert main(["lint", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "schema.pattern" in out and "mysql://***@db/x" in out and "secretpw" not in out


@pytest.mark.parametrize("database", ["${DATABASE_URL}", '"${DATABASE_URL}"', "{env: DATABASE_URL}",
                                      '"postgresql://app:${PGPASSWORD}@db/x"', "{file: /run/secrets/dsn}"])
def test_whole_references_are_accepted_for_the_database(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = compile_text(SPEC % database, "spec.yaml")
    assert result.plan is not None and result.diagnostics == (), result.diagnostics
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw-from-env@db/x")
    monkeypatch.setenv("PGPASSWORD", "pw-from-env")
    if "file" not in database:
        assert resolve(result.plan.store.database) == "postgresql://app:pw-from-env@db/x"
    rendered = render_text("kubernetes", SPEC % database, "spec.yaml", version="0.1.0")
    assert rendered.ok
    assert "pw-from-env" not in "".join(rendered.files.values())


def test_references_in_credential_headers_and_urls_lint_clean() -> None:
    spec = """version: 1
providers:
  gw:
    type: openai-compatible
    base_url: https://gw.example.com/v1?key=${GW_KEY}
    headers: {Authorization: "Bearer ${GW_TOKEN}", X-Api-Key: {env: GW_KEY}, X-Team: checkout}
models:
  demo:
    targets: [{provider: gw, model: m, headers: {api-key: {file: /run/secrets/k}}}]
store:
  redis: "redis://:${REDIS_PASSWORD}@redis:6379/0"
"""
    result = compile_text(spec, "spec.yaml")
    assert result.plan is not None and result.diagnostics == (), result.diagnostics
