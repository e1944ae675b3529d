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
    async def acquire(self, key: str, ttl: float) -> bool:
        """Take ``key`` for ``ttl`` seconds; ``False`` if someone holds it."""
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
        self._held: dict[str, float] = {}

    async def acquire(self, key: str, ttl: float) -> bool:
        now = time.monotonic()
        until = self._held.get(key)
        if until is not None and until > now:
            return False
        if len(self._held) > 10_000:
            self._held = {k: v for k, v in self._held.items() if v > now}
        self._held[key] = now + ttl
        return True

    async def release(self, key: str) -> None:
        self._held.pop(key, None)

    async def aclose(self) -> None:
        self._held.clear()


class MemoryStateFactory:
    name = "memory"

    def create(self, settings: dict[str, Any]) -> StateBackend:
        return MemoryState()
