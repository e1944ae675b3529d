"""Events for observability, delivered off the request's hot path.

:meth:`EventBus.emit` appends to a bounded deque and returns; a background task
delivers events to ``handle_event`` implementations in order. With no
implementation, ``emit`` is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["Event", "EventBus"]

log = logging.getLogger("clawrouter.events")


class Event(msgspec.Struct, frozen=True):
    type: str
    request_id: str = ""
    data: dict[str, Any] = {}
    time: float = msgspec.field(default_factory=time.time)


class EventBus:
    def __init__(self, deliver: Callable[[Event], object] | None, *, maxlen: int = 10_000) -> None:
        self._deliver = deliver
        self.enabled = deliver is not None
        self._queue: deque[Event] = deque(maxlen=maxlen)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.delivered = 0

    def emit(self, event: Event) -> None:
        if not self.enabled:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(event)
        self._wake.set()

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._wake = asyncio.Event()
            if self._queue:
                self._wake.set()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="clawrouter-events")

    async def _run(self) -> None:
        assert self._deliver is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self._one(self._queue.popleft())

    async def _one(self, event: Event) -> None:
        assert self._deliver is not None
        try:
            result = self._deliver(event)
            if isinstance(result, list):
                for item in result:
                    if inspect.isawaitable(item):
                        await item
            elif inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("handle_event failed for %s", event.type)
        self.delivered += 1

    async def stop(self) -> None:
        """Deliver what is queued, then stop the task."""
        while self._queue:
            await self._one(self._queue.popleft())
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
