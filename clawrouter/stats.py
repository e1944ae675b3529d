"""Live per-model measurements that routing reads: latency, time to first token,
error rate and rate-limit headroom.

The execute stage feeds :class:`ModelStats` after every attempt (O(1), no
allocation beyond a fixed ring). Routing reads :class:`Snapshot` values, which
are recomputed at most every ``refresh`` seconds, so a decision never sorts
samples. Memory is bounded: ``window`` samples per model and measure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

__all__ = ["LiveStats", "ModelStats", "Snapshot"]


class _Ring:
    __slots__ = ("count", "index", "values")

    def __init__(self, size: int) -> None:
        self.values = [0.0] * size
        self.index = 0
        self.count = 0

    def add(self, value: float) -> None:
        self.values[self.index] = value
        self.index = (self.index + 1) % len(self.values)
        if self.count < len(self.values):
            self.count += 1

    def percentiles(self) -> tuple[float, float, float] | None:
        if not self.count:
            return None
        data = sorted(self.values[: self.count])
        last = self.count - 1
        return data[last * 50 // 100], data[last * 95 // 100], data[last * 99 // 100]


class Snapshot:
    """What routing knows of one model at the last refresh (seconds, fractions)."""

    __slots__ = ("error_rate", "headroom", "latency", "samples", "ttft")

    def __init__(self) -> None:
        self.latency: tuple[float, float, float] | None = None  # p50, p95, p99
        self.ttft: tuple[float, float, float] | None = None
        self.error_rate = 0.0
        self.headroom = 1.0
        self.samples = 0

    def as_dict(self) -> dict[str, object]:
        def ms(values: tuple[float, float, float] | None) -> dict[str, float] | None:
            if values is None:
                return None
            return {k: round(v * 1000, 1) for k, v in zip(("p50", "p95", "p99"), values, strict=True)}

        return {
            "latency_ms": ms(self.latency),
            "ttft_ms": ms(self.ttft),
            "error_rate": round(self.error_rate, 4),
            "headroom": round(self.headroom, 4),
            "samples": self.samples,
        }


class ModelStats:
    __slots__ = ("_clock", "errors", "latency", "limited_until", "ratelimit", "snapshot", "successes", "ttft")

    #: weight of the past in the decayed error rate, per observation
    DECAY = 0.95

    def __init__(self, window: int, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.latency = _Ring(window)
        self.ttft = _Ring(window)
        self.errors = 0.0  # decayed counts
        self.successes = 0.0
        self.ratelimit: tuple[float, float] | None = None  # remaining, limit
        self.limited_until = 0.0
        self.snapshot = Snapshot()

    def success(self, latency: float, ttft: float | None = None) -> None:
        self.latency.add(latency)
        if ttft is not None:
            self.ttft.add(ttft)
        self.errors *= self.DECAY
        self.successes = self.successes * self.DECAY + 1

    def failure(self) -> None:
        self.errors = self.errors * self.DECAY + 1
        self.successes *= self.DECAY

    def rate_limited(self, retry_after: float | None) -> None:
        self.limited_until = self._clock() + (retry_after if retry_after is not None else 10.0)
        self.ratelimit = (0.0, self.ratelimit[1] if self.ratelimit else 1.0)

    def refresh(self) -> None:
        snap = self.snapshot
        snap.latency = self.latency.percentiles()
        snap.ttft = self.ttft.percentiles()
        total = self.errors + self.successes
        snap.error_rate = self.errors / total if total else 0.0
        snap.samples = self.latency.count
        if self.limited_until > self._clock():
            snap.headroom = 0.0
        elif self.ratelimit is not None and self.ratelimit[1] > 0:
            snap.headroom = max(0.0, min(1.0, self.ratelimit[0] / self.ratelimit[1]))
        else:
            snap.headroom = 1.0


class LiveStats:
    """Stats for every model, refreshed lazily: :attr:`generation` changes when
    snapshots changed, so cached rankings know when to recompute."""

    def __init__(self, *, window: int = 256, refresh: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.refresh_every = refresh
        self._clock = clock
        self._models: dict[str, ModelStats] = {}
        self._dirty = False
        self._refreshed = -math.inf
        self._expiry = math.inf  # when a rate limit ends, snapshots must change
        self.generation = 0

    def model(self, model_id: str) -> ModelStats:
        stats = self._models.get(model_id)
        if stats is None:
            stats = self._models[model_id] = ModelStats(self.window, self._clock)
        return stats

    def success(self, model_id: str, latency: float, ttft: float | None = None) -> None:
        self.model(model_id).success(latency, ttft)
        self._dirty = True

    def failure(self, model_id: str) -> None:
        self.model(model_id).failure()
        self._dirty = True

    def rate_limited(self, model_id: str, retry_after: float | None) -> None:
        stats = self.model(model_id)
        stats.rate_limited(retry_after)
        self._expiry = min(self._expiry, stats.limited_until)
        self._dirty = True
        self._refreshed = -math.inf  # a 429 is news routing should see now

    def ratelimit(self, model_id: str, remaining: float, limit: float) -> None:
        self.model(model_id).ratelimit = (remaining, limit)
        self._dirty = True

    def snapshot(self, model_id: str) -> Snapshot:
        stats = self._models.get(model_id)
        return stats.snapshot if stats is not None else _EMPTY

    def maybe_refresh(self) -> int:
        """Refresh snapshots if something changed and ``refresh`` seconds passed; the generation."""
        if self._dirty or self._expiry != math.inf:
            now = self._clock()
            if now >= self._expiry:
                self._dirty = True
                self._refreshed = -math.inf
            if self._dirty and now - self._refreshed >= self.refresh_every:
                for stats in self._models.values():
                    stats.refresh()
                pending = [s.limited_until for s in self._models.values() if s.limited_until > now]
                self._expiry = min(pending, default=math.inf)
                self._refreshed = now
                self._dirty = False
                self.generation += 1
        return self.generation

    def report(self, model_ids: Iterable[str]) -> dict[str, dict[str, object]]:
        return {m: self.snapshot(m).as_dict() for m in model_ids}


_EMPTY = Snapshot()
