"""Several sidecar workers open one new sqlite store at the same moment (`--workers N`)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

ROUNDS = 30
"""Without the lock about one round in six catches the race (80 of 450 measured on a loaded 2-core
machine): 30 rounds miss it in about 1 run of 400 (6 rounds of fresh processes missed 1 in 5)."""

WORKER = ("import sys\nfrom sidegate.runtime.store.database import open_database\nprint('ready', flush=True)\n"
          "for path in sys.stdin:\n"
          "    try:\n"
          "        open_database('sqlite:///' + path.rstrip('\\n')).close()\n"
          "        print('ok', flush=True)\n"
          "    except Exception as exc:\n"
          "        print(f'{type(exc).__name__}: {exc}', flush=True)\n")


def test_workers_opening_a_new_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    """`--workers N` starts N processes that connect (switching the file to WAL) and migrate the same
    new sqlite file at once; without a lock between them one got "database is locked" and died at
    start (seen as a hung two-worker start under load). Every round, every process must open it.

    The processes start once and are told each round's new file together, once every one has
    imported and is waiting (a condition, not a head start sized for the machine): a round costs
    the opening alone, not three interpreter starts."""
    root = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], cwd=root, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    pipes = [(p.stdin, p.stdout) for p in procs]
    watchdog = threading.Timer(120, lambda: [p.kill() for p in procs])  # a hung open fails, not hangs
    watchdog.start()
    failure = None
    try:
        ready = [out.readline() for _, out in pipes if out]
        if ready != ["ready\n"] * 3:
            failure = f"not ready: {ready}"
        for round_ in range(ROUNDS if failure is None else 0):
            db = tmp_path / f"race{round_}.db"
            try:
                for into, _ in pipes:  # all three are waiting: they get the new file one after another
                    assert into is not None
                    into.write(f"{db}\n")
                    into.flush()
            except BrokenPipeError:
                failure = f"round {round_}: a worker died"
                break
            answers = [out.readline().strip() for _, out in pipes if out]
            if answers != ["ok"] * 3:
                failure = f"round {round_}: {answers}"
                break
    finally:
        errors = [p.communicate()[1] for p in procs]  # closes stdin: the workers' loops end
        watchdog.cancel()
    assert failure is None, (failure, errors)
    assert [p.returncode for p in procs] == [0] * 3, errors
