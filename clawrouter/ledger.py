"""The ledger: a durable, append-only record of every paid request's steps.

Entries are ``(request_id, kind, time, data)``; kinds used by the stages are
``authorization`` (a verified payment), ``execution`` (model, usage, cost),
``settlement`` (the rail's answer) and ``released`` (a failed request's payment
let go unsettled). SQLite is the default; a PostgreSQL ledger implements the
same protocol and is registered through ``register_ledgers``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import msgspec

__all__ = ["Ledger", "LedgerEntry", "LedgerFactory", "MemoryLedger", "SQLiteLedger"]


class LedgerEntry(msgspec.Struct, frozen=True):
    request_id: str
    kind: str
    data: dict[str, Any] = {}
    time: float = 0.0


@runtime_checkable
class Ledger(Protocol):
    async def record(self, entry: LedgerEntry) -> None: ...

    async def entries(self, request_id: str | None = None) -> list[LedgerEntry]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class LedgerFactory(Protocol):
    """Returned by ``register_ledgers``; ``name`` is what ``[ledger] backend`` selects."""

    name: str

    def create(self, settings: dict[str, Any]) -> Ledger: ...


def _stamp(entry: LedgerEntry) -> LedgerEntry:
    return entry if entry.time else msgspec.structs.replace(entry, time=time.time())


class MemoryLedger:
    """A ledger that forgets on exit: for tests and throwaway runs only."""

    def __init__(self) -> None:
        self._entries: list[LedgerEntry] = []

    async def record(self, entry: LedgerEntry) -> None:
        self._entries.append(_stamp(entry))

    async def entries(self, request_id: str | None = None) -> list[LedgerEntry]:
        return [e for e in self._entries if request_id is None or e.request_id == request_id]

    async def aclose(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    time REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_request ON ledger (request_id);
"""


class SQLiteLedger:
    """SQLite (WAL, synchronous=FULL): an entry is on disk when ``record`` returns."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(dict[str, Any]).decode

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def _insert(self, entry: LedgerEntry) -> None:
        self._connect().execute(
            "INSERT INTO ledger (request_id, kind, time, data) VALUES (?, ?, ?, ?)",
            (entry.request_id, entry.kind, entry.time, self._encode(entry.data)),
        )

    def _select(self, request_id: str | None) -> list[LedgerEntry]:
        sql = "SELECT request_id, kind, data, time FROM ledger"
        args: tuple[str, ...] = ()
        if request_id is not None:
            sql, args = sql + " WHERE request_id = ?", (request_id,)
        rows = self._connect().execute(sql + " ORDER BY seq", args).fetchall()
        return [LedgerEntry(r, k, self._decode(d), t) for r, k, d, t in rows]

    async def record(self, entry: LedgerEntry) -> None:
        async with self._lock:
            await asyncio.to_thread(self._insert, _stamp(entry))

    async def entries(self, request_id: str | None = None) -> list[LedgerEntry]:
        async with self._lock:
            return await asyncio.to_thread(self._select, request_id)

    async def aclose(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class SQLiteLedgerFactory:
    name = "sqlite"

    def create(self, settings: dict[str, Any]) -> Ledger:
        return SQLiteLedger(settings.get("path", "clawrouter-ledger.sqlite3"))


class MemoryLedgerFactory:
    name = "memory"

    def create(self, settings: dict[str, Any]) -> Ledger:
        return MemoryLedger()
