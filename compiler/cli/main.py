"""The ``sidegate`` command line: the parser and the dispatcher. The commands live in their own
modules, which share :mod:`compiler.cli.common` and never import one another: :mod:`compiler.cli.spec`
(lint, compile, explain, schema, providers, serve), :mod:`compiler.cli.deploy` (render, import,
diff), :mod:`compiler.cli.keys` (keys create, revoke, list) and :mod:`compiler.cli.archive` (archive).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from sidegate.compiler.cli.common import EXIT_USAGE, version

__all__ = ["EXIT_USAGE", "main", "version"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit 64."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> _Parser:
    parser = _Parser(prog="sidegate", description="An LLM gateway sidecar: lint, compile, explain and serve specs.")
    parser.add_argument("--version", action="version", version=f"sidegate {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    from sidegate.compiler.cli.archive import add_archive_command
    from sidegate.compiler.cli.deploy import add_deploy_commands  # each command module loads lazily
    from sidegate.compiler.cli.keys import add_keys_commands
    from sidegate.compiler.cli.spec import add_spec_commands

    add_spec_commands(commands)
    add_deploy_commands(commands)
    add_keys_commands(commands)
    add_archive_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sidegate`` command with ``argv`` (default: the process arguments)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        status: int = args.run(args)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BrokenPipeError:
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
