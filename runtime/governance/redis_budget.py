"""Budget reservations shared by every sidecar through Redis (`store.redis`), with atomic Lua
scripts, so N sidecars sharing a budget overshoot it no more than one process does.

At admission, after the local checks, one script per request checks every budget that applies
(key, team) against the shared spend plus the reservations every live sidecar holds, and, only if
all have room, records this request's worst case in each (one hash field per request). When the
request ends, another script removes the reservation and adds the real cost to the shared spend
in the same step (queued: the request does not wait for it). One task sends them: whatever
settlements and reservations are waiting go in one pipelined round trip (redis-py's blocking
client in a worker thread), settlements first, so a sidecar's next request sees its previous
ones settled. An admission waits for that round trip.

A sidecar that dies holding reservations: each sidecar refreshes a heartbeat key every
`redis_sync` (it expires after 4 of them, at least 2 s); the reserve script ignores and deletes
the reservations of sidecars whose heartbeat has expired.

When Redis cannot be reached (or the last sync failed), admission falls back to the local ledger
alone at once (no wait): each sidecar then enforces the budget by itself from the spend it last
saw, so together they may spend up to N times what was left. Costs settled meanwhile are pushed
by the counter sync once Redis is back.

Keys: `sidegate:held:<subject>:<period start>` (hash `<sidecar>:<request>` -> USD, expiring with
the period) beside the counter sync's `sidegate:spend:<subject>:<period start>`, and
`sidegate:pod:<sidecar>` (the heartbeat). The scripts touch keys they build from the heartbeat
prefix, so they need a single Redis server (not Redis Cluster).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from sidegate.runtime.governance.limits import Budget, period_seconds, period_start
from sidegate.runtime.governance.redis_sync import PREFIX, RedisSync

if TYPE_CHECKING:
    import redis

__all__ = ["RESERVE", "SETTLE", "Held", "SharedBudgets"]

RESERVE = """
local field, n = ARGV[1], #KEYS / 2
local live = {}
for i = 1, n do
  local spend = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local held = 0
  local entries = redis.call('HGETALL', KEYS[2 * i])
  for j = 1, #entries, 2 do
    local pod = string.match(entries[j], '^[^:]+')
    if live[pod] == nil then live[pod] = redis.call('EXISTS', ARGV[2] .. pod) == 1 end
    if live[pod] then held = held + tonumber(entries[j + 1]) else redis.call('HDEL', KEYS[2 * i], entries[j]) end
  end
  if spend + held >= tonumber(ARGV[3 * i]) then return i end
end
for i = 1, n do
  redis.call('HSET', KEYS[2 * i], field, ARGV[3 * i + 1])
  redis.call('EXPIREAT', KEYS[2 * i], ARGV[3 * i + 2])
end
return 0
"""
"""KEYS: (spend, held) per budget; ARGV: the request's field, the heartbeat prefix, then (amount,
worst-case cost, expiry) per budget. Returns 0 (reserved everywhere) or the index of the first
budget without room (nothing reserved)."""

SETTLE = """
for i = 1, #KEYS / 2 do
  redis.call('HDEL', KEYS[2 * i], ARGV[1])
  redis.call('INCRBYFLOAT', KEYS[2 * i - 1], ARGV[2])
  redis.call('EXPIREAT', KEYS[2 * i - 1], ARGV[2 + i])
end
return 1
"""
"""KEYS: (spend, held) per budget; ARGV: the request's field, its real cost, then the expiry per budget."""


@dataclass(frozen=True, slots=True)
class Held:
    """A request's reservation in Redis, for its settlement."""

    field: str
    keys: tuple[str, ...]
    expiries: tuple[int, ...]
    subjects: tuple[tuple[str, float, float], ...]
    """(subject, period start, seconds the period lasts at most) per budget."""


@dataclass(slots=True, eq=False)
class _Ask:
    keys: list[str]
    args: list[Any]
    held: Held
    done: trio.Event = field(default_factory=trio.Event)
    result: int | None = None
    """0: reserved; i > 0: budget i has no room; None: Redis could not be reached."""
    abandoned: bool = False


