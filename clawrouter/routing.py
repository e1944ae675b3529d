"""Routing: which model answers a request, and which ones stand behind it.

The route stage turns a request into :class:`RouteFeatures`, keeps the catalogue
models that can serve it (capabilities, context window), and asks the configured
:class:`RoutingStrategy` for a :class:`RouteDecision`: a primary model and an
ordered fallback chain. Strategies are registered by the
``register_routing_strategies`` hook.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .catalogue import ModelInfo

__all__ = ["DefaultStrategy", "RouteDecision", "RouteFeatures", "RoutingStrategy"]


class RouteFeatures:
    """What routing knows of a request."""

    __slots__ = ("needs_tools", "needs_vision", "output_tokens", "profile", "prompt_tokens")

    def __init__(
        self,
        *,
        profile: str,
        prompt_tokens: int,
        output_tokens: int,
        needs_tools: bool = False,
        needs_vision: bool = False,
    ) -> None:
        self.profile = profile
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.needs_tools = needs_tools
        self.needs_vision = needs_vision

    def fits(self, model: ModelInfo) -> str | None:
        """``None`` if ``model`` can serve the request, else why it cannot."""
        if self.needs_tools and not model.has("tools"):
            return "does not support tools"
        if self.needs_vision and not model.has("vision"):
            return "does not support images"
        if self.prompt_tokens + self.output_tokens > model.context_window:
            return f"context window {model.context_window} < {self.prompt_tokens + self.output_tokens} tokens"
        return None


class RouteDecision:
    __slots__ = ("excluded", "fallbacks", "primary", "profile", "strategy")

    def __init__(
        self,
        primary: ModelInfo,
        fallbacks: Sequence[ModelInfo] = (),
        *,
        strategy: str,
        profile: str | None = None,
        excluded: dict[str, str] | None = None,
    ) -> None:
        self.primary = primary
        self.fallbacks = tuple(fallbacks)
        self.strategy = strategy
        self.profile = profile
        self.excluded = excluded or {}

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
            "excluded": dict(self.excluded),
        }


@runtime_checkable
class RoutingStrategy(Protocol):
    """A routing strategy, returned by ``register_routing_strategies``.

    ``select`` receives only models that can serve the request (never empty)
    and returns them ranked: the first is the primary, the rest the fallback
    chain (the route stage keeps as many as ``[routing] fallbacks`` says).
    It runs on every request: keep it pure and fast.
    """

    name: str

    def rank(self, features: RouteFeatures, candidates: Sequence[ModelInfo]) -> list[ModelInfo]: ...


def _blended_price(model: ModelInfo) -> float:
    return model.input_price + model.output_price


class DefaultStrategy:
    """Profile-based ranking: ``eco`` cheapest first, ``premium`` best quality first,
    ``auto`` quality discounted by the log of price. Ties break on model id."""

    name = "default"

    def rank(self, features: RouteFeatures, candidates: Sequence[ModelInfo]) -> list[ModelInfo]:
        profile = features.profile
        if profile == "eco":
            return sorted(candidates, key=lambda m: (_blended_price(m), -m.mean_quality(), m.id))
        if profile == "premium":
            return sorted(candidates, key=lambda m: (-m.mean_quality(), _blended_price(m), m.id))
        return sorted(
            candidates,
            key=lambda m: (-(m.mean_quality() - 0.15 * math.log1p(_blended_price(m))), m.id),
        )
