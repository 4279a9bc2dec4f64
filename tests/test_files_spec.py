"""The spec's `files` section and `server.max_file_size`: compiled into the plan, an alias resolved
to its group, a group that cannot hold files refused at compile time."""

from __future__ import annotations

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan import Files

SPEC = """\
version: 1
server: {{listen: "127.0.0.1:4000"{server}}}
providers:
  openai: {{type: openai, api_key: {{env: OPENAI_API_KEY}}}}
  fake: {{type: mock}}
models:
  gpt-4o-mini:
    aliases: [batch]
    targets: [{{provider: openai, model: gpt-4o-mini}}]
  demo:
    targets: [{{provider: fake, model: demo}}]
{files}"""


def _compile(files: str = "", server: str = "") -> tuple[object, list[tuple[str, str]]]:
    result = compile_text(SPEC.format(files=files, server=server), "s.yaml")
    return result.plan, [(d.code, d.message) for d in result.diagnostics if d.severity.value == "error"]


def test_defaults_without_a_files_section() -> None:
    plan, errors = _compile()
    assert not errors and plan is not None
    assert plan.files == Files() and plan.server.max_file_size == 100 << 20  # type: ignore[attr-defined]


def test_files_model_alias_discount_and_bound() -> None:
    plan, errors = _compile("files: {model: batch, batch_discount: 0.4}\n", ", max_file_size: 20MiB")
    assert not errors, errors
    assert plan.files == Files(model="gpt-4o-mini", batch_discount=0.4)  # type: ignore[attr-defined]
    assert plan.server.max_file_size == 20 << 20  # type: ignore[attr-defined]


def test_unknown_group_and_a_group_without_openai_are_refused() -> None:
    _, errors = _compile("files: {model: gpt-4o-mimi}\n")
    assert [c for c, _ in errors] == ["files.unknown-model"] and "gpt-4o-mini" in errors[0][1]
    _, errors = _compile("files: {model: demo}\n")
    assert [c for c, _ in errors] == ["files.not-openai"]
    _, errors = _compile("files: {model: batch, batch_discount: 0}\n")
    assert errors, "a zero discount would meter batches as free"
