"""Circuit breakers, one per (provider, model).

``closed``: requests flow; ``failure_threshold`` consecutive upstream failures
open it. ``open``: requests skip the model (routing excludes it, the execute
stage falls back) until ``cooldown`` seconds passed. ``half_open``: exactly one
request is let through as a probe; its success closes the breaker, its failure
opens it again for another cooldown. There are no background probes: a probe is
always a real request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["Breakers", "CircuitBreaker"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

#: state changes (rare: never per request) are events of the structured log
event_log = logging.getLogger("clawrouter.events")


def _changed(key: tuple[str, str], state: str, failures: int) -> None:
    provider, model = key
    event_log.log(
        logging.WARNING if state == OPEN else logging.INFO,
        "circuit %s for %s (%s)",
        state,
        model,
        provider,
        extra={
            "fields": {"event": "circuit", "state": state, "provider": provider, "model": model, "failures": failures}
        },
    )


class CircuitBreaker:
    __slots__ = ("_clock", "_key", "_tripped", "cooldown", "failures", "opened_at", "probing", "state", "threshold")

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
        tripped: set[tuple[str, str]] | None = None,
        key: tuple[str, str] = ("", ""),
    ) -> None:
        self._tripped = set() if tripped is None else tripped
        self._key = key
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False

    def available(self) -> bool:
        """Whether routing should consider the model (no state change)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return self._clock() - self.opened_at >= self.cooldown
        return not self.probing

    def allow(self) -> bool:
        """Whether a request may go to the model now; takes the probe slot when half-open."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self._clock() - self.opened_at < self.cooldown:
                return False
            self.state = HALF_OPEN
            self.probing = False
        if self.probing:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        if self.state != CLOSED:
            _changed(self._key, CLOSED, self.failures)
        self.state, self.failures, self.probing = CLOSED, 0, False
        self._tripped.discard(self._key)

    def failure(self) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            if self.state != OPEN:
                _changed(self._key, OPEN, self.failures)
            self.state, self.opened_at, self.probing = OPEN, self._clock(), False
            self._tripped.add(self._key)

    def release(self) -> None:
        """The request ended without a verdict on the upstream's health (e.g. a 400)."""
        if self.state == HALF_OPEN:
            self.success()


class Breakers:
    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.cooldown, self._clock = threshold, cooldown, clock
        self._by_key: dict[tuple[str, str], CircuitBreaker] = {}
        #: keys of breakers that are not closed: routing's fast path when it is empty
        self.tripped: set[tuple[str, str]] = set()

    def get(self, provider: str, model: str) -> CircuitBreaker:
        key = (provider, model)
        breaker = self._by_key.get(key)
        if breaker is None:
            breaker = self._by_key[key] = CircuitBreaker(self.threshold, self.cooldown, self._clock, self.tripped, key)
        return breaker

    def items(self) -> list[tuple[tuple[str, str], CircuitBreaker]]:
        """Every breaker created so far, by ``(provider, model)``."""
        return list(self._by_key.items())

    def available(self, provider: str, model: str) -> bool:
        return not self.tripped or (provider, model) not in self.tripped or self.get(provider, model).available()
