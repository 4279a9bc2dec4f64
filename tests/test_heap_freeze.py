"""The sidecar's process moves its start-up heap out of the cyclic collector's reach
(`runtime.server._freeze_heap`, at start and after each reload): garbage is collected first, and
after a reload what was frozen and became garbage is collected too. Run in a child process: freezing
the test process's own heap would keep its garbage cycles for the rest of the suite."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_CHILD = textwrap.dedent("""
    import gc, weakref
    from sidegate.runtime.server import _freeze_heap

    class Node:
        pass

    def cycle():
        node = Node()
        node.self = node
        return node

    garbage = cycle()
    before_start = weakref.ref(garbage)
    del garbage
    kept = cycle()
    kept_ref = weakref.ref(kept)
    _freeze_heap()  # at start
    assert before_start() is None, "garbage from before the freeze was collected, not frozen"
    assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
    assert gc.get_threshold()[2] == 100, gc.get_threshold()
    del kept
    gc.collect()
    assert kept_ref() is not None, "a frozen object is out of the collector's reach"
    _freeze_heap()  # after a reload
    assert kept_ref() is None, "frozen garbage of the old plan is collected at the next freeze"
    print("ok")
""")


def test_the_heap_is_frozen_after_a_collection_and_refrozen_after_a_reload() -> None:
    done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
