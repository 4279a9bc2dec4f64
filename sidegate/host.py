"""The runtime thread: the Trio loop a `Gateway` owns, hosting the sidecar's app without a listener
(`runtime.server.hosted`), and the bridges that run a coroutine in it for each kind of caller.

- plain code blocks on a `concurrent.futures.Future`;
- asyncio awaits `asyncio.wrap_future` of it (the asyncio loop is never blocked);
- Trio awaits a `trio.Event` the future's callback sets through the caller's own Trio token.

Work is handed over with `TrioToken.run_sync_soon` (thread-safe, never blocking), so none of the
three blocks the runtime thread or the caller's loop. A caller cancelled while waiting (asyncio
task cancelled, Trio cancel scope, Ctrl-C) cancels its job in the runtime thread, and so the
upstream call, as a client hanging up would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import sniffio
import trio

from sidegate.errors import ServiceUnavailable
from sidegate.runtime.http.app import App
from sidegate.runtime.plan import Plan
from sidegate.runtime.server import hosted

__all__ = ["Host", "Job"]

T = TypeVar("T")


class Closed(ServiceUnavailable):
    """The gateway was closed while the call was running, or before it started."""


class Job(Generic[T]):
    """One coroutine running in the runtime thread; `future` holds its outcome."""

    def __init__(self, host: Host) -> None:
        self.future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._host = host
        self._scope: trio.CancelScope | None = None
        self._cancelled = False

    def cancel(self) -> None:
        """Cancel it in the runtime thread (from any thread)."""
        with contextlib.suppress(trio.RunFinishedError):
            self._host.token.run_sync_soon(self._cancel_now)

    def _cancel_now(self) -> None:
        self._cancelled = True
        if self._scope is not None:
            self._scope.cancel()

    def wait(self) -> T:
        """Block until done (plain code; never from the runtime thread)."""
        try:
            return self.future.result()
        except KeyboardInterrupt:
            self.cancel()
            raise

    async def wait_async(self) -> T:
        """Await it from asyncio or Trio, whichever runs the caller."""
        if sniffio.current_async_library() == "trio":
            return await self._wait_trio()
        try:
            return await asyncio.wrap_future(self.future)
        except asyncio.CancelledError:
            self.cancel()
            raise

    async def _wait_trio(self) -> T:
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        self.future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            self.cancel()
            raise
        return self.future.result()


class Host:
    """A daemon thread running `trio.run`: the app, its store, spend writer, A2A and MCP upstreams,
    and the calls' tasks in one nursery."""

    def __init__(self, plan: Plan, *, name: str = "sidegate-runtime") -> None:
        self._plan = plan
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self.app: App
        self.token: trio.lowlevel.TrioToken
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failed is not None:
            self._thread.join()
            raise self._failed

    def _main(self) -> None:
        try:
            trio.run(self._run)
        except BaseException as exc:
            if not self._ready.is_set():
                self._failed = _unwrap(exc)
                self._ready.set()

    async def _run(self) -> None:
        async with hosted(self._plan) as app, trio.open_nursery() as nursery:
            self.app = app
            self.token = trio.lowlevel.current_trio_token()
            self._nursery = nursery
            self._stop = trio.Event()
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()  # calls still running end as `Closed`

    def submit(self, fn: Callable[..., Awaitable[T]], *args: Any) -> Job[T]:
        """Run `await fn(*args)` in the runtime thread."""
        job: Job[T] = Job(self)
        try:
            self.token.run_sync_soon(self._spawn, job, fn, args)
        except trio.RunFinishedError:
            raise Closed("the gateway is closed", status=503, code="gateway_closed") from None
        return job

    def _spawn(self, job: Job[T], fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> None:
        if self._nursery is None or self._stop is None or self._stop.is_set():
            job.future.set_exception(Closed("the gateway is closed", status=503, code="gateway_closed"))
            return
        self._nursery.start_soon(self._runner, job, fn, args)

    @property
    def nursery(self) -> trio.Nursery:
        """The calls' nursery (in the runtime thread only)."""
        assert self._nursery is not None
        return self._nursery

    async def _runner(self, job: Job[T], fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> None:
        if not job.future.set_running_or_notify_cancel():
            return  # cancelled (asyncio's wrap_future) before it started
        with trio.CancelScope() as scope:
            job._scope = scope
            if job._cancelled:
                scope.cancel()
            try:
                result = await fn(*args)
            except trio.Cancelled:
                job.future.set_exception(Closed("the call was cancelled (or the gateway closed)", status=503,
                                                code="gateway_closed"))
                raise
            except BaseException as exc:
                job.future.set_exception(_unwrap(exc))
                return
            job.future.set_result(result)
        if not job.future.done():
            job.future.set_exception(Closed("the call was cancelled", status=503, code="gateway_closed"))

    def close(self) -> None:
        """Stop: running calls are cancelled, queued spend rows written, the store closed. Idempotent;
        blocks until the runtime thread has ended."""
        if self._thread is threading.current_thread():
            raise RuntimeError("Gateway.close() called from its own runtime thread")
        if self._thread.is_alive() and self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(self._stop.set)
        self._thread.join()


def _unwrap(exc: BaseException) -> BaseException:
    """The one exception a group holds (a nursery's), else the exception itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
