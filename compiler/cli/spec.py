"""The spec commands of the ``sidegate`` CLI: ``lint``, ``compile``, ``explain``, ``schema``,
``providers`` and ``serve``.

Heavy modules (ruamel.yaml, jsonschema, the compiler pipeline) are imported inside the commands
that need them, so ``sidegate serve --plan plan.json`` starts without loading the compiler.
Exit codes: 0 clean, 1 errors, 2 warnings under ``--strict``, 64 usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from sidegate.compiler.cli.common import compile_file, version

if TYPE_CHECKING:
    from sidegate.compiler.diagnostics import Diagnostic
    from sidegate.runtime.plan import Plan

__all__ = ["add_spec_commands"]

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)


def _print_text(diagnostics: Sequence[Diagnostic]) -> None:
    from sidegate.compiler.report import text

    sys.stderr.write(text(diagnostics))


def _cmd_lint(args: argparse.Namespace) -> int:
    """Check specs; print diagnostics in the chosen format."""
    from sidegate.compiler.report import format_diagnostics

    diagnostics = [d for path in args.files for d in compile_file(path).diagnostics]
    out = format_diagnostics(diagnostics, args.format, version=version())
    if args.format != "text" or out:
        sys.stdout.write(out)
    if any(d.is_error for d in diagnostics):
        return 1
    if args.strict and diagnostics:
        return 2
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    """Compile a spec to plan JSON."""
    from sidegate.runtime.plan.canonical import dumps

    result = compile_file(args.file)
    _print_text(result.diagnostics)
    if result.plan is None:
        return 1
    text = dumps(result.plan)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            print(f"sidegate compile: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return 1
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    """Explain how a model name is routed."""
    from sidegate.compiler.cli.explain import explain

    result = compile_file(args.file)
    _print_text(result.diagnostics)
    if result.plan is None:
        return 1
    try:
        sys.stdout.write(explain(result.plan, args.model))
    except LookupError as exc:
        print(f"sidegate explain: {exc.args[0]}", file=sys.stderr)
        return 1
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    """Print the spec's JSON Schema."""
    from sidegate.compiler.schemafile import schema_text

    sys.stdout.write(schema_text())
    return 0


def _cmd_providers(args: argparse.Namespace) -> int:
    """List the provider catalog."""
    from sidegate.compiler.data.catalog import load_catalog

    catalog = load_catalog()
    width = max(len(name) for name in catalog)
    for name, kind in catalog.items():
        base = kind.base_url or (
            "(built from region)" if kind.family.value in ("vertex", "bedrock") else "(base_url required)"
        )
        print(f"{name:<{width}}  {kind.family.value:<9}  {base}  {kind.docs}")
    return 0


def _spec_loader(path: str) -> Callable[[], Plan]:
    def load() -> Plan:
        from sidegate.compiler.report import text

        result = compile_file(path)
        if result.plan is None:
            raise ValueError(text(result.diagnostics).rstrip("\n"))
        return result.plan

    return load


def _plan_loader(path: str) -> Callable[[], Plan]:
    def load() -> Plan:
        from sidegate.runtime.plan.canonical import loads

        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ValueError(f"{path}: {exc.strerror}") from None
        return loads(data)

    return load


LISTEN_ENV = ("SIDEGATE_LISTEN", "SIDEGATE_HOST", "SIDEGATE_PORT")
"""Environment overrides of `server.listen` (below the flags, above the spec)."""


