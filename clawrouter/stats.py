"""Live per-model measurements that routing reads: latency, time to first token,
error rate and rate-limit headroom.

With a state backend shared by replicas (Redis), each replica publishes its
latest samples every ``[state] stats_sync_seconds`` and absorbs the others'
(:meth:`LiveStats.export`, :meth:`LiveStats.absorb`): routing then sees
fleet-wide figures, still read in process (no round trip on a decision).

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

    def refresh(self, remote: _Remote | None = None) -> None:
        """Recompute the snapshot: this process's measurements, merged with the other
        replicas' (``remote``, from :meth:`LiveStats.absorb`) when there are any."""
        snap = self.snapshot
        if remote is None:
            snap.latency = self.latency.percentiles()
            snap.ttft = self.ttft.percentiles()
            errors, successes = self.errors, self.successes
            snap.samples = self.latency.count
        else:
            latency = self.latency.values[: self.latency.count] + remote.latency
            snap.latency = _percentiles(latency)
            snap.ttft = _percentiles(self.ttft.values[: self.ttft.count] + remote.ttft)
            errors, successes = self.errors + remote.errors, self.successes + remote.successes
            snap.samples = len(latency)
        total = errors + successes
        snap.error_rate = errors / total if total else 0.0
        snap.headroom = self._local_headroom()
        if remote is not None:
            snap.headroom = min(snap.headroom, remote.headroom)

    def _local_headroom(self) -> float:
        if self.limited_until > self._clock():
            return 0.0
        if self.ratelimit is not None and self.ratelimit[1] > 0:
            return max(0.0, min(1.0, self.ratelimit[0] / self.ratelimit[1]))
        return 1.0

    def export(self, samples: int) -> dict[str, object]:
        """The latest ``samples`` measurements and the counts, for the other replicas."""
        return {
            "l": _latest(self.latency, samples),
            "t": _latest(self.ttft, samples),
            "e": self.errors,
            "s": self.successes,
            "h": self._local_headroom(),  # never the merged snapshot: replicas would echo a 429 forever
        }


class _Remote:
    """The other replicas' measurements of one model, merged."""

    __slots__ = ("errors", "headroom", "latency", "successes", "ttft")

    def __init__(self) -> None:
        self.latency: list[float] = []
        self.ttft: list[float] = []
        self.errors = 0.0
        self.successes = 0.0
        self.headroom = 1.0


def _latest(ring: _Ring, n: int) -> list[float]:
    if ring.count < len(ring.values):
        return ring.values[: ring.count][-n:]
    ordered = ring.values[ring.index :] + ring.values[: ring.index]
    return ordered[-n:]


def _percentiles(data: list[float]) -> tuple[float, float, float] | None:
    if not data:
        return None
    data = sorted(data)
    last = len(data) - 1
    return data[last * 50 // 100], data[last * 95 // 100], data[last * 99 // 100]


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
        self._remote: dict[str, _Remote] = {}  # the other replicas' measurements (absorb)
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
                remote = self._remote
                for model_id, stats in self._models.items():
                    stats.refresh(remote.get(model_id))
                pending = [s.limited_until for s in self._models.values() if s.limited_until > now]
                self._expiry = min(pending, default=math.inf)
                self._refreshed = now
                self._dirty = False
                self.generation += 1
        return self.generation

    def export(self, samples: int = 64) -> dict[str, dict[str, object]]:
        """This process's measurements of every model (the latest ``samples`` of each
        measure), to publish for the other replicas (:meth:`absorb`)."""
        return {model_id: stats.export(samples) for model_id, stats in self._models.items()}

    def absorb(self, others: Iterable[dict[str, dict[str, object]]]) -> None:
        """Merge the other replicas' :meth:`export` documents into what routing reads: their
        samples join this process's in the percentiles, their counts in the error rate, and
        the lowest headroom wins. Replaces what an earlier call absorbed."""
        merged: dict[str, _Remote] = {}
        for document in others:
            for model_id, data in document.items():
                remote = merged.get(model_id)
                if remote is None:
                    remote = merged[model_id] = _Remote()
                    self.model(model_id)  # known here too, so that its snapshot is refreshed
                remote.latency += [float(v) for v in data.get("l", ()) if isinstance(v, int | float)]  # type: ignore[attr-defined]
                remote.ttft += [float(v) for v in data.get("t", ()) if isinstance(v, int | float)]  # type: ignore[attr-defined]
                remote.errors += float(data.get("e", 0.0))  # type: ignore[arg-type]
                remote.successes += float(data.get("s", 0.0))  # type: ignore[arg-type]
                remote.headroom = min(remote.headroom, float(data.get("h", 1.0)))  # type: ignore[arg-type]
        if merged or self._remote:
            self._remote = merged
            self._dirty = True
            self._refreshed = -math.inf  # the fleet's view is news: routing sees it at once

    def report(self, model_ids: Iterable[str]) -> dict[str, dict[str, object]]:
        return {m: self.snapshot(m).as_dict() for m in model_ids}


_EMPTY = Snapshot()
