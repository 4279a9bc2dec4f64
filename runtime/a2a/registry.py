"""The agents a plan declares and what sidegate knows about them: the last good card (kept with
its ETag and revalidated with If-None-Match), health, and the refresh loop that fetches each card
on its interval, or with backoff while the agent is down. The registry outlives plan reloads: an
agent whose declaration did not change keeps its card and health."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
import trio

from sidegate.runtime.a2a.card import Card, CardError, parse_card
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.plan import A2AAgent

__all__ = ["AgentState", "Registry"]

_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 60.0
_CARD_LIMIT = 1 << 20


@dataclass(eq=False)
class AgentState:
    """One agent: its declaration, resolved auth headers, card and health."""

    agent: A2AAgent
    headers: tuple[tuple[str, str], ...]
    card: Card | None = None
    etag: str | None = None
    healthy: bool = False
    error: str | None = "card not fetched yet"
    failures: int = 0
    """Consecutive failed fetches (drives the backoff)."""
    checked_at: float | None = None
    next_fetch: float = -math.inf
    served: dict[str, bytes] = field(default_factory=dict)
    """Rewritten card bodies by public base URL (dropped when the card changes)."""
    tried: trio.Event = field(default_factory=trio.Event)
    """Set once the first card fetch has finished, either way."""

    async def first_card(self) -> Card | None:
        """The card, waiting (within the agent's timeout) for the first fetch when it is still running."""
        if self.card is None and not self.tried.is_set():
            with trio.move_on_after(self.agent.timeout):
                await self.tried.wait()
        return self.card

    def mark_down(self, reason: str, now: float) -> None:
        """Record a failure (a card fetch, or a call that could not reach the agent)."""
        self.healthy, self.error = False, reason
        self.failures += 1
        self.checked_at = now
        backoff = min(_BACKOFF_FIRST * 2 ** (self.failures - 1), self.agent.refresh, _BACKOFF_MAX)
        self.next_fetch = now + backoff

    def mark_up(self, now: float) -> None:
        """Record a success."""
        self.healthy, self.error, self.failures, self.checked_at = True, None, 0, now

    def report(self, now: float) -> dict[str, object]:
        """Health detail for `/health/ready` and `GET /a2a/agents`."""
        return {
            "healthy": self.healthy,
            "error": self.error,
            "failures": self.failures,
            "checked_ago": None if self.checked_at is None else round(now - self.checked_at, 3),
            "next_check_in": round(max(0.0, self.next_fetch - now), 3) if self.next_fetch > -math.inf else 0.0,
        }


class Registry:
    """Agent name -> state, and the card refresh loop."""

    def __init__(self, logger: Logger) -> None:
        self.logger = logger
        self.agents: dict[str, AgentState] = {}
        self._wake = trio.Event()

    def configure(self, agents: tuple[A2AAgent, ...], headers: Mapping[str, tuple[tuple[str, str], ...]]) -> None:
        """Serve a (re)loaded plan's agents; unchanged ones keep their card and health."""
        new: dict[str, AgentState] = {}
        for agent in agents:
            old = self.agents.get(agent.name)
            h = headers.get(agent.name, ())
            if old is not None and old.agent == agent and old.headers == h:
                new[agent.name] = old
            else:
                new[agent.name] = AgentState(agent, h)
        self.agents = new
        self._wake.set()

    async def until_agents(self) -> None:
        """Return once the plan served has agents (at once when it has)."""
        while not self.agents:
            self._wake = trio.Event()
            await self._wake.wait()

    def call_failed(self, state: AgentState, reason: str) -> None:
        """A relayed call could not reach the agent: mark it down and re-check its card soon."""
        if state.healthy:
            self.logger.warning("a2a_agent_down", agent=state.agent.name, error=reason)
        state.mark_down(reason, trio.current_time())
        self._wake.set()

    async def fetch(self, state: AgentState, client: httpx.AsyncClient) -> None:
        """Fetch one card (conditionally when one is cached) and record the outcome."""
        agent = state.agent
        headers = dict(state.headers)
        headers["accept"] = "application/json"
        if state.etag is not None and state.card is not None:
            headers["if-none-match"] = state.etag
        reason: str | None = None
        try:
            with trio.fail_after(agent.timeout):
                async with client.stream("GET", agent.card_url, headers=headers, timeout=_timeout(agent)) as resp:
                    body = b""
                    if resp.status_code == 200:
                        async for chunk in resp.aiter_bytes():
                            body += chunk
                            if len(body) > _CARD_LIMIT:
                                raise CardError("the card is larger than 1 MiB")
        except trio.TooSlowError:
            reason = f"card fetch timed out after {agent.timeout:g}s"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            reason = f"card fetch failed: {type(exc).__name__}"
        except CardError as exc:
            reason = f"invalid card: {exc}"
        now = trio.current_time()
        if reason is None and resp.status_code == 304 and state.card is not None:
            pass
        elif reason is None and resp.status_code == 200:
            try:
                card = parse_card(body)
            except CardError as exc:
                reason = f"invalid card: {exc}"
            else:
                if state.card is None or card.data != state.card.data:
                    state.served = {}
                state.card, state.etag = card, resp.headers.get("etag")
        elif reason is None:
            reason = f"card fetch answered HTTP {resp.status_code}"
        was = state.healthy
        state.tried.set()
        if reason is None:
            state.mark_up(now)
            state.next_fetch = now + agent.refresh
            if not was:
                self.logger.info("a2a_agent_up", agent=agent.name)
        else:
            state.mark_down(reason, now)
            if was or state.failures == 1:
                self.logger.warning("a2a_agent_down", agent=agent.name, error=reason)

    async def _fetch_guarded(self, state: AgentState, client: httpx.AsyncClient) -> None:
        # A bug in one fetch must not take the server down with the refresh loop.
        try:
            await self.fetch(state, client)
        except Exception as exc:
            self.logger.error("a2a_card_fetch_crashed", agent=state.agent.name, error=repr(exc))
            state.tried.set()
            state.mark_down(f"card fetch failed: {type(exc).__name__}", trio.current_time())

    async def run(self, client: httpx.AsyncClient) -> None:
        """Fetch every card when due, forever; wakes early when the plan changes."""
        while True:
            now = trio.current_time()
            due = [s for s in self.agents.values() if s.next_fetch <= now]
            if due:
                async with trio.open_nursery() as nursery:
                    for state in due:
                        nursery.start_soon(self._fetch_guarded, state, client)
                continue
            wake = min((s.next_fetch for s in self.agents.values()), default=math.inf)
            self._wake = trio.Event()
            with trio.move_on_at(wake):
                await self._wake.wait()


def _timeout(agent: A2AAgent) -> httpx.Timeout:
    return httpx.Timeout(agent.timeout, connect=agent.connect_timeout)
