"""`store.database` in the spec: sqlite paths and PostgreSQL URLs are accepted (secret references
included), anything else is refused with a clear message, and render knows a PostgreSQL store
writes nothing on the pod's disk."""

from __future__ import annotations

from sidegate.compiler.deploy.render import render_text
from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan.secrets import resolve

SPEC = """version: 1
providers:
  fake: {type: mock}
models:
  demo:
    targets: [{provider: fake, model: demo}]
store:
  database: "%s"
"""


def test_postgresql_urls_compile_with_secret_references(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PGPASSWORD", "s3cret")
    for url in ("postgresql://sidegate:${PGPASSWORD}@db.internal:5432/sidegate?sslmode=require",
                "postgres://db/sidegate"):
        result = compile_text(SPEC % url, "spec.yaml")
        assert result.plan is not None, result.diagnostics
        resolved = resolve(result.plan.store.database)
        assert resolved == url.replace("${PGPASSWORD}", "s3cret")
    rendered = render_text("kubernetes", SPEC % "postgresql://sidegate:${PGPASSWORD}@db/sidegate", "spec.yaml",
                           version="0.1.0")
    assert rendered.ok and not [d for d in rendered.diagnostics if "store" in d.code]
    assert "s3cret" not in "".join(rendered.files.values())


def test_other_database_urls_are_refused_with_the_forms_that_work() -> None:
    result = compile_text(SPEC % "mysql://db/sidegate", "spec.yaml")
    assert result.plan is None
    messages = [d.message for d in result.diagnostics]
    assert any("is not a database URL" in m and "postgresql://" in m for m in messages), messages
