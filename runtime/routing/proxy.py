"""The model call: resolve the model, then inside the request's single deadline try the group's
deployments (strategy, retries with backoff, hedging), then its fallback groups, and answer."""

from __future__ import annotations

import random
from typing import Any

import trio

from sidegate.runtime.errors import (
    BadRequest,
    GatewayError,
    ModelNotFound,
    RateLimited,
    Unavailable,
    UpstreamTimeout,
)
from sidegate.runtime.plan import Family, ModelGroup, RetryOn, RetryPolicy
from sidegate.runtime.routing.balance import choose
from sidegate.runtime.routing.breaker import FailureKind
from sidegate.runtime.routing.call import Call, estimate_tokens_off_loop
from sidegate.runtime.routing.relay import TIMEOUT_CODES, attempt, classify, stream_error
from sidegate.runtime.routing.state import Deployment, Runtime
from sidegate.runtime.upstream.tokens import prompt_tokens

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
    call.planned = sum(rt.groups[name].retry.attempts for name in queue)
    switched: set[str] = set()
    last: GatewayError | None = None
    i = 0
    while i < len(queue):
        g = rt.groups[queue[i]]
        i += 1
        call.fallback = g is not group
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
            # attempts this group did not use are left to the groups after it
            call.planned = call.attempts + sum(rt.groups[name].retry.attempts for name in queue[i:])
            chain = _chain_for(g, err)
            if chain is not None:
                if chain in switched:
                    raise
                switched.add(chain)
                queue[i:] = list(getattr(g, chain))
                call.planned = call.attempts + sum(rt.groups[name].retry.attempts for name in queue[i:])
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
    """Up to `retry.attempts` attempts on the group. When no deployment is free because upstream
    Retry-Afters keep them out, the shortest one is waited out if it is within `retry.max_retry_after`
    and the remaining deadline; otherwise the client gets the upstream's 429. A 503 only when the
    breakers of all of them are open."""
    states = [d.state for d in deps]
    tried: set[int] = set(skip)
    last: GatewayError | None = None
    n = waits = 0
    while n < g.retry.attempts:
        now = trio.current_time()
        choice = choose(
            g, states, now, _RNG, tried=frozenset(tried), tokens=tokens,
            cursor=rt.cursors[g.name], stream=call.stream, skip=skip,
        )
        if choice.index is None:
            if choice.capped:
                raise RateLimited(
                    f"every deployment of '{g.name}' is at its rpm/tpm/parallel cap",
                    retry_after=choice.retry_after, code="deployment_caps_reached",
                )
            wait = _rate_limit_wait(deps, skip, now)
            if wait is None:
                # a request that reached an upstream gets that failure; 503 when none could be tried
                raise last if last is not None else _unavailable(g, deps, skip, now)
            remaining = trio.current_effective_deadline() - now
            if wait <= g.retry.max_retry_after and wait < remaining and waits < g.retry.attempts:
                waits += 1
                await trio.sleep(wait)
                continue
            raise _rate_limited(g, deps, skip, now, wait, last)
        tried.add(choice.index)
        n += 1
        dep = deps[choice.index]
        try:
            if g.hedge_after is not None and n == 1:
                await _hedged(rt, g, deps, choice.index, suffix, call, data, send, tokens, skip)
            else:
                call.attempt_budget = _budget(call)
                call.attempts += 1
                await attempt(g, dep, _model(dep, suffix), call, data, send)
            return
        except GatewayError as err:
            kind = classify(err)
            if not call.started:
                call.deployment = dep.target.id  # named in the error's headers and log line
            if call.started or kind is None or RetryOn(kind.value) not in g.retry.on:
                raise
            last = err
        if n < g.retry.attempts and _backs_off(last):
            await trio.sleep(backoff(n - 1, g.retry, _RNG))
    assert last is not None
    raise last


def _budget(call: Call) -> float:
    """The default per-attempt deadline: what is left of the request's deadline shared among the
    attempts still planned (this group's and its fallbacks'), so the last one gets all that is left."""
    left = trio.current_effective_deadline() - trio.current_time()
    return max(0.0, left) / max(1, call.planned - call.attempts)


def _backs_off(err: GatewayError) -> bool:
    """Whether the next attempt waits a backoff: not after an attempt deadline (a hung upstream has
    already cost its time), nor after a 429 with a Retry-After (that deployment is kept out)."""
    if err.code in TIMEOUT_CODES:
        return False
    return not (isinstance(err, RateLimited) and err.retry_after is not None)


def _rate_limit_wait(deps: tuple[Deployment, ...], skip: frozenset[int], now: float) -> float | None:
    """Seconds until the first deployment kept out only by an upstream Retry-After is free again;
    None when none is (their breakers are open)."""
    waits = [d.state.breaker.wait(now) for i, d in enumerate(deps)
             if i not in skip and d.state.breaker.rate_limited(now)]
    return min(waits, default=None)


def _cause(deps: tuple[Deployment, ...], skip: frozenset[int]) -> str:
    """The most recent upstream error among the group's deployments."""
    errs = [(d.state.breaker.last_error_at or 0.0, d.target.id, d.state.breaker.last_error)
            for i, d in enumerate(deps) if i not in skip and d.state.breaker.last_error]
    if not errs:
        return "no error recorded"
    _, dep, message = max(errs)
    return f"{dep}: {message}"


def _unavailable(g: ModelGroup, deps: tuple[Deployment, ...], skip: frozenset[int], now: float) -> Unavailable:
    wait = min((d.state.breaker.wait(now) for i, d in enumerate(deps) if i not in skip), default=1.0)
    cause = _cause(deps, skip)
    return Unavailable(f"every deployment of '{g.name}' is out after failures (circuit breaker open); "
                       f"last error: {cause}", retry_after=max(wait, 1.0), code="deployments_unavailable")


def _rate_limited(g: ModelGroup, deps: tuple[Deployment, ...], skip: frozenset[int], now: float, wait: float,
                  last: GatewayError | None) -> GatewayError:
    if last is not None:  # this request's own upstream answer (a 429, or a 529 with Retry-After)
        last.retry_after = max(last.retry_after or 0.0, wait)
        return last
    kept = [d.state.breaker for i, d in enumerate(deps) if i not in skip and d.state.breaker.rate_limited(now)]
    if any(b.last_error_kind is FailureKind.RATE_LIMIT for b in kept):
        return RateLimited(f"every deployment of '{g.name}' is rate-limited by its upstream; last error: "
                           f"{_cause(deps, skip)}", retry_after=wait)
    # kept out by the Retry-After of an overloaded (529/503) answer
    return Unavailable(f"every deployment of '{g.name}' asked to be left alone for a while; last error: "
                       f"{_cause(deps, skip)}", retry_after=wait, code="deployments_unavailable")


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
        call.attempt_budget = _budget(call)
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
