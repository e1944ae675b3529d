"""Default plugin: the built-in routing strategy (``default``)."""

from __future__ import annotations

from collections.abc import Iterable

from .config import Config
from .hookspecs import hookimpl
from .routing import DefaultStrategy, RoutingStrategy


@hookimpl(trylast=True)
def register_routing_strategies(config: Config) -> Iterable[RoutingStrategy]:
    return [DefaultStrategy()]
