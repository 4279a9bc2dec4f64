"""The model call: resolve the model, then inside the request's single deadline try the group's
deployments (strategy, retries with backoff, hedging), then its fallback groups, and answer."""

from __future__ import annotations

import random
from typing import Any

import trio

from runtime.errors import (
    BadRequest,
    GatewayError,
    ModelNotFound,
    RateLimited,
    Unavailable,
    UpstreamTimeout,
)
from runtime.plan import Family, ModelGroup, RetryOn, RetryPolicy
from runtime.routing.balance import choose
from runtime.routing.breaker import Circuit
from runtime.routing.call import Call, estimate_tokens_off_loop
from runtime.routing.relay import attempt, classify, stream_error
from runtime.routing.state import Deployment, Runtime
from runtime.upstream.tokens import prompt_tokens

__all__ = ["backoff", "serve_call"]

_RNG = random.Random()


def backoff(attempt_no: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Exponential backoff with jitter: base * 2^n, capped, scaled by a random factor in [0.5, 1)."""
    return float(min(policy.max_backoff, policy.backoff * (2**attempt_no)) * (0.5 + rng.random() / 2))


async def serve_call(rt: Runtime, call: Call, data: dict[str, Any], send: Any) -> None:
    """Route and answer one parsed request; raises GatewayError when nothing was sent yet."""
    call.model = data["model"]
    route = rt.routes.resolve(call.model)
    if route is None:
        raise ModelNotFound(f"model '{call.model}' is not served by this gateway", param="model")
    group = route.group
    call.group = group.name
    call.stream = data.get("stream") is True
    with trio.move_on_after(group.timeout) as deadline:
        try:
            await _route(rt, group, route.suffix, call, data, send)
        except GatewayError:
            if call.complete:
                return  # already told the client, in-stream
            raise
    if deadline.cancelled_caught:
        err = UpstreamTimeout(f"no complete answer from the upstream within {group.timeout:g}s")
        if not call.started:
            raise err
        if not call.complete:
            await stream_error(send, call, err)


def _fits(deps: tuple[Deployment, ...], prompt: int) -> frozenset[int]:
    """Deployments whose context window is too small for the estimated prompt."""
    return frozenset(
        i for i, d in enumerate(deps) if d.target.max_input_tokens is not None and prompt > d.target.max_input_tokens
    )


async def _route(
    rt: Runtime, group: ModelGroup, suffix: str | None, call: Call, data: dict[str, Any], send: Any
) -> None:
    tokens = await estimate_tokens_off_loop(data, _smallest_window(rt, group))
    if call.dialect is not None and call.stream and _translates(rt, group):
        # A translated Anthropic stream reports the prompt's tokens in message_start, before the
        # upstream's count: a real count (a worker thread: milliseconds on a long prompt).
        tokens = (await trio.to_thread.run_sync(prompt_tokens, data), tokens[1])
    call.prompt_estimate = tokens[0]
    queue: list[str] = [group.name, *group.fallbacks]
    switched: set[str] = set()
    last: GatewayError | None = None
    i = 0
    while i < len(queue):
        g = rt.groups[queue[i]]
        i += 1
        deps = rt.deployments[g.name]
        too_small = _fits(deps, tokens[0])
        try:
            if len(too_small) == len(deps):
                raise BadRequest(
                    f"the prompt (~{tokens[0]} tokens) is over the context window of every deployment of '{g.name}'",
                    code="context_length_exceeded",
                )
            await _attempts(rt, g, deps, suffix if g is group else None, call, data, send, tokens, too_small)
            return
        except GatewayError as err:
            if call.started:
                raise
            last = err
            chain = _chain_for(g, err)
            if chain is not None:
                if chain in switched:
                    raise
                switched.add(chain)
                queue[i:] = list(getattr(g, chain))
                continue
            if classify(err) is None and not isinstance(err, Unavailable | RateLimited):
                raise
    assert last is not None
    raise last


def _translates(rt: Runtime, group: ModelGroup) -> bool:
    """Whether a Messages request to `group` may be served by a target that is not Anthropic."""
    return any(d.provider.family is not Family.ANTHROPIC
               for name in (group.name, *group.fallbacks) for d in rt.deployments.get(name, ()))


def _smallest_window(rt: Runtime, group: ModelGroup) -> int | None:
    """The smallest context window among the deployments that may serve a request to `group`."""
    windows = [d.target.max_input_tokens for name in (group.name, *group.fallbacks, *group.context_window_fallbacks)
               for d in rt.deployments.get(name, ()) if d.target.max_input_tokens is not None]
    return min(windows, default=None)


def _chain_for(g: ModelGroup, err: GatewayError) -> str | None:
    if err.code == "context_length_exceeded":
        return "context_window_fallbacks"
    if err.code == "content_policy_violation":
        return "content_policy_fallbacks"
    return None


async def _attempts(
    rt: Runtime,
    g: ModelGroup,
    deps: tuple[Deployment, ...],
    suffix: str | None,
    call: Call,
    data: dict[str, Any],
    send: Any,
    tokens: tuple[int, int],
    skip: frozenset[int],
) -> None:
    states = [d.state for d in deps]
    tried: set[int] = set(skip)
    last: GatewayError | None = None
    for n in range(g.retry.attempts):
        choice = choose(
            g, states, trio.current_time(), _RNG, tried=frozenset(tried), tokens=tokens,
            cursor=rt.cursors[g.name], stream=call.stream, skip=skip,
        )
        if choice.index is None:
            if choice.capped:
                raise RateLimited(
                    f"every deployment of '{g.name}' is at its rpm/tpm/parallel cap",
                    retry_after=choice.retry_after, code="deployment_caps_reached",
                )
            raise Unavailable(f"every deployment of '{g.name}' is cooling down after failures",
                              retry_after=choice.retry_after)
        tried.add(choice.index)
        try:
            if g.hedge_after is not None and n == 0:
                await _hedged(rt, g, deps, choice.index, suffix, call, data, send, tokens, skip)
            else:
                call.attempts += 1
                await attempt(g, deps[choice.index], _model(deps[choice.index], suffix), call, data, send)
            return
        except GatewayError as err:
            kind = classify(err)
            if call.started or kind is None or RetryOn(kind.value) not in g.retry.on:
                raise
            last = err
        if n + 1 < g.retry.attempts:
            await trio.sleep(backoff(n, g.retry, _RNG))
    assert last is not None
    if all(d.state.breaker.circuit is Circuit.OPEN for d in deps):
        wait = min(d.state.breaker.wait(trio.current_time()) for d in deps)
        raise Unavailable(f"every deployment of '{g.name}' failed and is cooling down ({last.message})",
                          retry_after=wait)
    raise last


def _model(dep: Deployment, suffix: str | None) -> str:
    return suffix if dep.target.model == "*" and suffix else dep.target.model


async def _hedged(
    rt: Runtime,
    g: ModelGroup,
    deps: tuple[Deployment, ...],
    first: int,
    suffix: str | None,
    call: Call,
    data: dict[str, Any],
    send: Any,
    tokens: tuple[int, int],
    skip: frozenset[int],
) -> None:
    """Run `first`; if it has sent nothing after `hedge_after`, race a second deployment. The first
    to reach its first byte answers; the other is cancelled."""
    assert g.hedge_after is not None
    scopes: list[trio.CancelScope] = []
    winner: list[trio.CancelScope] = []
    errors: list[GatewayError] = []
    late: list[GatewayError] = []
    settled = trio.Event()

    def claim(scope: trio.CancelScope) -> bool:
        if not winner:
            winner.append(scope)
            settled.set()
            for other in scopes:
                if other is not scope:
                    other.cancel()
        return winner[0] is scope

    async def run(dep: Deployment) -> None:
        scope = trio.CancelScope()
        scopes.append(scope)
        call.attempts += 1
        with scope:
            try:
                await attempt(g, dep, _model(dep, suffix), call, data, send, claim=lambda: claim(scope))
            except GatewayError as err:
                if winner and winner[0] is scope:
                    late.append(err)  # the winner failed mid-stream: already told the client
                    return
                errors.append(err)
                if len(errors) == len(scopes):
                    settled.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, deps[first])
        with trio.move_on_after(g.hedge_after):
            await settled.wait()
        if not settled.is_set():
            states = [d.state for d in deps]
            second = choose(g, states, trio.current_time(), _RNG, tried=frozenset({first}), tokens=tokens,
                            cursor=rt.cursors[g.name], stream=call.stream, skip=skip | {first})
            if second.index is not None:
                nursery.start_soon(run, deps[second.index])
    if late:
        raise late[0]
    if not winner:
        raise errors[-1]
