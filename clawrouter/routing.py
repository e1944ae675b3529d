"""Routing: which model answers a request, and which ones stand behind it.

The route stage classifies the request (:mod:`clawrouter.classify`), reads the
caller's constraints, and asks the selected :class:`RoutingStrategy` to rank
the catalogue. The router then walks the ranking and keeps the first models
that satisfy every hard constraint (capabilities, context window, circuit,
allow/deny lists, latency SLO, quality floor, price): the first is the primary,
the next ``[routing] fallbacks`` the fallback chain.

Rankings that depend only on coarse features (profile, task, tier, the request's
input/output mix) are cached until the live statistics change, so a decision
costs a dictionary lookup and a short walk, not a sort of the catalogue.
"""

from __future__ import annotations

import datetime as _dt
import math
import random
from collections.abc import Hashable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from .catalogue import ModelInfo
from .stats import LiveStats, Snapshot

__all__ = [
    "PROFILES",
    "CheapestStrategy",
    "DefaultStrategy",
    "FastestStrategy",
    "OrderedStrategy",
    "RouteDecision",
    "RouteFeatures",
    "RoutingStrategy",
    "WeightedStrategy",
    "ratio_bucket",
]

PROFILES = ("eco", "auto", "premium")


class RouteFeatures:
    """What routing knows of a request."""

    __slots__ = (
        "capabilities",
        "complexity",
        "language",
        "long_context",
        "needs_tools",
        "needs_vision",
        "output_tokens",
        "profile",
        "prompt_bound",
        "prompt_tokens",
        "stream",
        "task",
        "tier",
    )

    def __init__(
        self,
        *,
        profile: str,
        prompt_tokens: int,
        output_tokens: int,
        task: str = "chat",
        tier: str = "auto",
        complexity: float = 0.5,
        needs_tools: bool = False,
        needs_vision: bool = False,
        long_context: bool = False,
        language: str = "en",
        stream: bool = False,
        capabilities: Sequence[str] = (),
    ) -> None:
        self.profile = profile
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.task = task
        self.tier = tier
        self.complexity = complexity
        self.needs_tools = needs_tools
        self.needs_vision = needs_vision
        self.long_context = long_context
        self.language = language
        self.stream = stream
        self.capabilities = tuple(capabilities)
        self.prompt_bound = -1  # computed on first use (clawrouter.tokens.prompt_bound)

    def fits(self, model: ModelInfo) -> str | None:
        """``None`` if ``model`` can serve the request, else why it cannot."""
        if self.needs_tools and not model.has("tools"):
            return "tools: does not support tools"
        if self.needs_vision and not model.has("vision"):
            return "vision: does not support images"
        for capability in self.capabilities:
            if not model.has(capability):
                return f"capabilities: lacks {capability}"
        if self.prompt_tokens + self.output_tokens > model.context_window:
            needed = self.prompt_tokens + self.output_tokens
            return f"context_window: {model.context_window} < {needed} tokens"
        return None

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


class RouteDecision:
    __slots__ = ("elapsed_ns", "excluded", "fallbacks", "features", "primary", "profile", "strategy")

    def __init__(
        self,
        primary: ModelInfo,
        fallbacks: Sequence[ModelInfo] = (),
        *,
        strategy: str,
        profile: str | None = None,
        excluded: dict[str, str] | None = None,
        features: RouteFeatures | None = None,
    ) -> None:
        self.primary = primary
        self.fallbacks = tuple(fallbacks)
        self.strategy = strategy
        self.profile = profile
        self.excluded = excluded or {}
        self.features = features
        self.elapsed_ns = 0

    @property
    def chain(self) -> tuple[ModelInfo, ...]:
        return (self.primary, *self.fallbacks)

    def explain(self) -> dict[str, object]:
        return {
            "model": self.primary.id,
            "provider": self.primary.provider,
            "fallbacks": [m.id for m in self.fallbacks],
            "strategy": self.strategy,
            "profile": self.profile,
            "features": self.features.as_dict() if self.features is not None else None,
            "excluded": dict(self.excluded),
            "decision_us": round(self.elapsed_ns / 1000, 1),
        }


@runtime_checkable
class RoutingStrategy(Protocol):
    """A routing strategy, returned by ``register_routing_strategies``.

    ``rank`` orders ``candidates`` (every model whose provider is configured)
    best first for a request with these ``features``; the router then applies
    hard constraints while walking the ranking. ``cache_key`` returns a key
    under which the ranking may be reused for other requests until the live
    statistics change, or ``None`` if it must be computed per request.
    """

    name: str

    def rank(self, features: RouteFeatures, candidates: Sequence[ModelInfo], stats: LiveStats) -> list[ModelInfo]: ...

    def cache_key(self, features: RouteFeatures) -> Hashable | None: ...


# --- shared scoring pieces ------------------------------------------------------------

_RATIO_EDGES = (0.05, 0.2, 0.5, 1.5)  # output tokens / input tokens
_REFERENCE_INPUT = 1000


