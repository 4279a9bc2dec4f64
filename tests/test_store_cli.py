"""`sidegate keys` against a PostgreSQL store (the URL's password from a secret reference), and a
clear, prompt error when the store cannot be reached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidegate.compiler.cli import main
from tests.support.postgres import fresh_database, pg_server  # noqa: F401 - fixtures
from tests.support.specs import store_spec

Capture = pytest.CaptureFixture[str]


def _spec(tmp_path: Path, url: str) -> str:
    return str(store_spec(tmp_path, url))


def test_keys_create_list_revoke_on_postgresql(pg_server: str, tmp_path: Path, capsys: Capture,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    url = fresh_database(pg_server)
    monkeypatch.setenv("TEST_PG_PASSWORD", "unused-with-trust-auth")
    spec = _spec(tmp_path, url.replace("postgresql://postgres@", "postgresql://postgres:${TEST_PG_PASSWORD}@"))
    assert main(["keys", "create", spec, "--name", "ci", "--models", "demo", "--budget", "5"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("sk-sg-")
    assert main(["keys", "revoke", spec, key]) == 0
    assert capsys.readouterr().out.endswith(" revoked\n")
    assert main(["keys", "list", spec]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(k["name"], k["revoked"]) for k in listed] == [("ci", True)]


def test_an_unreachable_store_is_reported_without_the_password(tmp_path: Path, capsys: Capture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PG_PASSWORD", "hunter2")
    spec = _spec(tmp_path, "postgresql://sidegate:${TEST_PG_PASSWORD}@127.0.0.1:1/sidegate")
    assert main(["keys", "list", spec]) == 1
    assert main(["keys", "create", spec, "--name", "x"]) == 1
    err = capsys.readouterr().err
    assert "cannot open the store postgresql://sidegate:***@127.0.0.1:1/sidegate" in err and "hunter2" not in err
