"""The ASGI lifespan that `runtime.listen` drives for the h1 front (hypercorn's driver runs only with
its own front): startup before serving, shutdown after, a failed startup raises, an app without
lifespan support is served without one."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from sidegate.runtime.listen import Lifespan


def _app(log: list[str], *, fail: str = "", raises: bool = False) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan" and scope["state"] == {"k": 1}
        if raises:
            raise ValueError("no lifespan here")
        while True:
            message = await receive()
            log.append(message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": fail} if fail
                           else {"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


async def _run(app: Any) -> Lifespan:
    lifespan = Lifespan(app, {"k": 1}, 5.0, 5.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        await lifespan.wait_for_shutdown()
    return lifespan


async def test_startup_then_shutdown() -> None:
    log: list[str] = []
    lifespan = await _run(_app(log))
    assert log == ["lifespan.startup", "lifespan.shutdown"] and lifespan.supported


async def test_a_failed_startup_raises() -> None:
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="startup failed: no database"), flatten_subgroups=True):
        await _run(_app([], fail="no database"))


async def test_an_app_that_raises_on_the_lifespan_scope_is_served_without_one() -> None:
    lifespan = await _run(_app([], raises=True))
    assert not lifespan.supported


async def test_a_startup_that_never_answers_times_out() -> None:
    async def silent(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await trio.sleep_forever()

    lifespan = Lifespan(silent, {"k": 1}, 0.05, 5.0)
    with pytest.RaisesGroup(trio.TooSlowError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(lifespan.handle_lifespan)
            try:
                await lifespan.wait_for_startup()
            finally:
                nursery.cancel_scope.cancel()
