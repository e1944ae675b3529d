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
    """Process-local state. Expired keys are dropped lazily."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[float, str]] = {}

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

    async def aclose(self) -> None:
        self._held.clear()


class MemoryStateFactory:
    name = "memory"

    def create(self, settings: dict[str, Any]) -> StateBackend:
        return MemoryState()