def ratio_bucket(features: RouteFeatures) -> int:
    """The request's output/input mix, coarsely: rankings by price depend on it."""
    ratio = features.output_tokens / max(1, features.prompt_tokens)
    for index, edge in enumerate(_RATIO_EDGES):
        if ratio < edge:
            return index
    return len(_RATIO_EDGES)


def _reference_ratio(bucket: int) -> float:
    edges = (0.0, *_RATIO_EDGES, 4.0)
    return math.sqrt(max(edges[bucket], 0.01) * edges[bucket + 1])


def reference_cost(model: ModelInfo, bucket: int) -> int:
    """Pico-USD of a reference request of this output/input mix (for ranking only)."""
    out = round(_REFERENCE_INPUT * _reference_ratio(bucket))
    return _REFERENCE_INPUT * model.input_pico + out * model.output_pico


def quality(model: ModelInfo, task: str) -> float:
    value = model.quality.get(task)
    return value if value is not None else model.mean_quality()


_TODAY = _dt.date.today()


def freshness(model: ModelInfo) -> float:
    """1 for a model released today, falling to 0 at three years."""
    if not model.released:
        return 0.5
    try:
        released = _dt.date.fromisoformat(model.released)
    except ValueError:
        return 0.5
    return max(0.0, 1.0 - (_TODAY - released).days / (3 * 365))


#: when a model has no latency samples yet, assume this (seconds) rather than "fast"
PRIOR_LATENCY = 2.0
PRIOR_TTFT = 0.8


def latency_of(snapshot: Snapshot, stream: bool) -> float:
    """p95 seconds: time to first token for streams, total latency otherwise."""
    values = snapshot.ttft if stream else snapshot.latency
    if values is None:
        return PRIOR_TTFT if stream else PRIOR_LATENCY
    return values[1]


class Weights:
    __slots__ = ("error", "fresh", "headroom", "latency", "price", "quality")

    def __init__(self, quality: float, price: float, latency: float, error: float, headroom: float, fresh: float):
        self.quality, self.price, self.latency = quality, price, latency
        self.error, self.headroom, self.fresh = error, headroom, fresh


#: per profile; ``auto`` leans towards ``eco`` or ``premium`` with the classifier's tier
PROFILE_WEIGHTS: Mapping[str, Weights] = {
    "eco": Weights(quality=1.0, price=2.5, latency=0.4, error=1.5, headroom=0.5, fresh=0.1),
    "auto": Weights(quality=2.5, price=1.0, latency=0.5, error=1.5, headroom=0.5, fresh=0.2),
    "premium": Weights(quality=5.0, price=0.3, latency=0.3, error=1.5, headroom=0.5, fresh=0.3),
}
_TIER_SHIFT = {"eco": "eco", "premium": "premium"}


class DefaultStrategy:
    """The multi-factor scorer.

    score = w_q·quality(task) - w_p·price - w_l·latency - w_e·error_rate
            + w_h·headroom + w_f·freshness

    price and latency are normalised to [0, 1] on a log scale across the
    candidates (price: worst-case cost of a request of this input/output mix;
    latency: p95, time to first token for streams); quality is the catalogue's
    score for the classified task, raised to a higher weight as the request's
    complexity grows. Weights depend on the profile; under ``auto`` the
    classifier's tier picks the ``eco`` or ``premium`` weights for requests it
    judges simple or hard. Ties break on model id.
    """

    name = "default"

    def __init__(self) -> None:
        self._tables: dict[Hashable, list[tuple[ModelInfo, float, float, float]]] = {}

    def weights(self, features: RouteFeatures) -> Weights:
        profile = features.profile
        if profile == "auto":
            profile = _TIER_SHIFT.get(features.tier, "auto")
        return PROFILE_WEIGHTS[profile]

    def cache_key(self, features: RouteFeatures) -> Hashable | None:
        return (features.profile, features.task, features.tier, ratio_bucket(features), features.stream)

    def components(
        self, features: RouteFeatures, candidates: Sequence[ModelInfo], stats: LiveStats
    ) -> dict[str, dict[str, float]]:
        bucket = ratio_bucket(features)
        costs = {m.id: max(1, reference_cost(m, bucket)) for m in candidates}
        low, high = math.log(min(costs.values())), math.log(max(costs.values()))
        snapshots = {m.id: stats.snapshot(m.id) for m in candidates}
        lat = {m.id: math.log(max(1e-3, latency_of(snapshots[m.id], features.stream))) for m in candidates}
        lat_low, lat_high = min(lat.values()), max(lat.values())
        weights = self.weights(features)
        boost = 0.5 + features.complexity  # harder requests value quality more
        out: dict[str, dict[str, float]] = {}
        for model in candidates:
            snap = snapshots[model.id]
            parts = {
                "quality": quality(model, features.task),
                "price": (math.log(costs[model.id]) - low) / (high - low) if high > low else 0.0,
                "latency": (lat[model.id] - lat_low) / (lat_high - lat_low) if lat_high > lat_low else 0.0,
                "error_rate": snap.error_rate,
                "headroom": snap.headroom,
                "freshness": freshness(model),
            }
            parts["score"] = (
                weights.quality * boost * parts["quality"]
                - weights.price * parts["price"]
                - weights.latency * parts["latency"]
                - weights.error * parts["error_rate"]
                + weights.headroom * parts["headroom"]
                + weights.fresh * parts["freshness"]
            )
            out[model.id] = parts
        return out

    def rank(self, features: RouteFeatures, candidates: Sequence[ModelInfo], stats: LiveStats) -> list[ModelInfo]:
        """The same scores as :meth:`components`, computed without building the breakdown."""
        if not candidates:
            return []
        bucket = ratio_bucket(features)
        task, stream = features.task, features.stream
        static = self._static(candidates, bucket, task)
        costs = [row[1] for row in static]
        low, high = min(costs), max(costs)
        price_span = (high - low) or 1.0
        snapshots = [stats.snapshot(m.id) for m in candidates]
        lat = [math.log(max(1e-3, latency_of(snap, stream))) for snap in snapshots]
        lat_low = min(lat)
        lat_span = (max(lat) - lat_low) or 1.0
        w = self.weights(features)
        wq = w.quality * (0.5 + features.complexity)
        scored = []
        for (model, log_cost, q, fresh), snap, latency in zip(static, snapshots, lat, strict=True):
            score = (
                wq * q
                - w.price * (log_cost - low) / price_span
                - w.latency * (latency - lat_low) / lat_span
                - w.error * snap.error_rate
                + w.headroom * snap.headroom
                + w.fresh * fresh
            )
            scored.append((-score, model.id, model))
        scored.sort(key=lambda row: (row[0], row[1]))
        return [row[2] for row in scored]

    def _static(
        self, candidates: Sequence[ModelInfo], bucket: int, task: str
    ) -> list[tuple[ModelInfo, float, float, float]]:
        """Per model, what does not change between requests: (model, log reference cost, quality, freshness)."""
        key = (tuple(m.id for m in candidates), bucket, task)
        table = self._tables.get(key)
        if table is None:
            if len(self._tables) > 256:
                self._tables.clear()
            table = self._tables[key] = [
                (m, math.log(max(1, reference_cost(m, bucket))), quality(m, task), freshness(m)) for m in candidates
            ]
        return table


