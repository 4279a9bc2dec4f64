"""The ``sidegate`` command line. `main` parses and dispatches (lint, compile, explain, schema,
providers, serve); `deploy` adds render, import and diff; `keys` manages virtual keys;
`archive` runs one pass of the spend archive; `explain` and
`diff` read plans for people. Every command module depends on the shared core (`common`), never on
another command module; heavy modules load inside the commands that need them.

May import: every compiler room, and the runtime (`serve` starts it; `keys` and `archive` use its store).
"""

from sidegate.compiler.cli.common import EXIT_USAGE
from sidegate.compiler.cli.main import main

__all__ = ["EXIT_USAGE", "main"]
