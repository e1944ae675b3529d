"""Shared state: in-flight payment locks and used markers.

The in-memory backend is the default for one process; a Redis backend
(registered through ``register_state_backends``) shares the same operations
across replicas.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

__all__ = ["MemoryState", "StateBackend", "StateBackendFactory"]


@runtime_checkable
class StateBackend(Protocol):
    async def acquire(self, key: str, ttl: float, value: str = "locked") -> bool:
        """Take ``key`` (holding ``value``) for ``ttl`` seconds; ``False`` if someone holds it."""
        ...

    async def get(self, key: str) -> str | None:
        """The value ``key`` holds, or ``None`` if nobody holds it."""
        ...

    async def set(self, key: str, value: str, ttl: float) -> None:
        """Hold ``key`` with ``value`` for ``ttl`` seconds, whoever held it before."""
        ...

    async def release(self, key: str) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class StateBackendFactory(Protocol):
    """Returned by ``register_state_backends``; ``name`` is what ``[state] backend`` selects."""

    name: str

    def create(self, settings: dict[str, Any]) -> StateBackend: ...


class MemoryState:
    """Process-local state. Expired keys are dropped lazily.

    Besides locks it holds the counters of :mod:`clawrouter.limits`: token buckets
    (``take_token``) and budgets (``budget_reserve`` / ``budget_settle``), each
    operation atomic (no ``await`` inside).
    """

    def __init__(self) -> None:
        self._held: dict[str, tuple[float, str]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._budgets: dict[str, list[float]] = {}  # key -> [spent, reserved, expires]

    async def acquire(self, key: str, ttl: float, value: str = "locked") -> bool:
        now = time.monotonic()
        held = self._held.get(key)
        if held is not None and held[0] > now:
            return False
        if len(self._held) > 10_000:
            self._held = {k: v for k, v in self._held.items() if v[0] > now}
        self._held[key] = (now + ttl, value)
        return True

    async def get(self, key: str) -> str | None:
        held = self._held.get(key)
        return held[1] if held is not None and held[0] > time.monotonic() else None

    async def set(self, key: str, value: str, ttl: float) -> None:
        self._held[key] = (time.monotonic() + ttl, value)

    async def release(self, key: str) -> None:
        self._held.pop(key, None)

    async def take_token(self, key: str, rate: float, burst: float) -> float:
        """Take a token from ``key``'s bucket (``rate`` per second, ``burst`` at most): 0.0, or
        the seconds until one is there (nothing taken)."""
        now = time.monotonic()
        if len(self._buckets) > 10_000:  # bounded: a bucket untouched for two minutes is full again anyway
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 120}
        tokens, at = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / rate

    async def budget_reserve(self, counters: list[tuple[str, int, float]], amount: int) -> bool:
        """Reserve ``amount`` on every ``(key, cap, ttl)`` counter, or on none if one would pass its cap."""
        now = time.monotonic()
        if len(self._budgets) > 10_000:
            self._budgets = {k: v for k, v in self._budgets.items() if v[2] > now}
        for key, cap, _ in counters:
            spent, reserved, expires = self._budgets.get(key, [0, 0, 0])
            held = spent + reserved if expires > now else 0  # an expired counter starts again
            if held + amount > cap:
                return False
        for key, _, ttl in counters:
            found = self._budgets.get(key)
            if found is None or found[2] <= now:
                found = self._budgets[key] = [0, 0, 0]
            found[1] += amount
            found[2] = now + ttl
        return True

    async def budget_settle(self, counters: list[tuple[str, float]], amount: int, spent: bool) -> None:
        """A reservation ends: its ``amount`` becomes spent (``spent``) or is released."""
        for key, _ in counters:
            found = self._budgets.get(key)
            if found is not None:
                found[1] = max(0, found[1] - amount)
                if spent:
                    found[0] += amount

    async def budget_read(self, key: str) -> tuple[int, int]:
        found = self._budgets.get(key)
        if found is None or found[2] <= time.monotonic():
            return 0, 0
        return int(found[0]), int(found[1])

    async def aclose(self) -> None:
        self._held.clear()
        self._buckets.clear()
        self._budgets.clear()


class MemoryStateFactory:
    name = "memory"

    def create(self, settings: dict[str, Any]) -> StateBackend:
        return MemoryState()
