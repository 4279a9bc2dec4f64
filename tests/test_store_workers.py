"""Several sidecar workers open one new sqlite store at the same moment (`--workers N`)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def test_workers_opening_a_new_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    """`--workers N` starts N processes that connect (switching the file to WAL) and migrate the same
    new sqlite file at once; without a lock between them one got "database is locked" and died at
    start (seen as a hung two-worker start under load). Every round, every process must open it."""
    code = ("import sys, time\nfrom runtime.store.database import open_database\n"
            "t = float(sys.argv[2])\nwhile time.time() < t: pass\n"
            "open_database('sqlite:///' + sys.argv[1])\nprint('ok')\n")
    root = Path(__file__).resolve().parents[1]
    for round_ in range(6):
        db = tmp_path / f"race{round_}.db"
        start = time.time() + 1.0
        procs = [subprocess.Popen([sys.executable, "-c", code, str(db), str(start)], cwd=root,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
        results = [p.communicate(timeout=60) for p in procs]
        assert [out.strip() for out, _ in results] == ["ok"] * 3, [err for _, err in results]
