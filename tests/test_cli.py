"""The `sidegate` command line: exit codes, output formats, compile, explain, schema, providers, serve."""

from __future__ import annotations

import io
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sidegate.compiler.cli import EXIT_USAGE, main
from sidegate.runtime.plan import Plan
from sidegate.runtime.plan.canonical import loads

DATA = Path(__file__).parent / "data"
Capture = pytest.CaptureFixture[str]

CLEAN = """\
version: 1
providers:
  openai: {type: openai, api_key: "${OPENAI_API_KEY}", headers: {X-Team: "t-${TEAM_TOKEN}"}}
  groq: {type: groq, api_key: {env: GROQ_API_KEY}}
  fake: {type: mock, text: hi}
models:
  gpt-4o:
    aliases: [gpt4o]
    targets:
      - {provider: openai, model: gpt-4o, weight: 3, rpm: 100}
      - {provider: openai, model: gpt-4o-2024-08-06, weight: 1}
  "groq/*":
    targets: [{provider: groq, model: "*"}]
  demo:
    targets: [{provider: fake, model: demo}]
"""
WARNING_ONLY = """\
version: 1
providers:
  fake: {type: mock}
  spare: {type: mock}
models:
  demo:
    targets: [{provider: fake, model: demo}]
"""
BROKEN = """\
version: 1
providers:
  fake: {type: mock}
models:
  demo:
    targets:
      - {provider: fake, model: demo, wieght: 2}
"""


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], str]:
    def _write(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return _write


def test_lint_exit_codes(write: Callable[[str, str], str], capsys: Capture) -> None:
    clean, warn, bad = write("clean.yaml", CLEAN), write("warn.yaml", WARNING_ONLY), write("bad.yaml", BROKEN)
    assert main(["lint", clean]) == 0
    assert capsys.readouterr().out == ""
    assert main(["lint", warn]) == 0
    assert main(["lint", "--strict", warn]) == 2
    assert main(["lint", "--strict", clean]) == 0
    assert main(["lint", bad]) == 1
    assert main(["lint", "--strict", warn, bad]) == 1


def test_lint_text_format_and_several_files(write: Callable[[str, str], str], capsys: Capture) -> None:
    bad, warn = write("bad.yaml", BROKEN), write("warn.yaml", WARNING_ONLY)
    assert main(["lint", bad, warn]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{bad}:7:39: error[schema.unknown-field] /models/demo/targets/0/wieght: unknown field 'wieght' "
        "(did you mean 'weight'?)",
        f"{warn}:4:3: warning[provider.unused] /providers/spare: provider 'spare' is not used by any model",
    ]


def test_lint_reads_stdin(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(BROKEN))
    assert main(["lint", "-"]) == 1
    assert capsys.readouterr().out.startswith("<stdin>:7:39: error[schema.unknown-field]")


def test_lint_unreadable_file_is_a_diagnostic(tmp_path: Path, capsys: Capture) -> None:
    missing = str(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"version: 1 # caf\xe9\n")
    assert main(["lint", missing, str(tmp_path / "latin1.yaml")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{missing}:1:1: error[io.read] cannot read the file")
    assert "error[io.read] the file is not UTF-8" in out[1]


def test_lint_json_format(write: Callable[[str, str], str], capsys: Capture) -> None:
    bad = write("bad.yaml", BROKEN)
    assert main(["lint", "--format", "json", bad]) == 1
    assert json.loads(capsys.readouterr().out) == [
        {
            "file": bad,
            "line": 7,
            "column": 39,
            "severity": "error",
            "code": "schema.unknown-field",
            "pointer": "/models/demo/targets/0/wieght",
            "message": "unknown field 'wieght' (did you mean 'weight'?)",
        }
    ]
    assert main(["lint", "--format", "json", write("ok.yaml", CLEAN)]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_lint_github_format_escapes_workflow_commands(write: Callable[[str, str], str], capsys: Capture) -> None:
    # a file name with ',' and ':' and a message with '%' and a newline must not break the command
    spec = 'version: 1\nproviders:\n  fake: {type: mock}\nmodels:\n  demo:\n    targets: [{provider: "a%b\\nc", model: x}]\n'
    path = write("odd,name:1.yaml", spec)
    assert main(["lint", "--format", "github", path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2  # the error and the unused provider's warning
    assert lines[0].startswith("::warning file=")
    line = lines[1]
    escaped_path = path.replace("%", "%25").replace(":", "%3A").replace(",", "%2C")
    assert line.startswith(f"::error file={escaped_path},line=6,col=26,title=ref.unknown-provider::")
    assert "provider 'a%25b%0Ac' is not declared" in line
    props = line[len("::error ") : line.index("::", 2)]
    assert [p.split("=", 1)[0] for p in props.split(",")] == ["file", "line", "col", "title"]


def test_lint_sarif_validates_against_the_sarif_2_1_0_schema(write: Callable[[str, str], str], capsys: Capture) -> None:
    schema = json.loads((DATA / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    files = [write("bad.yaml", BROKEN), write("warn.yaml", WARNING_ONLY), write("dir with space.yaml", BROKEN)]
    assert main(["lint", "--format", "sarif", *files]) == 1
    log = json.loads(capsys.readouterr().out)
    jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER).validate(log)
    run = log["runs"][0]
    assert [r["ruleId"] for r in run["results"]] == ["schema.unknown-field", "provider.unused", "schema.unknown-field"]
    assert [r["level"] for r in run["results"]] == ["error", "warning", "error"]
    assert run["results"][0]["locations"][0]["physicalLocation"]["region"] == {"startLine": 7, "startColumn": 39}
    rules = run["tool"]["driver"]["rules"]
    assert [rules[r["ruleIndex"]]["id"] for r in run["results"]] == [r["ruleId"] for r in run["results"]]
    assert main(["lint", "--format", "sarif", write("ok.yaml", CLEAN)]) == 0
    jsonschema.Draft4Validator(schema).validate(json.loads(capsys.readouterr().out))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["lint"],
        ["lint", "--format", "xml", "x.yaml"],
        ["compile"],
        ["explain", "x.yaml"],
        ["frobnicate"],
        ["serve"],
        ["serve", "spec.yaml", "--plan", "plan.json"],
        ["serve", "spec.yaml", "--workers", "0"],
        ["serve", "--workers", "many"],
    ],
)
def test_usage_errors_exit_64_with_one_line(argv: list[str], capsys: Capture) -> None:
    assert main(argv) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert "error:" in captured.err


def test_version(capsys: Capture) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == "sidegate 0.1.0\n"


def test_compile_is_byte_identical_and_leaks_no_secret(
    write: Callable[[str, str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    secrets = {"OPENAI_API_KEY": "sk-secret-value-1", "GROQ_API_KEY": "gsk-secret-2", "TEAM_TOKEN": "tt-secret-3"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    spec = write("spec.yaml", CLEAN + "  spare:\n    targets: [{provider: openai, model: gpt-4x}]\n")
    assert main(["compile", spec]) == 0
    first = capsys.readouterr()
    assert "warning[cost.unknown-model]" in first.err  # diagnostics go to stderr, the plan to stdout
    assert main(["compile", spec, "-o", str(tmp_path / "plan.json")]) == 0
    second = capsys.readouterr()
    assert second.out == ""
    assert (tmp_path / "plan.json").read_text(encoding="utf-8") == first.out
    assert main(["explain", spec, "gpt4o"]) == 0
    explained = capsys.readouterr()
    for value in secrets.values():
        for text in (first.out, first.err, explained.out, explained.err):
            assert value not in text
    plan = loads(first.out)
    assert plan.provider("openai").api_key is not None
    assert plan.provider("openai").api_key.describe() == "${OPENAI_API_KEY}"


def test_compile_with_errors_writes_no_plan(write: Callable[[str, str], str], capsys: Capture) -> None:
    assert main(["compile", write("bad.yaml", BROKEN)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error[schema.unknown-field]" in captured.err


def test_explain_alias(write: Callable[[str, str], str], capsys: Capture) -> None:
    assert main(["explain", write("spec.yaml", CLEAN), "gpt4o"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpt4o -> model group 'gpt-4o' (alias)\n")
    assert "POST https://api.openai.com/v1/chat/completions  (model: gpt-4o)" in out
    assert "weight:     3 (75.0% of requests)" in out
    assert "weight:     1 (25.0% of requests)" in out
    assert "caps:       rpm 100" in out
    assert "price:      $2.5 input / $10 output per 1M tokens ($1.25 cached input)" in out
    assert "context:    128,000 input tokens, 16,384 output tokens" in out
    assert "api key:    ${OPENAI_API_KEY} (sent as Authorization: Bearer ...)" in out
    assert "header:     X-Team: t-${TEAM_TOKEN}" in out


def test_explain_wildcard(write: Callable[[str, str], str], capsys: Capture) -> None:
    assert main(["explain", write("spec.yaml", CLEAN), "groq/openai/gpt-oss-120b"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("groq/openai/gpt-oss-120b -> model group 'groq/*' (wildcard; forwards 'openai/gpt-oss-120b')")
    assert "POST https://api.groq.com/openai/v1/chat/completions  (model: openai/gpt-oss-120b)" in out
    assert "price:      $" in out  # priced for the forwarded model


def test_explain_azure_url_and_unknown_model(write: Callable[[str, str], str], capsys: Capture) -> None:
    spec = write(
        "azure.yaml",
        "version: 1\nproviders:\n  az: {type: azure, base_url: 'https://r.openai.azure.com', api_version: '2024-10-21',"
        " api_key: {env: K}}\nmodels:\n  m:\n    targets: [{provider: az, model: gpt-4o}]\n",
    )
    assert main(["explain", spec, "m"]) == 0
    assert (
        "POST https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        in capsys.readouterr().out
    )
    assert main(["explain", spec, "n"]) == 1
    assert capsys.readouterr().err.strip() == "sidegate explain: no model group serves 'n'; the model names a client can send: m"


def test_schema_and_providers(capsys: Capture) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert main(["providers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 60
    groq = next(line for line in lines if line.startswith("groq "))
    assert "https://api.groq.com/openai/v1" in groq and "https://" in groq.split("openai/v1", 1)[1]


class _FakeServer:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def run(self, plan: Plan, *, load_plan: Callable[[], Plan], watch_path: str | None, workers: int | None) -> int:
        self.calls.append({"plan": plan, "load_plan": load_plan, "watch_path": watch_path, "workers": workers})
        return 0


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> _FakeServer:
    fake = _FakeServer()
    module = types.ModuleType("sidegate.runtime.server")
    module.run = fake.run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sidegate.runtime.server", module)
    return fake


def test_serve_spec_compiles_and_reloads(
    write: Callable[[str, str], str], fake_server: _FakeServer, capsys: Capture
) -> None:
    spec = write("spec.yaml", CLEAN)
    assert main(["serve", spec, "--workers", "2"]) == 0
    (call,) = fake_server.calls
    assert (call["watch_path"], call["workers"]) == (spec, 2)
    assert call["plan"].models[0].name == "demo"
    assert call["load_plan"]() == call["plan"]
    Path(spec).write_text(BROKEN, encoding="utf-8")
    with pytest.raises(ValueError, match=r"error\[schema.unknown-field\]"):
        call["load_plan"]()


def test_serve_plan_file(
    write: Callable[[str, str], str], tmp_path: Path, fake_server: _FakeServer, capsys: Capture
) -> None:
    plan_path = str(tmp_path / "plan.json")
    assert main(["compile", write("spec.yaml", CLEAN), "-o", plan_path]) == 0
    assert main(["serve", "--plan", plan_path]) == 0
    (call,) = fake_server.calls
    assert (call["watch_path"], call["workers"]) == (plan_path, None)
    assert call["load_plan"]() == call["plan"]
    Path(plan_path).write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="not a plan file"):
        call["load_plan"]()


def test_serve_refuses_a_broken_spec_or_plan(
    write: Callable[[str, str], str], fake_server: _FakeServer, capsys: Capture
) -> None:
    assert main(["serve", write("bad.yaml", BROKEN)]) == 1
    assert "error[schema.unknown-field]" in capsys.readouterr().err
    assert main(["serve", "--plan", write("plan.json", "not json")]) == 1
    assert "not JSON" in capsys.readouterr().err
    assert fake_server.calls == []
