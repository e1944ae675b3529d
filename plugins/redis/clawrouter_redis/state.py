"""Payment locks and used-payment markers in Redis, shared by every replica.

Each operation is one Redis command, atomic on the server, so no replica ever
reads, decides and writes: ``acquire`` is ``SET key value NX PX ttl`` (only one
replica wins a key, and it frees itself after ``ttl`` if its holder dies),
``set`` is ``SET key value PX ttl`` (a settled marker replacing the lock),
``release`` is ``DEL``. Keys are namespaced with ``[state] prefix``.

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


class RedisState:
    """A :class:`clawrouter.state.StateBackend` over one Redis server (see the module docstring)."""

    def __init__(self, url: str, *, prefix: str = "clawrouter:", timeout: float = 2.0) -> None:
        self.url = url
        self.prefix = prefix
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )

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

    async def ping(self) -> bool:
        return bool(await self._do(self.client.ping()))

    async def aclose(self) -> None:
        await self.client.aclose()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
