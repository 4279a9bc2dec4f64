"""`sidegate archive SPEC`: one pass of the spend archive by hand (what a serving sidecar does once a
period): every closed period of spend rows not yet archived is written to `store.archive`'s bucket,
then rows past `keep_days` are pruned. Prints what it did as JSON; exits 1 when the pass failed."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from sidegate.runtime.plan import Plan

__all__ = ["add_archive_command"]

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)


class _StderrLog:
    """The archive's log lines, one JSON object each, on stderr."""

    def _line(self, level: str, event: str, fields: dict[str, object]) -> None:
        record = {"ts": round(time.time(), 3), "level": level, "event": event, **fields}
        print(json.dumps(record, default=str), file=sys.stderr)

    def info(self, event: str, **fields: object) -> None:
        self._line("info", event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._line("warning", event, fields)

    def error(self, event: str, **fields: object) -> None:
        self._line("error", event, fields)


def _load(args: argparse.Namespace) -> Plan | None:
    if args.plan:
        from sidegate.runtime.plan.canonical import PlanFormatError, loads

        try:
            with open(args.plan, "rb") as f:
                return loads(f.read())
        except (OSError, PlanFormatError) as exc:
            print(f"sidegate archive: {args.plan}: {exc}", file=sys.stderr)
            return None
    from sidegate.compiler.cli.common import compile_file
    from sidegate.compiler.report import text

    if not args.spec:
        print("sidegate archive: give a SPEC or --plan", file=sys.stderr)
        return None
    result = compile_file(args.spec)
    if result.plan is None:
        sys.stderr.write(text(result.diagnostics))
    return result.plan


def _run(args: argparse.Namespace) -> int:
    import trio

    from sidegate.runtime.plan.secrets import SecretError, resolve, unresolved
    from sidegate.runtime.store.archive import Archiver
    from sidegate.runtime.store.database import Store, StoreUnavailable

    plan = _load(args)
    if plan is None:
        return 1
    config = plan.store.archive
    if config is None:
        print("sidegate archive: the spec has no store.archive", file=sys.stderr)
        return 1
    problems = unresolved(plan.store)
    if problems:
        print("sidegate archive: " + "; ".join(problems), file=sys.stderr)
        return 1

    async def one_pass() -> dict[str, Any]:
        store = await Store.open(resolve(plan.store.database), wait=0.0)
        try:
            archiver = await Archiver.open(store, config, _StderrLog())
            try:
                result = await archiver.run_once()
            finally:
                await archiver.aclose()
        finally:
            await store.aclose()
        return {"archived": [{"period": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                              "object": f"s3://{config.bucket}/{key}", "rows": rows}
                             for start, key, rows in result.archived],
                "pruned": result.pruned, "error": result.error}

    try:
        summary = trio.run(one_pass)
    except (StoreUnavailable, SecretError) as exc:
        print(f"sidegate archive: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 1 if summary["error"] else 0


def add_archive_command(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add `archive`."""
    sub = commands.add_parser("archive", help="archive the closed periods of spend rows to store.archive now")
    sub.add_argument("spec", nargs="?", metavar="SPEC", help="the spec whose store and archive to use")
    sub.add_argument("--plan", metavar="PLAN", help="a compiled plan instead of a spec")
    sub.set_defaults(run=_run)
