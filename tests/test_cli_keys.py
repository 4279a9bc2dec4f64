"""`sidegate keys create|list|revoke SPEC`: keys made offline in the spec's store, shown once,
stored as hashes, with metadata; bad metadata is a usage error, not a stack trace."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from sidegate.compiler.cli import main
from tests.support.specs import store_spec

Capture = pytest.CaptureFixture[str]


def _spec(tmp_path: Path) -> Path:
    return store_spec(tmp_path, f"sqlite:///{tmp_path}/keys.db")


def test_create_list_revoke(tmp_path: Path, capsys: Capture) -> None:
    spec = str(_spec(tmp_path))
    assert main(["keys", "create", spec, "--name", "ci", "--models", "demo", "--rpm", "10",
                 "--metadata", '{"mcp": {"allow": ["files__*"]}}']) == 0
    made = capsys.readouterr()
    key = made.out.strip()
    assert key.startswith("sk-sg-") and made.err.startswith("created key sk-sg-")
    assert main(["keys", "list", spec]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["name"] for k in listed] == ["ci"] and listed[0]["revoked"] is False
    con = sqlite3.connect(tmp_path / "keys.db")
    meta, rpm = con.execute("select metadata, rpm from apikey").fetchone()
    con.close()
    assert json.loads(meta) == {"mcp": {"allow": ["files__*"]}} and rpm == 10
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("keys.db*"))
    assert key.encode() not in raw
    assert main(["keys", "revoke", spec, key]) == 0
    assert capsys.readouterr().out == f"key {listed[0]['token']} revoked\n"
    assert main(["keys", "revoke", spec, key]) == 0
    assert capsys.readouterr().out.endswith("was already revoked\n")
    assert main(["keys", "list", spec]) == 0
    assert json.loads(capsys.readouterr().out)[0]["revoked"] is True


def test_unknown_teams_models_and_keys_are_errors(tmp_path: Path, capsys: Capture) -> None:
    spec = str(_spec(tmp_path))
    assert main(["keys", "create", spec, "--team", "nosuchteam"]) == 1
    assert "team 'nosuchteam' does not exist" in capsys.readouterr().err
    assert main(["keys", "create", spec, "--models", "demo,dmeo"]) == 1
    assert "model 'dmeo' is not a model group of this gateway (did you mean 'demo'?)" in capsys.readouterr().err
    assert main(["keys", "revoke", spec, "sk-sg-mistyped"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "no such key" in out.err
    assert main(["keys", "list", spec]) == 0
    assert json.loads(capsys.readouterr().out) == [], "nothing was created by the refused commands"


def test_bad_metadata_is_a_usage_error(tmp_path: Path, capsys: Capture) -> None:
    assert main(["keys", "create", str(_spec(tmp_path)), "--metadata", "{nope"]) == 64
    assert "--metadata must be a JSON object" in capsys.readouterr().err
