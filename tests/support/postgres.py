"""Real PostgreSQL servers for the store tests.

`SIDEGATE_TEST_PG_URL` names a server to use (`.ci/run` starts one and exports it); without it, a
temporary cluster is started from the local PostgreSQL binaries (`initdb`, `pg_ctl` on PATH, in
`SIDEGATE_TEST_PG_BIN` or `/usr/lib/postgresql/*/bin`). With neither, the tests that need one skip —
except under CI (`CI` set), where that is a failure: CI must test PostgreSQL, never skip it.

Each test gets a database of its own (`CREATE DATABASE` on the server, dropped afterwards).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

__all__ = ["Cluster", "fresh_database", "pg_bin", "pg_cluster", "pg_server", "require_postgres", "store_url"]


def require_postgres(reason: str) -> None:
    """Skip without PostgreSQL — or fail, under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
    pytest.skip(reason)


def pg_bin() -> Path | None:
    """The directory holding `initdb` and `pg_ctl`, if any."""
    configured = os.environ.get("SIDEGATE_TEST_PG_BIN")
    candidates = [configured] if configured else []
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(str(Path(found).resolve().parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (run as the `postgres` user when we are root:
    initdb refuses root)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="sidegate-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user: str | None = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            shutil.chown(self.root, self.user)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        proc = subprocess.run(args, user=self.user, capture_output=True, text=True, timeout=60, cwd=self.root)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {proc.stdout}{proc.stderr}")

    def init(self) -> Cluster:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        return self

    def start(self) -> None:
        # fsync off: the tests kill the server, not the machine, so the OS keeps what was written;
        # synchronous_commit stays on, so an acknowledged commit is in the WAL before the answer.
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off -c max_connections=50")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts,
                  "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _admin(url: str, sql: str) -> None:
    import psycopg2

    con = psycopg2.connect(url, connect_timeout=10)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(sql)
    finally:
        con.close()


def fresh_database(server: str) -> str:
    """Create an empty database on `server`; returns its URL."""
    name = "sg_" + uuid.uuid4().hex[:16]
    _admin(server, f'CREATE DATABASE "{name}"')
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path="/" + name))


def drop_database(server: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a running PostgreSQL server's maintenance database."""
    url = os.environ.get("SIDEGATE_TEST_PG_URL")
    if url:
        yield url
        return
    bin_dir = pg_bin()
    if bin_dir is None:
        require_postgres("no PostgreSQL: set SIDEGATE_TEST_PG_URL or install the server binaries")
        return
    cluster = Cluster(bin_dir).init()
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store of each backend: a sqlite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/s.db"
        return
    server: str = request.getfixturevalue("pg_server")
    url = fresh_database(server)
    try:
        yield url
    finally:
        for _ in range(3):
            try:
                drop_database(server, url)
                break
            except Exception:  # a restarted test server may still be coming up
                time.sleep(0.5)


@pytest.fixture
def pg_cluster() -> Iterator[Cluster]:
    """A private, running cluster a test may stop and restart (needs the server binaries)."""
    bin_dir = pg_bin()
    if bin_dir is None:
        require_postgres("no PostgreSQL server binaries (initdb, pg_ctl) to start a private cluster")
        return
    cluster = Cluster(bin_dir).init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()
