"""Default plugin: the built-in routing strategies.

``default`` (the multi-factor scorer), ``cheapest``, ``fastest``, ``weighted``
(random by ``[routing] weights``) and ``ordered`` (``[routing] order``, or the
request's ``models`` constraint).
"""

from __future__ import annotations

from collections.abc import Iterable

from .config import Config
from .hookspecs import hookimpl
from .routing import (
    CheapestStrategy,
    DefaultStrategy,
    FastestStrategy,
    OrderedStrategy,
    RoutingStrategy,
    WeightedStrategy,
)


@hookimpl(trylast=True)
def register_routing_strategies(config: Config) -> Iterable[RoutingStrategy]:
    return [
        DefaultStrategy(),
        CheapestStrategy(),
        FastestStrategy(),
        WeightedStrategy(config.routing.weights),
        OrderedStrategy(config.routing.order),
    ]
