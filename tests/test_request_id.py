"""Request ids: 32 hex digits as before (`uuid4().hex`), never repeated, in a forked worker too."""

from __future__ import annotations

import os
import re

from sidegate.runtime.asgi import new_request_id


def test_request_ids_are_hex_and_unique() -> None:
    ids = {new_request_id() for _ in range(20_000)}
    assert len(ids) == 20_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_a_forked_worker_does_not_repeat_its_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, ",".join(new_request_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    ours = {new_request_id() for _ in range(50)}
    with os.fdopen(read, "rb") as pipe:
        theirs = set(pipe.read().decode().split(","))
    os.waitpid(pid, 0)
    assert len(theirs) == 50 and not ours & theirs
