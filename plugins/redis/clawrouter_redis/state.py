"""Payment locks and used-payment markers in Redis, shared by every replica.

Each operation is one Redis command, atomic on the server, so no replica ever
reads, decides and writes: ``acquire`` is ``SET key value NX PX ttl`` (only one
replica wins a key, and it frees itself after ``ttl`` if its holder dies),
``set`` is ``SET key value PX ttl`` (a settled marker replacing the lock),
``release`` is ``DEL``. The counters of budgets and rate limits
(:mod:`clawrouter.limits`) are one Lua script per operation: a token bucket, and
a budget reserve (all counters or none) / settle (commit or release). Keys are
namespaced with ``[state] prefix``.

When Redis cannot be reached (or answers with an error) every operation raises
:class:`~clawrouter.errors.ServiceUnavailable` (503 ``state_unavailable``): a
paid request then fails closed, before anything is served or charged.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from clawrouter.errors import ServiceUnavailable

__all__ = ["RedisState"]

_T = TypeVar("_T")


#: a token bucket in a hash (t: tokens, ts: when, server time); refilled at ARGV[1] per second up to ARGV[2]
_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local held = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = math.min(burst, (tonumber(held[1]) or burst) + (now - (tonumber(held[2]) or now)) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""

#: budgets in hashes (s: spent, r: reserved); ARGV[1] the amount, then (cap, ttl ms) per key
_RESERVE = """
local amount = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local held = redis.call('HMGET', key, 's', 'r')
  if (tonumber(held[1]) or 0) + (tonumber(held[2]) or 0) + amount > tonumber(ARGV[2 * i]) then return 0 end
end
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'r', amount)
  redis.call('PEXPIRE', key, ARGV[2 * i + 1])
end
return 1
"""

_SETTLE = """
local amount = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    local left = redis.call('HINCRBY', key, 'r', -amount)
    if left < 0 then redis.call('HSET', key, 'r', 0) end
    if ARGV[2] == '1' then redis.call('HINCRBY', key, 's', amount) end
  end
end
return 1
"""


class RedisState:
    """A :class:`clawrouter.state.StateBackend` over one Redis server (see the module docstring)."""

    def __init__(self, url: str, *, prefix: str = "clawrouter:", timeout: float = 2.0) -> None:
        self.url = url
        self.prefix = prefix
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        self._take = self.client.register_script(_TAKE)
        self._reserve = self.client.register_script(_RESERVE)
        self._settle = self.client.register_script(_SETTLE)

    def __repr__(self) -> str:  # never shows a password in the URL
        return f"RedisState(prefix={self.prefix!r})"

    async def _do(self, command: Awaitable[_T]) -> _T:
        try:
            return await command
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(
                f"the state backend (Redis) cannot be reached: {type(exc).__name__}; nothing was charged, retry later",
                code="state_unavailable",
                headers=[(b"retry-after", b"5")],
            ) from None

    async def acquire(self, key: str, ttl: float, value: str = "locked") -> bool:
        return bool(await self._do(self.client.set(self.prefix + key, value, nx=True, px=_ms(ttl))))

    async def get(self, key: str) -> str | None:
        found: Any = await self._do(self.client.get(self.prefix + key))
        return None if found is None else str(found)

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self._do(self.client.set(self.prefix + key, value, px=_ms(ttl)))

    async def release(self, key: str) -> None:
        await self._do(self.client.delete(self.prefix + key))

    # --- the counters of clawrouter.limits: one Lua script each, atomic on the server ------

    async def take_token(self, key: str, rate: float, burst: float) -> float:
        """Take a token from ``key``'s bucket; 0.0, or the seconds until one is there."""
        wait = await self._do(self._take(keys=[self.prefix + key], args=[repr(rate), repr(burst)]))
        return float(wait)

    async def budget_reserve(self, counters: list[tuple[str, int, float]], amount: int) -> bool:
        """Reserve ``amount`` on every ``(key, cap, ttl)`` counter, or on none if one would pass its cap."""
        keys = [self.prefix + key for key, _, _ in counters]
        args: list[str] = [str(amount)]
        for _, cap, ttl in counters:
            args += [str(cap), str(_ms(ttl))]
        return bool(await self._do(self._reserve(keys=keys, args=args)))

    async def budget_settle(self, counters: list[tuple[str, float]], amount: int, spent: bool) -> None:
        """A reservation ends: its ``amount`` becomes spent (``spent``) or is released."""
        keys = [self.prefix + key for key, _ in counters]
        await self._do(self._settle(keys=keys, args=[str(amount), "1" if spent else "0"]))

    async def budget_read(self, key: str) -> tuple[int, int]:
        spent, reserved = await self._do(self.client.hmget(self.prefix + key, ["s", "r"]))
        return int(spent or 0), int(reserved or 0)

    # --- routing statistics shared by replicas -----------------------------------------------

    async def publish_stats(self, replica: str, document: bytes, ttl: float) -> None:
        """Keep ``replica``'s measurements for ``ttl`` seconds (it republishes before then)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(f"{self.prefix}stats:{replica}", document, px=_ms(ttl))
            pipe.sadd(f"{self.prefix}stats:replicas", replica)
            await self._do(pipe.execute())

    async def fetch_stats(self, exclude: str) -> list[bytes]:
        """The other live replicas' measurements (a replica that stopped publishing is forgotten)."""
        members: Any = await self._do(self.client.smembers(f"{self.prefix}stats:replicas"))
        others = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members if m != exclude)
        if not others:
            return []
        found = await self._do(self.client.mget([f"{self.prefix}stats:{m}" for m in others]))
        gone = [m for m, value in zip(others, found, strict=True) if value is None]
        if gone:
            await self._do(self.client.srem(f"{self.prefix}stats:replicas", *gone))
        return [value.encode() if isinstance(value, str) else value for value in found if value is not None]

    async def ping(self) -> bool:
        return bool(await self._do(self.client.ping()))

    async def aclose(self) -> None:
        await self.client.aclose()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
