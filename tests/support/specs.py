"""Small spec files for CLI tests."""

from __future__ import annotations

from pathlib import Path


def store_spec(tmp_path: Path, database: str) -> Path:
    """A one-model mock spec whose store is `database`, written to tmp_path/spec.yaml."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""\
version: 1
providers:
  fake: {{type: mock}}
models:
  demo:
    targets: [{{provider: fake, model: echo}}]
store:
  database: "{database}"
""")
    return spec