class CheapestStrategy:
    """Cheapest worst-case cost first (for this request's input/output mix); ties on quality, then id."""

    name = "cheapest"

    def cache_key(self, features: RouteFeatures) -> Hashable | None:
        return (ratio_bucket(features), features.task)

    def rank(self, features: RouteFeatures, candidates: Sequence[ModelInfo], stats: LiveStats) -> list[ModelInfo]:
        bucket = ratio_bucket(features)
        return sorted(candidates, key=lambda m: (reference_cost(m, bucket), -quality(m, features.task), m.id))


class FastestStrategy:
    """Lowest live p50 latency first (time to first token for streams); unmeasured models after measured
    ones in catalogue order of price."""

    name = "fastest"

    def cache_key(self, features: RouteFeatures) -> Hashable | None:
        return (features.stream,)

    def rank(self, features: RouteFeatures, candidates: Sequence[ModelInfo], stats: LiveStats) -> list[ModelInfo]:
        def key(model: ModelInfo) -> tuple[int, float, str]:
            snap = stats.snapshot(model.id)
            values = snap.ttft if features.stream else snap.latency
            if values is None:
                return (1, reference_cost(model, 2), model.id)
            return (0, values[0], model.id)

        return sorted(candidates, key=key)


class WeightedStrategy:
    """Random by weight (``[routing] weights = {"model-id" = 3}``; unlisted models weigh 0 unless none is
    listed, then all weigh 1). The primary is drawn; the fallbacks follow by descending weight."""

    name = "weighted"

    def __init__(self, weights: Mapping[str, float] | None = None, rng: random.Random | None = None) -> None:
        self.weights = dict(weights or {})
        self._rng = rng or random.Random()

    def cache_key(self, features: RouteFeatures) -> Hashable | None:
        return None

    def rank(self, features: RouteFeatures, candidates: Sequence[ModelInfo], stats: LiveStats) -> list[ModelInfo]:
        pool = [m for m in candidates if self.weights.get(m.id, 0 if self.weights else 1) > 0]
        if not pool:
            return []
        weights = [self.weights.get(m.id, 1.0) for m in pool]
        first = self._rng.choices(pool, weights=weights)[0]
        rest = sorted((m for m in pool if m is not first), key=lambda m: (-self.weights.get(m.id, 1.0), m.id))
        return [first, *rest]


class OrderedStrategy:
    """An explicit order: the request's ``models`` constraint if given, else ``[routing] order``."""

    name = "ordered"

    def __init__(self, order: Sequence[str] = ()) -> None:
        self.order = tuple(order)

    def cache_key(self, features: RouteFeatures) -> Hashable | None:
        return self.order

    def rank(self, features: RouteFeatures, candidates: Sequence[ModelInfo], stats: LiveStats) -> list[ModelInfo]:
        by_id = {m.id: m for m in candidates}
        for m in candidates:
            for alias in m.aliases:
                by_id.setdefault(alias, m)
        return [by_id[name] for name in self.order if name in by_id]
