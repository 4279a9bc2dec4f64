"""Active health probes: for each provider with `health`, a cheap request (GET {base_url}/models)
every interval. A failed probe counts as a failure of every deployment of that provider; a good one
closes their breakers. One task serves all providers and follows reloads."""

from __future__ import annotations

from collections.abc import Callable

import trio

from sidegate.runtime.errors import GatewayError
from sidegate.runtime.plan import Family, HealthProbe
from sidegate.runtime.routing.breaker import Circuit, FailureKind
from sidegate.runtime.routing.state import Deployment, Runtime
from sidegate.runtime.upstream.headers import redacted_url
from sidegate.runtime.upstream.transport import UpstreamRequest

__all__ = ["probe", "run_probes"]


def _probe_url(dep: Deployment) -> str:
    p = dep.provider
    if p.family is Family.AZURE:
        return f"{p.base_url}/openai/models?api-version={p.api_version}"
    return f"{p.base_url}/models"


async def probe(dep: Deployment, health: HealthProbe) -> str | None:
    """One probe of `dep`'s provider: None when it answered 2xx within the probe's timeout, else why not."""
    limit = health.timeout
    request = UpstreamRequest("GET", _probe_url(dep), dep.headers, b"", min(limit, dep.provider.connect_timeout))
    with trio.move_on_after(limit):
        try:
            response = await dep.transport.send(request)
        except GatewayError as err:
            return err.message
        return None if 200 <= response.status < 300 else f"health probe answered HTTP {response.status}"
    return f"no answer to the health probe within {limit:g}s"


async def _probe_provider(rt: Runtime, name: str, health: HealthProbe, log: Callable[..., None] | None) -> None:
    deps = [d for ds in rt.deployments.values() for d in ds if d.provider.name == name]
    if not deps:
        return
    why = await probe(deps[0], health)
    now = trio.current_time()
    if why is not None and log is not None:
        log("health_probe_failed", provider=name, url=redacted_url(_probe_url(deps[0])), error=why,
            deployments=[f"{d.group.name}:{d.target.id}" for d in deps])
    for d in deps:
        if why is None:
            if d.state.breaker.circuit is not Circuit.CLOSED:
                d.state.breaker.success(now, d.group.cooldown)
        else:
            d.state.breaker.failure(now, FailureKind.CONNECT, d.group.cooldown, error=why,
                                    last=d.last_available(now))


async def run_probes(current: Callable[[], Runtime], log: Callable[..., None] | None = None) -> None:
    """Probe every provider that asks for it, on its own interval, until cancelled; failed probes
    are logged through `log` (a warning line each)."""
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
                    nursery.start_soon(_probe_provider, rt, name, health, log)
        nearest = min(due.values(), default=now + 1.0)
        await trio.sleep(min(1.0, max(0.01, nearest - trio.current_time())))
