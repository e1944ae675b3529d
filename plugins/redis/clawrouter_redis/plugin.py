"""The hook this distribution registers (entry point ``redis`` in the group ``clawrouter``).

Registering costs nothing: ``redis`` is imported only when a router's config
chooses ``[state] backend = "redis"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from clawrouter.config import Config, ConfigError
from clawrouter.hookspecs import hookimpl

__all__ = ["RedisStateFactory", "register_state_backends"]


class RedisStateFactory:
    """``[state] backend = "redis"``: ``url`` (``redis://host:6379/0``, ``rediss://`` for TLS,
    ``unix:///path``) and ``prefix``."""

    name = "redis"

    def create(self, settings: dict[str, Any]) -> Any:
        url = str(settings.get("url") or "")
        if not url:
            raise ConfigError("config key 'state.url': required by the redis backend (e.g. redis://127.0.0.1:6379/0)")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"config key 'state.url': {url.split('@')[-1]!r} is not a redis://, rediss:// or unix:// URL"
            )
        from .state import RedisState

        return RedisState(url, prefix=str(settings.get("prefix") or "clawrouter:"))


@hookimpl
def register_state_backends(config: Config) -> Iterable[Any]:
    return [RedisStateFactory()]
