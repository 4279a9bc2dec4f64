"""The deployment commands of the ``sidegate`` CLI: ``render``, ``import litellm`` and ``diff``.

Kept apart from :mod:`compiler.cli` so that module stays small; like it, this one imports the
compiler, Jinja and the parsers only inside the commands that need them.

Exit codes:
- ``render``: 0 written, 1 errors in the spec (nothing written);
- ``import``: 0 everything translated, 2 a spec was written but settings were left behind or assumed
  (each reported), 1 no spec could be written;
- ``diff``: 0 no change, 1 the plans differ (changes printed), 2 trouble (an input does not compile
  or load), as `diff(1)` does.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from sidegate.runtime.plan import Plan

__all__ = ["RENDER_TARGETS", "add_deploy_commands"]

RENDER_TARGETS = ("kubernetes", "compose", "systemd")
"""What `sidegate render` produces (the same as :data:`compiler.deploy.render.TARGETS`)."""
_YAML_SEPARATOR = "---\n"
_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)


def _write(path: str, text: str) -> None:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _cmd_render(args: argparse.Namespace) -> int:
    """Render deployment files for a target from a spec."""
    from sidegate.compiler.cli.common import read_source, version
    from sidegate.compiler.deploy.render import render_text
    from sidegate.compiler.report import text
    from sidegate.runtime.plan.canonical import dumps

    try:
        name, source = read_source(args.file)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"sidegate render: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    rendered = render_text(args.target, source, name, version=version(), image=args.image)
    sys.stderr.write(text(rendered.diagnostics))
    if not rendered.ok or rendered.plan is None:
        return 1
    if args.output is None:
        sys.stdout.write(_YAML_SEPARATOR.join(rendered.files.values()))
        return 0
    files = dict(rendered.files)
    if args.target != "kubernetes":  # the ConfigMap carries the plan; elsewhere it is a file beside
        files["plan.json"] = dumps(rendered.plan)
    try:
        for filename, content in files.items():
            _write(os.path.join(args.output, filename), content)
    except OSError as exc:
        print(f"sidegate render: cannot write into {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    for filename in files:
        print(os.path.join(args.output, filename))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    """Translate a LiteLLM proxy config into a spec."""
    from sidegate.compiler.cli.common import read_source
    from sidegate.compiler.importers.litellm.importer import import_litellm
    from sidegate.compiler.report import text

    try:
        name, source = read_source(args.file)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"sidegate import: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    imported = import_litellm(source, name)
    sys.stderr.write(text(imported.diagnostics))
    if imported.spec is None:
        return 1
    if args.output in (None, "-"):
        sys.stdout.write(imported.spec)
    else:
        try:
            _write(args.output, imported.spec)
        except OSError as exc:
            print(f"sidegate import: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return 1
    return 2 if imported.diagnostics else 0


def _load(path: str) -> Plan | None:
    """The plan of a spec or plan JSON file; None (reported on stderr) when it does not load."""
    from sidegate.compiler.cli.common import read_source
    from sidegate.compiler.pipeline import compile_text
    from sidegate.compiler.report import text
    from sidegate.runtime.plan.canonical import PlanFormatError, loads

    try:
        name, source = read_source(path)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"sidegate diff: cannot read {path}: {exc}", file=sys.stderr)
        return None
    if path.endswith(".json") or source.lstrip().startswith("{"):
        try:
            return loads(source)
        except PlanFormatError as exc:
            print(f"sidegate diff: {name}: {exc}", file=sys.stderr)
            return None
    result = compile_text(source, name)
    errors = [d for d in result.diagnostics if d.is_error]
    if result.plan is None:
        sys.stderr.write(text(errors))
    return result.plan


def _cmd_diff(args: argparse.Namespace) -> int:
    """Say what changes in routing from OLD to NEW."""
    from sidegate.compiler.cli.diff import describe_changes

    old, new = _load(args.old), _load(args.new)
    if old is None or new is None:
        return 2
    changes = describe_changes(old, new)
    if not changes:
        print("no change: both compile to the same plan")
        return 0
    sys.stdout.write("".join(line + "\n" for line in changes))
    return 1


def add_deploy_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add ``render``, ``import`` and ``diff`` to the CLI's subcommands."""
    render = commands.add_parser("render", help="render Kubernetes, compose or systemd files from a spec")
    render.add_argument("target", choices=RENDER_TARGETS, metavar="TARGET", help=", ".join(RENDER_TARGETS))
    render.add_argument("file", metavar="SPEC", help="spec file ('-' reads stdin)")
    render.add_argument("-o", "--output", metavar="DIR", help="write the files (and plan.json) into DIR")
    render.add_argument("--image", metavar="IMAGE",
                        help="the sidecar image (default: deploy.image, else sidegate:VERSION, to build and push)")
    render.set_defaults(run=_cmd_render)

    imp = commands.add_parser("import", help="translate another gateway's config into a spec")
    imp.add_argument("source", choices=("litellm",), metavar="FROM", help="litellm (a LiteLLM proxy config.yaml)")
    imp.add_argument("file", metavar="CONFIG", help="the config file ('-' reads stdin)")
    imp.add_argument("-o", "--output", metavar="SPEC", help="write the spec here instead of stdout")
    imp.set_defaults(run=_cmd_import)

    diff = commands.add_parser("diff", help="say what a change to a spec or plan does to routing")
    diff.add_argument("old", metavar="OLD", help="the spec or plan JSON before")
    diff.add_argument("new", metavar="NEW", help="the spec or plan JSON after")
    diff.set_defaults(run=_cmd_diff)
