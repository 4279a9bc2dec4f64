"""Serving a plan: the process's root nursery (hypercorn, reload watcher, log writer), signals,
graceful drain, and `--workers N` as N processes sharing the port through SO_REUSEPORT."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config

from sidegate.runtime.http.app import App
from sidegate.runtime.listen import connection_budget, serve_http
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.observe.metrics import Metrics
from sidegate.runtime.plan import Plan
from sidegate.runtime.plan.secrets import SecretError, resolve, resolve_listen, unresolved
from sidegate.runtime.routing.prober import run_probes
from sidegate.runtime.routing.state import Runtime, build_runtime
from sidegate.runtime.store.archive import Archiver
from sidegate.runtime.store.database import Store, StoreUnavailable
from sidegate.runtime.upstream.h11pool import H11Transport
from sidegate.runtime.upstream.transport import HttpxTransport, Transport

if TYPE_CHECKING:
    from sidegate.runtime.observe.telemetry import Telemetry

__all__ = ["Handle", "hosted", "run", "serve", "upstream_transport"]

_WORKER_ENV = "SIDEGATE_WORKER"


@dataclass
class Handle:
    """What `serve` hands its starter: the app, where it listens, and controls for tests."""

    app: App
    port: int
    shutdown: trio.Event
    reload: Callable[[], trio.Event]
    """Ask for a reload; the returned event is set when it has been tried."""


def _listening(plan: Plan) -> Plan:
    """The plan with a referenced `server.listen` resolved (itself when there is none)."""
    return plan if plan.server.listen is None else replace(plan, server=resolve_listen(plan.server))


def upstream_transport() -> Transport:
    """The upstream client: the h11 keep-alive pool, or httpx with SIDEGATE_TRANSPORT=httpx
    (kept for comparison in the benchmark)."""
    if os.environ.get("SIDEGATE_TRANSPORT") == "httpx":
        return HttpxTransport()
    return H11Transport()


def _socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def serve(
    plan: Plan,
    *,
    load_plan: Callable[[], Plan],
    watch_path: str | None,
    reuse_port: bool = False,
    handle_signals: bool = True,
    poll_interval: float = 1.0,
    port: int | None = None,
    freeze_heap: bool = False,
    task_status: trio.TaskStatus[Handle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `plan` until shut down (SIGTERM/SIGINT or `Handle.shutdown`), then drain and return.

    `freeze_heap` (the sidecar's own process, not a test's): see `_freeze_heap`, at start and after
    each reload."""
    plan = _listening(plan)
    logger = Logger(plan.observability.logs)
    metrics = Metrics()
    transport = upstream_transport()
    runtime = await trio.to_thread.run_sync(build_runtime, plan, transport)
    telemetry = await _telemetry(plan, runtime, logger, metrics)
    app = App(runtime, logger, metrics, telemetry)
    config = Config()
    config.graceful_timeout = plan.server.drain_timeout
    config.accesslog = None
    config.loglevel = "WARNING"
    config.keep_alive_timeout = plan.server.keep_alive
    config.h11_max_incomplete_size = plan.server.max_header_size
    config.websocket_max_message_size = plan.realtime.max_message
    sock = _socket(plan.server.host, plan.server.port if port is None else port, reuse_port)
    bound_port = sock.getsockname()[1]
    socks = [sock]
    if plan.server.health_host is not None and plan.server.health_port is not None:
        health = _socket(plan.server.health_host, plan.server.health_port, reuse_port)
        socks.append(health)
        app.health_port = health.getsockname()[1]
    shutdown = trio.Event()
    app.mcp_endpoint.closing = shutdown  # sessions' MCP event streams end when the drain starts
    app.realtime.closing = shutdown  # realtime sessions close with 1001 when the drain starts
    reload_requests: list[trio.Event] = []
    wake = trio.Event()

    def ask_reload() -> trio.Event:
        nonlocal wake
        done = trio.Event()
        reload_requests.append(done)
        wake.set()
        return done

    async def do_reload() -> None:
        try:
            new_plan = await trio.to_thread.run_sync(load_plan)
            new_plan = _listening(new_plan)
            new_rt = await trio.to_thread.run_sync(build_runtime, new_plan, transport, app.runtime)
        except (ValueError, SecretError, OSError) as exc:
            metrics.reload_failures.inc()
            logger.error("reload_failed", error=str(exc), serving=app.runtime.digest)
            return
        if (new_plan.server.host, new_plan.server.port) != (plan.server.host, plan.server.port):
            logger.warning("reload_listen_ignored", detail="a new listen address needs a restart")
        if new_plan.observability.tracing != plan.observability.tracing:
            logger.warning("reload_tracing_ignored", detail="a changed observability.tracing needs a restart")
        if new_rt.digest != app.runtime.digest:
            app.swap(new_rt)
            metrics.reloads.inc()
            logger.info("reloaded", digest=new_rt.digest)
            if freeze_heap:
                _freeze_heap()

    async def reloader() -> None:
        nonlocal wake
        while True:
            await wake.wait()
            wake = trio.Event()
            pending, reload_requests[:] = list(reload_requests), []
            await do_reload()
            for done in pending:
                done.set()

    async def watch_file(path: str) -> None:
        last = await _mtime(path)
        while True:
            await trio.sleep(poll_interval)
            now = await _mtime(path)
            if now != last:
                last = now
                ask_reload()

    async def signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as received:
            async for signum in received:
                if signum == signal.SIGHUP:
                    ask_reload()
                else:
                    logger.info("draining", signal=signal.Signals(signum).name, timeout=plan.server.drain_timeout)
                    shutdown.set()

    async with trio.open_nursery() as nursery:
        if handle_signals:
            nursery.start_soon(signals)
        await _start_beside(app, plan, nursery)

        async def run_server(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await serve_http(
                app,
                config,
                socks,
                max_connections=connection_budget(plan.server.max_connections),
                warn=logger.warning,
                shutdown_trigger=shutdown.wait,
                task_status=task_status,
            )
            nursery.cancel_scope.cancel()

        await nursery.start(run_server)
        if freeze_heap:
            _freeze_heap()
        nursery.start_soon(reloader)
        nursery.start_soon(run_probes, lambda: app.runtime, app.logger.warning)
        if telemetry is not None:
            nursery.start_soon(telemetry.run, logger.warning)
        if watch_path is not None:
            nursery.start_soon(watch_file, watch_path)
        logger.info(
            "started",
            listen=f"{plan.server.host}:{bound_port}",
            **({"health_listen": f"{plan.server.health_host}:{app.health_port}"} if app.health_port else {}),
            plan=runtime.digest,
            pid=os.getpid(),
            models=len(plan.models),
        )
        task_status.started(Handle(app, bound_port, shutdown, ask_reload))
    await app.cache.aclose()
    if app.store is not None:
        await app.store.aclose()
    await transport.aclose()
    if telemetry is not None:  # what is still queued, within a bounded time (a collector down costs no more)
        with trio.move_on_after(6.0):
            await trio.to_thread.run_sync(telemetry.shutdown, min(5.0, plan.server.drain_timeout),
                                          abandon_on_cancel=True)
    logger.info("stopped")
    logger.flush_nowait()


FULL_COLLECTION_EVERY = 100
"""Second-generation collections per full one in the sidecar's process (CPython's default: 10)."""


def _freeze_heap() -> None:
    """Move what exists now (modules, the plan, the runtime: ~50k objects) out of the cyclic
    collector's reach, after one collection of what is garbage already; and make full collections
    rarer (one per 100 second-generation ones, not 10).

    With 1,000 paced streams open, full collections (two in 3 s) walked the start-up heap and every
    open stream's ~110 objects: pauses of 97-107 ms, then, with the start-up heap frozen, 30-40 ms,
    each a stall of every stream (the relay delay's p99). They found almost nothing: what a request
    leaves behind is freed by reference counting or dies young (`Answer` lets its parser go). After
    a reload the old runtime is collected, then the new one frozen (`gc.unfreeze` first, so frozen
    garbage of the old plan does not stay). That one full collection is a pause of the event loop
    (~15 ms at start on the quickstart plan), once at start and once per reload."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


async def _telemetry(plan: Plan, runtime: Runtime, logger: Logger, metrics: Metrics) -> Telemetry | None:
    """OpenTelemetry for `observability.tracing` (imported only then; `OTEL_SDK_DISABLED=true` turns it off)."""
    tracing = plan.observability.tracing
    if tracing is None or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    from sidegate.runtime.observe.telemetry import Telemetry

    telemetry = await trio.to_thread.run_sync(Telemetry, tracing, dict(runtime.otlp_headers), metrics)
    if tracing.logs:
        logger.export = telemetry.emit_log
    return telemetry


async def _start_beside(app: App, plan: Plan, nursery: trio.Nursery) -> None:
    """Start what runs beside the app in `serve` and `hosted`: the log writer, the store with the
    spend writer and key refresh, the spend archive, the response cache's background work, the A2A registry and the
    MCP hub."""
    nursery.start_soon(app.logger.run)
    store = await Store.open(await trio.to_thread.run_sync(resolve, plan.store.database))
    await app.access.attach(store)
    app.store = store
    nursery.start_soon(app.access.run, store)
    if plan.store.archive is not None:  # the spend archive (store.archive): docs/archive.md
        nursery.start_soon((await Archiver.open(store, plan.store.archive, app.logger)).run)
    nursery.start_soon(app.cache.run)
    await nursery.start(app.a2a.run)
    nursery.start_soon(app.mcp.run)


@asynccontextmanager
async def hosted(plan: Plan) -> AsyncIterator[App]:
    """The app and everything `serve` starts beside it (store, spend writer, A2A, MCP, health
    prober), without a listener: the in-process library (`sidegate.Gateway`) calls it with ASGI
    scopes. Leaving drains the spend rows (the writer's last flush), then closes the store."""
    plan = _listening(plan)
    logger = Logger(plan.observability.logs)
    transport = upstream_transport()
    runtime = await trio.to_thread.run_sync(build_runtime, plan, transport)
    app = App(runtime, logger, Metrics())
    try:
        async with trio.open_nursery() as nursery:
            await _start_beside(app, plan, nursery)
            nursery.start_soon(run_probes, lambda: app.runtime, app.logger.warning)
            try:
                yield app
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await app.cache.aclose()
            if app.store is not None:
                await app.store.aclose()
            await transport.aclose()
        logger.flush_nowait()


async def _mtime(path: str) -> float | None:
    try:
        return (await trio.Path(path).stat()).st_mtime
    except OSError:
        return None


def run(plan: Plan, *, load_plan: Callable[[], Plan], watch_path: str | None, workers: int | None) -> int:
    """Serve until signalled; with several workers, start one process per worker and wait."""
    problems = unresolved(plan)
    if problems:  # every missing reference at once, printed once (workers are started only after)
        lines = "".join(f"\n  - {p}" for p in problems)
        print(f"sidegate: cannot start: {len(problems)} secret reference(s) cannot be resolved:{lines}",
              file=sys.stderr)
        return 1
    try:
        plan = _listening(plan)
    except SecretError as exc:
        print(f"sidegate: cannot start: {exc}", file=sys.stderr)
        return 1
    n = workers or plan.server.workers
    if n > 1 and os.environ.get(_WORKER_ENV) is None:
        return _supervise(n)
    try:
        trio.run(
            partial(serve, plan, load_plan=load_plan, watch_path=watch_path, reuse_port=n > 1 or _is_worker(),
                    freeze_heap=True)
        )
    except SecretError as exc:
        print(f"sidegate: cannot start: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        unavailable, rest = group.split(StoreUnavailable)
        if unavailable is None or rest is not None:
            raise
        print(f"sidegate: cannot start: {unavailable.exceptions[0]}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"sidegate: cannot listen on {plan.server.host}:{plan.server.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def _is_worker() -> bool:
    return os.environ.get(_WORKER_ENV) is not None


def _supervise(n: int) -> int:
    """Run `n` copies of this command as workers; forward signals; exit when all have. A worker that
    fails (it could not start: its store, its port) stops the others, so the sidecar exits with its
    status instead of running short of workers."""
    env = {**os.environ, _WORKER_ENV: "1"}
    argv = [sys.executable, sys.argv[0], *sys.argv[1:]]
    children = {child.pid: child for child in (subprocess.Popen(argv, env=env) for _ in range(n))}
    running = set(children)

    def forward(signum: int, _frame: object) -> None:
        for pid in running:
            children[pid].send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    worst = 0
    while running:
        pid, status = os.wait()
        if pid not in running:
            continue
        running.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        children[pid].returncode = code
        if code != 0 and worst == 0:
            forward(signal.SIGTERM, None)
        worst = max(worst, code)
    return worst
