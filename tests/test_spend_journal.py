"""Spend is never lost: rows the store cannot take go to a local fsync'd journal (past the memory
buffer during an outage, and at shutdown) and are replayed into the store exactly once.

With a real PostgreSQL stopped: 100 requests, SIGTERM, PostgreSQL back, restart -> 100 of 100 rows,
no duplicates; `kill -9` under load loses no row that was journaled. With sqlite: replaying a
journal whose rows are already stored adds nothing; a line torn by a kill is skipped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg2
import trio

from sidegate.runtime.observe.metrics import Metrics
from sidegate.runtime.store.database import Store
from sidegate.runtime.store.journal import Journal
from sidegate.runtime.store.models import SpendLog
from sidegate.runtime.store.spend import SpendRow, SpendWriter, _flatten
from tests.support.postgres import Cluster, fresh_database, pg_cluster  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _row(i: int) -> SpendRow:
    return SpendRow(request_id=f"r{i}", key_hash=None, team=None, user=None, model="demo", deployment="fake/demo",
                    prompt_tokens=1, completion_tokens=2, cached_tokens=0, reasoning_tokens=0, cost=0.001,
                    estimated=False, latency_ms=1.0, status=200, created_at=1_800_000_000.0 + i / 1000)


def _sample(metrics: Metrics, name: str) -> float:
    for line in metrics.render().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def test_rows_past_the_buffer_are_journaled_then_replayed_exactly_once(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path}/gw.db")
    metrics = Metrics()
    journal = Journal(str(tmp_path / "gw.db-spend.journal"))
    writer = SpendWriter(store, max_buffer=10, metrics=metrics, journal=journal)
    for i in range(25):
        writer.record_nowait(_row(i))
    assert writer.overflowed == 0 and writer.pending == 25, "nothing is dropped: 15 wait for the journal"
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            while writer.pending or writer.journal_rows or writer.replayed < 15:
                await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    ids = await store.run(lambda: sorted(int(r.request_id[1:]) for r in SpendLog.select()))
    assert ids == list(range(25))
    assert _sample(metrics, "sidegate_spend_rows_journaled_total") == 15
    assert _sample(metrics, "sidegate_spend_rows_replayed_total") == 15
    assert journal.count() == 0
    # A crash between the commit and the truncation leaves rows in the journal that are stored already:
    await trio.to_thread.run_sync(journal.append, [_flatten(_row(i)) for i in range(20, 30)])
    with open(journal.path, "ab") as f:
        f.write(b'["torn-by-a-kill", nu')  # no newline: never fsync'd, never counted as journaled
    again = SpendWriter(store, metrics=metrics, journal=journal)
    await again.open_journal()
    assert again.journal_rows == 10
    assert await again.replay() == 5, "only r25..r29 were missing"
    ids = await store.run(lambda: sorted(int(r.request_id[1:]) for r in SpendLog.select()))
    await store.aclose()
    assert ids == list(range(30)) and journal.count() == 0


SPEC = """
version: 1
server: {{listen: "127.0.0.1:{port}", drain_timeout: 5s}}
providers:
  fake: {{type: mock, text: "a b c"}}
models:
  demo:
    targets: [{{provider: fake, model: demo, price: {{input: 1000, output: 2000}}}}]
store: {{database: "{db}", journal: "{journal}", spend_buffer: {buffer}}}
"""


@contextmanager
def _serving(spec: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "sidegate.compiler.cli", "serve", str(spec)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 40
    started = False
    while not started and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        started = line.startswith("{") and json.loads(line).get("event") == "started"
    try:
        assert started, "sidegate did not start"
        drain = threading.Thread(target=proc.stderr.read, daemon=True)  # keep the pipe from filling up
        drain.start()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _rows(url: str) -> list[str]:
    with psycopg2.connect(url, connect_timeout=10) as con, con.cursor() as cur:
        cur.execute(f"SELECT request_id FROM {SpendLog._meta.table_name}")
        return [r[0] for r in cur.fetchall()]


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _write_spec(tmp_path: Path, db: str, buffer: int = 100_000) -> tuple[Path, int, Path]:
    port, journal = _free_port(), tmp_path / "spend.journal"
    spec = tmp_path / "sidegate.yaml"
    spec.write_text(SPEC.format(port=port, db=db, journal=journal, buffer=buffer))
    return spec, port, journal


def _chat(c: httpx.Client, port: int, rid: str) -> None:
    r = c.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"x-request-id": rid},
               json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text


def test_sigterm_while_postgres_is_down_journals_every_row_and_the_restart_replays_them(
    pg_cluster: Cluster, tmp_path: Path,  # noqa: F811
) -> None:
    url = fresh_database(pg_cluster.url)
    spec, port, journal = _write_spec(tmp_path, url)
    with _serving(spec) as proc, httpx.Client(timeout=20) as c:
        pg_cluster.stop("immediate")
        for i in range(100):
            _chat(c, port, f"r{i}")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        print(f"stopped {time.monotonic() - t0:.2f}s after SIGTERM; journal holds {_lines(journal)} rows")
    assert _lines(journal) == 100
    pg_cluster.start()
    for _ in range(2):  # the second start finds nothing left to replay
        with _serving(spec) as proc, httpx.Client(timeout=20) as c:
            metrics = c.get(f"http://127.0.0.1:{port}/metrics").text
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        rows = _rows(url)
        assert sorted(rows) == sorted(f"r{i}" for i in range(100)), "100 of 100 rows, no duplicates"
        assert _lines(journal) == 0
    assert "sidegate_spend_rows_replayed_total 0.0" in metrics, "replayed by the first restart, not the second"


def test_kill_9_under_load_loses_no_journaled_row(pg_cluster: Cluster, tmp_path: Path) -> None:  # noqa: F811
    url = fresh_database(pg_cluster.url)
    spec, port, journal = _write_spec(tmp_path, url, buffer=20)
    sent: list[str] = []
    with _serving(spec) as proc:
        pg_cluster.stop("immediate")
        stop = threading.Event()

        def load(n: int) -> None:
            with httpx.Client(timeout=20) as c:
                i = 0
                while not stop.is_set():
                    try:
                        _chat(c, port, f"c{n}-{i}")
                    except httpx.HTTPError:  # the server was killed
                        return
                    sent.append(f"c{n}-{i}")
                    i += 1

        threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        with httpx.Client(timeout=20) as c:
            journaled = 0.0
            deadline = time.monotonic() + 60
            while journaled < 200 and time.monotonic() < deadline:  # rows past the 20-row buffer
                text = c.get(f"http://127.0.0.1:{port}/metrics").text
                journaled = sum(float(line.split()[-1]) for line in text.splitlines()
                                if line.startswith("sidegate_spend_rows_journaled_total "))
        os.kill(proc.pid, signal.SIGKILL)  # under load: the clients are still sending
        proc.wait()
        stop.set()
        for t in threads:
            t.join(timeout=30)
    on_disk = _lines(journal)
    print(f"{len(sent)} served, {journaled:.0f} journaled before the kill, {on_disk} rows in the journal")
    assert journaled >= 200 and on_disk >= journaled
    pg_cluster.start()
    with _serving(spec) as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    rows = _rows(url)
    assert len(rows) == len(set(rows)) == on_disk, "every journaled row replayed, once"
    assert set(rows) <= set(sent)