class SharedBudgets:
    """Reserve and settle budgets in Redis for one sidecar."""

    def __init__(self, sync: RedisSync) -> None:
        self.sync = sync
        self.pod = uuid.uuid4().hex[:12]
        self._scripts: tuple[Any, Any] | None = None
        self._client: redis.Redis | None = None
        self._asks: list[_Ask] = []
        self._settles: list[tuple[Held, float]] = []
        self._wake = trio.Event()
        self._running = False
        self.reserved = 0
        """Reservations made in Redis (for tests and the log)."""
        self.fallbacks = 0
        """Admissions decided locally because Redis could not be reached."""

    @property
    def active(self) -> bool:
        """Whether reservations go through Redis (configured, running, and the last sync did not fail)."""
        return self._running and self.sync.source is not None and self.sync.up is not False

    def _heartbeat_key(self) -> str:
        return f"{PREFIX}pod:{self.pod}"

    async def _ready(self) -> tuple[redis.Redis, tuple[Any, Any]]:
        client = await self.sync._connect()
        if self._scripts is None or client is not self._client:
            await self._beat(client)
            self._client, self._scripts = client, (client.register_script(RESERVE), client.register_script(SETTLE))
        return client, self._scripts

    async def _beat(self, client: redis.Redis) -> None:
        ms = int(max(2.0, 4 * self.sync.interval) * 1000)
        await trio.to_thread.run_sync(lambda: client.set(self._heartbeat_key(), b"1", px=ms))

    async def reserve(self, request_id: str, budgets: list[tuple[str, Budget]], cost: float,
                      wall: float) -> tuple[Held | None, str | None]:
        """(the reservation, None) when every budget had room in Redis; (None, subject) for the
        first one without; (None, None) when Redis could not be reached (decide locally)."""
        keys: list[str] = []
        args: list[Any] = [f"{self.pod}:{request_id}:{uuid.uuid4().hex[:8]}", f"{PREFIX}pod:"]
        expiries: list[int] = []
        subjects: list[tuple[str, float, float]] = []
        for subject, budget in budgets:
            start = period_start(budget.period, wall)
            ttl = period_seconds(budget.period)
            expiry = math.ceil(start + ttl)
            keys += [f"{PREFIX}spend:{subject}:{int(start)}", f"{PREFIX}held:{subject}:{int(start)}"]
            args += [repr(budget.amount), repr(cost), expiry]
            expiries.append(expiry)
            subjects.append((subject, start, ttl))
        held = Held(args[0], tuple(keys), tuple(expiries), tuple(subjects))
        ask = _Ask(keys, args, held)
        self._asks.append(ask)
        self._wake.set()
        try:
            await ask.done.wait()
        except BaseException:
            ask.abandoned = True  # cancelled while waiting: the run task gives back what it reserved
            raise
        if ask.result is None:
            self.fallbacks += 1
            return None, None
        if ask.result:
            return None, budgets[ask.result - 1][0]
        self.reserved += 1
        return held, None

    def settle_nowait(self, held: Held, cost: float) -> None:
        """Queue the settlement of a reservation (never blocks; the run task sends it)."""
        self._settles.append((held, cost))
        self._wake.set()

    def _push_locally(self, settles: list[tuple[Held, float]]) -> None:
        # Redis is unreachable: the counter sync pushes the costs once it is back (the reservations
        # themselves stop counting when this sidecar's heartbeat expires).
        for held, cost in settles:
            for subject, start, ttl in held.subjects:
                self.sync.ledger.queue_spend(subject, start, cost, ttl)

    async def run(self) -> None:
        """Send reservations and settlements, keep the heartbeat fresh (cancel to stop)."""
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeats)
                while True:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    await self._round_trip()
        finally:
            self._running = False
            for ask in self._asks:
                ask.done.set()  # unanswered: decided locally
            self._asks = []

    async def _round_trip(self) -> None:
        import redis as redis_module

        settles, self._settles = self._settles, []
        asks, self._asks = self._asks, []
        if not settles and not asks:
            return
        try:
            client, (reserve, settle) = await self._ready()

            def send() -> list[Any]:
                pipe = client.pipeline(transaction=False)
                for held, cost in settles:
                    settle(keys=list(held.keys), args=[held.field, repr(cost), *held.expiries], client=pipe)
                for ask in asks:
                    reserve(keys=ask.keys, args=ask.args, client=pipe)
                return list(pipe.execute())

            replies = await trio.to_thread.run_sync(send)
        except (redis_module.RedisError, OSError, ValueError) as exc:
            self.sync.note_failure(exc)
            self._push_locally(settles)
            for ask in asks:
                ask.done.set()
            return
        for ask, reply in zip(asks, replies[len(settles):], strict=True):
            ask.result = int(reply)
            if ask.abandoned and ask.result == 0:
                self._settles.append((ask.held, 0.0))
                self._wake.set()
            ask.done.set()

    async def _heartbeats(self) -> None:
        while True:
            await trio.sleep(self.sync.interval)
            if self.sync.source is None or self._scripts is None:
                continue
            import redis as redis_module  # only once Redis is in use (~115 ms and ~6 MB to import)

            try:
                await self._beat(await self.sync._connect())
            except (redis_module.RedisError, OSError, ValueError) as exc:
                self.sync.note_failure(exc)
