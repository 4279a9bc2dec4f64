"""Active health probes: for each provider with `health`, a cheap request (GET {base_url}/models)
every interval. A failed probe counts as a failure of every deployment of that provider; a good one
closes their breakers. One task serves all providers and follows reloads."""

from __future__ import annotations

from collections.abc import Callable

import trio

from runtime.errors import GatewayError
from runtime.plan import Family, HealthProbe
from runtime.routing.breaker import Circuit, FailureKind
from runtime.routing.state import Deployment, Runtime
from runtime.upstream.transport import UpstreamRequest

__all__ = ["probe", "run_probes"]


def _probe_url(dep: Deployment) -> str:
    p = dep.provider
    if p.family is Family.AZURE:
        return f"{p.base_url}/openai/models?api-version={p.api_version}"
    return f"{p.base_url}/models"


async def probe(dep: Deployment, health: HealthProbe) -> bool:
    """One probe of `dep`'s provider: True when it answered 2xx within the probe's timeout."""
    limit = health.timeout
    request = UpstreamRequest("GET", _probe_url(dep), dep.headers, b"", min(limit, dep.provider.connect_timeout))
    with trio.move_on_after(limit):
        try:
            response = await dep.transport.send(request)
        except GatewayError:
            return False
        return 200 <= response.status < 300
    return False


async def _probe_provider(rt: Runtime, name: str, health: HealthProbe) -> None:
    deps = [d for ds in rt.deployments.values() for d in ds if d.provider.name == name]
    if not deps:
        return
    ok = await probe(deps[0], health)
    now = trio.current_time()
    for d in deps:
        if ok:
            if d.state.breaker.circuit is not Circuit.CLOSED:
                d.state.breaker.success(now, d.group.cooldown)
        else:
            d.state.breaker.failure(now, FailureKind.CONNECT, d.group.cooldown)


async def run_probes(current: Callable[[], Runtime]) -> None:
    """Probe every provider that asks for it, on its own interval, until cancelled."""
    due: dict[str, float] = {}
    while True:
        rt = current()
        now = trio.current_time()
        wanted = {p.name: p.health for p in rt.plan.providers if p.health is not None}
        for name in list(due):
            if name not in wanted:
                del due[name]
        for name, health in wanted.items():
            due.setdefault(name, now + health.interval)
        ready = [name for name, at in due.items() if at <= now]
        if ready:
            async with trio.open_nursery() as nursery:
                for name in ready:
                    health = wanted[name]
                    due[name] = now + health.interval
                    nursery.start_soon(_probe_provider, rt, name, health)
        nearest = min(due.values(), default=now + 1.0)
        await trio.sleep(min(1.0, max(0.01, nearest - trio.current_time())))
