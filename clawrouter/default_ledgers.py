"""Default plugin: the SQLite (``sqlite``) and in-memory (``memory``) ledgers."""

from __future__ import annotations

from collections.abc import Iterable

from .config import Config
from .hookspecs import hookimpl
from .ledger import LedgerFactory, MemoryLedgerFactory, SQLiteLedgerFactory


@hookimpl(trylast=True)
def register_ledgers(config: Config) -> Iterable[LedgerFactory]:
    return [SQLiteLedgerFactory(), MemoryLedgerFactory()]
