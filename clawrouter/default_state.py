"""Default plugin: the in-memory state backend (``memory``)."""

from __future__ import annotations

from collections.abc import Iterable

from .config import Config
from .hookspecs import hookimpl
from .state import MemoryStateFactory, StateBackendFactory


@hookimpl(trylast=True)
def register_state_backends(config: Config) -> Iterable[StateBackendFactory]:
    return [MemoryStateFactory()]