def _port(value: str, where: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise ValueError(f"{where}: '{value}' is not a port (0-65535)")
    return int(value)


def _listen_override(args: argparse.Namespace) -> tuple[str | None, int | None]:
    """(host, port) that the flags, else the environment, set (None where neither does); ValueError,
    naming the flag or variable, for a malformed value. Within one layer --host/--port beat --listen."""
    from sidegate.runtime.plan.secrets import split_listen

    host: str | None = None
    port: int | None = None
    env = [os.environ.get(name) for name in LISTEN_ENV]
    layers = (("--listen", args.listen, "--host", args.host, "--port", args.port),
              (LISTEN_ENV[0], env[0], LISTEN_ENV[1], env[1], LISTEN_ENV[2], env[2]))
    for listen_name, listen, _, one_host, port_name, one_port in layers:
        layer_host, layer_port = None, None
        if listen:
            try:
                layer_host, layer_port = split_listen(listen)
            except ValueError as exc:
                raise ValueError(f"{listen_name}: {exc}") from None
        if one_host:
            layer_host = one_host.strip("[]")
        if one_port:
            layer_port = _port(one_port, port_name)
        host = layer_host if host is None else host
        port = layer_port if port is None else port
    return host, port


def _health_override(args: argparse.Namespace) -> tuple[str, int] | None:
    """(host, port) of `--health-listen`, else SIDEGATE_HEALTH_LISTEN; None when neither is set."""
    from sidegate.runtime.plan.secrets import split_listen

    for name, value in (("--health-listen", args.health_listen), ("SIDEGATE_HEALTH_LISTEN",
                                                                  os.environ.get("SIDEGATE_HEALTH_LISTEN"))):
        if value:
            try:
                return split_listen(value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
    return None


def _with_health(load: Callable[[], Plan], health: tuple[str, int] | None) -> Callable[[], Plan]:
    if health is None:
        return load

    def load_with_health() -> Plan:
        plan = load()
        return replace(plan, server=replace(plan.server, health_host=health[0], health_port=health[1]))

    return load_with_health


def _with_listen(load: Callable[[], Plan], host: str | None, port: int | None) -> Callable[[], Plan]:
    if host is None and port is None:
        return load

    def load_with_listen() -> Plan:
        plan = load()
        server = plan.server
        if server.listen is not None and (host is None or port is None):
            from sidegate.runtime.plan.secrets import SecretError, resolve_listen

            try:
                server = resolve_listen(server)
            except SecretError as exc:
                raise ValueError(str(exc)) from None
        server = replace(server, host=host or server.host, port=server.port if port is None else port, listen=None)
        return replace(plan, server=server)

    return load_with_listen


def _looks_like_plan(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip()
    except OSError:
        return False
    return head.startswith(b"{") and b'"digest"' in head and b'"plan"' in head


def _cmd_serve(args: argparse.Namespace) -> int:
    """Compile (or load) a plan and run the sidecar on it."""
    if (args.spec is None) == (args.plan is None):
        args.parser.error("give either a SPEC or --plan PLAN.json")
    if args.workers is not None and args.workers < 1:
        args.parser.error("--workers must be at least 1")
    if args.spec is not None and _looks_like_plan(args.spec):
        args.parser.error(f"{args.spec} is a compiled plan: serve it with --plan {args.spec}")
    load_plan = _plan_loader(args.plan) if args.plan is not None else _spec_loader(args.spec)
    try:
        load_plan = _with_health(_with_listen(load_plan, *_listen_override(args)), _health_override(args))
        plan = load_plan()
    except ValueError as exc:
        print(f"sidegate serve: {exc}", file=sys.stderr)
        return 1
    from sidegate.runtime.server import run

    return run(plan, load_plan=load_plan, watch_path=args.spec or args.plan, workers=args.workers)


def add_spec_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Register lint, compile, explain, schema, providers and serve on the CLI's subcommands."""
    lint = commands.add_parser("lint", help="check specs and report problems")
    lint.add_argument("files", nargs="+", metavar="FILE", help="spec files ('-' reads stdin)")
    lint.add_argument("--format", choices=("text", "json", "github", "sarif"), default="text")
    lint.add_argument("--strict", action="store_true", help="exit 2 when there are warnings")
    lint.set_defaults(run=_cmd_lint)

    comp = commands.add_parser("compile", help="compile a spec to plan JSON")
    comp.add_argument("file", metavar="FILE", help="spec file ('-' reads stdin)")
    comp.add_argument("-o", "--output", metavar="PLAN", help="write the plan here instead of stdout")
    comp.set_defaults(run=_cmd_compile)

    expl = commands.add_parser("explain", help="show how a request for MODEL is routed")
    expl.add_argument("file", metavar="FILE", help="spec file ('-' reads stdin)")
    expl.add_argument("model", metavar="MODEL", help="the model name a client would send")
    expl.set_defaults(run=_cmd_explain)

    schema = commands.add_parser("schema", help="print the spec's JSON Schema")
    schema.set_defaults(run=_cmd_schema)

    providers = commands.add_parser("providers", help="list the provider types of the catalog")
    providers.set_defaults(run=_cmd_providers)

    serve = commands.add_parser("serve", help="run the sidecar on a spec or a compiled plan")
    serve.add_argument("spec", nargs="?", metavar="SPEC", help="spec file (compiled at start and on reload)")
    serve.add_argument("--plan", metavar="PLAN", help="a compiled plan JSON instead of a spec")
    serve.add_argument("--workers", type=int, metavar="N", help="server processes (default: the plan's)")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="listen here instead of the spec's server.listen (env: SIDEGATE_LISTEN)")
    serve.add_argument("--host", metavar="HOST", help="the listen host only (env: SIDEGATE_HOST)")
    serve.add_argument("--port", metavar="PORT", help="the listen port only (env: SIDEGATE_PORT)")
    serve.add_argument("--health-listen", metavar="HOST:PORT",
                       help="also answer the health routes here (env: SIDEGATE_HEALTH_LISTEN)")
    serve.set_defaults(run=_cmd_serve, parser=serve)
