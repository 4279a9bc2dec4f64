"""The spec commands of the ``sidegate`` CLI: ``lint``, ``compile``, ``explain``, ``schema``,
``providers`` and ``serve``.

Heavy modules (ruamel.yaml, jsonschema, the compiler pipeline) are imported inside the commands
that need them, so ``sidegate serve --plan plan.json`` starts without loading the compiler, and
``sidegate serve SPEC`` compiles in a child process (:class:`_SpecLoader`): no serving process holds it.
Exit codes: 0 clean, 1 errors, 2 warnings under ``--strict``, 64 usage errors.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
import threading
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


class _SpecLoader:
    """Compiles the spec in a child process and loads the plan JSON it hands back, so a serving
    process never imports the compiler (ruamel.yaml, jsonschema, the pipeline: ~6 MB of every worker
    for good). The first compile starts at once and runs while the caller imports the runtime. While
    the process has one thread (at start) the child is a fork that has already imported what the
    compiler shares with the runtime, so a single core does no import twice; later (a reload, with
    the runtime's threads running) it is a new `sidegate compile SPEC` process."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._started: _Compile | None = _Compile(path)

    def cancel(self) -> None:
        """Stop a started compile that will not be waited for."""
        if self._started is not None:
            self._started.cancel()
            self._started = None

    def __call__(self) -> Plan:
        """The compiled plan; ValueError with the diagnostics when the spec does not compile."""
        from sidegate.runtime.plan.canonical import loads

        child, self._started = self._started or _Compile(self.path), None
        ok, out = child.result()
        if not ok:
            raise ValueError(out.decode("utf-8", "replace").rstrip("\n")
                             or f"{self.path}: the compiler process failed")
        return loads(out)


class _Compile:
    """One compile of `path` in a child process: a fork while the process has a single thread, else
    `python -m sidegate.compiler.cli compile`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0
        self._fd = -1
        if threading.active_count() == 1 and hasattr(os, "fork"):
            self._fork()
        else:
            # The child imports this very `sidegate` (a checkout or a test's path, not another install).
            root = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["sidegate"].__file__ or "")))
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
            self._proc = subprocess.Popen([sys.executable, "-m", "sidegate.compiler.cli", "compile", path],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def _fork(self) -> None:
        # What the compiler shares with the runtime, imported once before the fork (the parent needs
        # it; trio brings attrs, which jsonschema uses too).
        import decimal  # noqa: F401
        import difflib  # noqa: F401

        import trio  # noqa: F401

        import sidegate.runtime.errors
        import sidegate.runtime.plan.canonical
        import sidegate.runtime.plan.secrets
        import sidegate.runtime.routing.routes
        import sidegate.runtime.upstream.providers  # noqa: F401

        read, write = os.pipe()
        gc.freeze()  # what exists now stays out of collections while both processes run (no copy-on-write of it)
        pid = os.fork()
        if pid == 0:  # the child: compile, write b"P" + the plan JSON or b"E" + the diagnostics, exit
            os.close(read)
            try:
                payload = _compiled(self.path)
                with os.fdopen(write, "wb") as pipe:
                    pipe.write(payload)
            finally:
                os._exit(0)
        os.close(write)
        self._pid, self._fd = pid, read

    def result(self) -> tuple[bool, bytes]:
        """(True, the plan JSON) or (False, the diagnostics text)."""
        if self._proc is not None:
            out, err = self._proc.communicate()
            return (True, out) if self._proc.returncode == 0 else (False, err)
        chunks = []
        while chunk := os.read(self._fd, 1 << 16):
            chunks.append(chunk)
        self._reap()
        gc.unfreeze()
        data = b"".join(chunks)
        return data[:1] == b"P", data[1:]

    def cancel(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.communicate()
        elif self._pid:
            os.kill(self._pid, signal.SIGKILL)
            self._reap()
            gc.unfreeze()

    def _reap(self) -> None:
        os.close(self._fd)
        os.waitpid(self._pid, 0)
        self._pid = 0


def _compiled(path: str) -> bytes:
    """What a forked compile hands back: b"P" and the plan JSON, or b"E" and the diagnostics (or the
    traceback of a compiler that failed)."""
    try:
        from sidegate.compiler.report import text
        from sidegate.runtime.plan.canonical import dumps

        result = compile_file(path)
        if result.plan is None:
            return b"E" + text(result.diagnostics).encode()
        return b"P" + dumps(result.plan).encode()
    except BaseException:
        import traceback

        return b"E" + traceback.format_exc().encode()


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
    spec = _SpecLoader(args.spec) if args.spec is not None else None
    load_plan = _plan_loader(args.plan) if spec is None else spec
    try:
        load_plan = _with_health(_with_listen(load_plan, *_listen_override(args)), _health_override(args))
        from sidegate.runtime.server import run  # imported while the spec compiles

        plan = load_plan()
    except ValueError as exc:
        print(f"sidegate serve: {exc}", file=sys.stderr)
        return 1
    finally:
        if spec is not None:
            spec.cancel()  # (a no-op once the compile was read)
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
