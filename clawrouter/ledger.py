"""The ledger: a durable, append-only record of every paid request's steps.

Entries are ``(request_id, kind, time, data)``; kinds used by the stages are
``authorization`` (a verified payment), ``execution`` (model, usage, cost),
``settlement`` (the rail's answer), ``receipt`` (the signed receipt; the latest
per request wins) and ``released`` (a failed request's payment let go
unsettled). SQLite is the default; a PostgreSQL ledger implements the
same protocol and is registered through ``register_ledgers``.

The ledger also holds the settlement **outbox**: a :class:`SettlementIntent` is
written (``pending``) before the chain is touched and marked ``settled`` or
``failed`` after, so a crash or an RPC outage delays a settlement but never
loses it; a restarted router settles what is still pending
(:class:`clawrouter.settlement.Settler`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec

_R = TypeVar("_R")

__all__ = ["Ledger", "LedgerEntry", "LedgerFactory", "MemoryLedger", "SQLiteLedger", "SettlementIntent"]


class LedgerEntry(msgspec.Struct, frozen=True):
    request_id: str
    kind: str
    data: dict[str, Any] = {}
    time: float = 0.0


class SettlementIntent(msgspec.Struct, kw_only=True):
    """One payment to settle. ``payment`` and ``requirements`` are the x402 JSON
    documents, kept so a restarted router can settle without the request."""

    payment_id: str
    request_id: str
    scheme: str
    network: str
    payer: str
    amount: int  # authorized, atomic units
    charge: int  # actual cost, atomic units (≤ amount)
    expires: int  # unix time the authorization stops being valid
    payment: bytes
    requirements: bytes
    status: str = "pending"  # pending | settled | failed
    transaction: str = ""
    error: str | None = None
    attempts: int = 0
    created: float = 0.0
    updated: float = 0.0


@runtime_checkable
class Ledger(Protocol):
    async def record(self, entry: LedgerEntry) -> None: ...

    async def entries(self, request_id: str | None = None) -> list[LedgerEntry]: ...

    async def add_intent(self, intent: SettlementIntent) -> bool:
        """Write ``intent`` as pending; ``False`` if its ``payment_id`` is already there."""
        ...

    async def update_intent(
        self, payment_id: str, *, status: str, transaction: str = "", error: str | None = None
    ) -> None:
        """Record an attempt's outcome (``status`` ``pending`` counts a failed attempt). A final
        status (``settled``, ``failed``) is never changed afterwards.

        A ledger shared by replicas may also define ``claim_pending(owner, lease, limit)``
        (lease pending intents to one replica, skipping those another holds) and accept
        ``add_intent(intent, owner=..., lease=...)``: the settler then drains the outbox
        through claims, so two replicas never settle one intent at once. A ledger that can
        be unreachable may define ``async check()`` (raise a 503 when it cannot be written
        to): the verify stage calls it before serving a paid request."""
        ...

    async def intents(self, status: str | None = None, *, since_expires: int | None = None) -> list[SettlementIntent]:
        """Intents with ``status`` (all if ``None``) whose authorization expires after
        ``since_expires`` (any expiry if ``None``)."""
        ...

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
        self._intents: dict[str, SettlementIntent] = {}

    async def record(self, entry: LedgerEntry) -> None:
        self._entries.append(_stamp(entry))

    async def entries(self, request_id: str | None = None) -> list[LedgerEntry]:
        return [e for e in self._entries if request_id is None or e.request_id == request_id]

    async def add_intent(self, intent: SettlementIntent) -> bool:
        if intent.payment_id in self._intents:
            return False
        now = time.time()
        self._intents[intent.payment_id] = msgspec.structs.replace(intent, created=now, updated=now)
        return True

    async def update_intent(
        self, payment_id: str, *, status: str, transaction: str = "", error: str | None = None
    ) -> None:
        old = self._intents[payment_id]
        if old.status != "pending":  # settled and failed are final
            return
        self._intents[payment_id] = msgspec.structs.replace(
            old, status=status, transaction=transaction, error=error, attempts=old.attempts + 1, updated=time.time()
        )

    async def intents(self, status: str | None = None, *, since_expires: int | None = None) -> list[SettlementIntent]:
        return [
            i
            for i in self._intents.values()
            if (status is None or i.status == status) and (since_expires is None or i.expires > since_expires)
        ]

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
CREATE TABLE IF NOT EXISTS outbox (
    payment_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    scheme TEXT NOT NULL,
    network TEXT NOT NULL,
    payer TEXT NOT NULL,
    amount INTEGER NOT NULL,
    charge INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    payment BLOB NOT NULL,
    requirements BLOB NOT NULL,
    status TEXT NOT NULL,
    transaction_hash TEXT NOT NULL DEFAULT '',
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_status ON outbox (status, expires);
"""

_INTENT_COLUMNS = (
    "payment_id, request_id, scheme, network, payer, amount, charge, expires, payment, requirements, "
    "status, transaction_hash, error, attempts, created, updated"
)


class SQLiteLedger:
    """SQLite (WAL, synchronous=FULL).

    Outbox calls are durable when they return: an intent is on disk before the
    chain is touched. Plain entries are *group-committed*: ``record`` queues the
    entry and one transaction writes everything queued within ``flush_delay``
    seconds, so paid requests share commits instead of each paying for several
    (``entries`` and ``aclose`` flush first). A crash can lose the entries of
    the last few milliseconds, never an intent or its outcome.

    Every SQLite call runs on one worker thread of the ledger's own, closing
    the connection included: a caller cancelled while its query runs (a
    settler stopped mid-scan) leaves the query to finish before the
    connection can be closed, never under it.
    """

    def __init__(self, path: str | Path, flush_delay: float = 0.005) -> None:
        self.path = str(path)
        self.flush_delay = flush_delay
        self._db: sqlite3.Connection | None = None
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self._pending: list[LedgerEntry] = []
        self._flushing: asyncio.Task[None] | None = None
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(dict[str, Any]).decode

    async def _run(self, call: Callable[..., _R], *args: Any) -> _R:
        """``call(*args)`` on the ledger's worker thread."""
        if self._worker is None:
            self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="clawrouter-sqlite")
        return await asyncio.get_running_loop().run_in_executor(self._worker, call, *args)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

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

    def _insert(self, entries: list[LedgerEntry]) -> None:
        db = self._connect()
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO ledger (request_id, kind, time, data) VALUES (?, ?, ?, ?)",
                [(e.request_id, e.kind, e.time, self._encode(e.data)) for e in entries],
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _select(self, request_id: str | None) -> list[LedgerEntry]:
        sql = "SELECT request_id, kind, data, time FROM ledger"
        args: tuple[str, ...] = ()
        if request_id is not None:
            sql, args = sql + " WHERE request_id = ?", (request_id,)
        rows = self._connect().execute(sql + " ORDER BY seq", args).fetchall()
        return [LedgerEntry(r, k, self._decode(d), t) for r, k, d, t in rows]

    async def record(self, entry: LedgerEntry) -> None:
        self._pending.append(_stamp(entry))
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_delay)
        await self.flush()

    async def flush(self) -> None:
        """Write every queued entry (one transaction)."""
        self._flushing = None
        async with self._lock:
            batch, self._pending = self._pending, []
            if batch:
                await self._run(self._insert, batch)

    def _add_intent(self, i: SettlementIntent) -> bool:
        now = time.time()
        cursor = self._connect().execute(
            f"INSERT OR IGNORE INTO outbox ({_INTENT_COLUMNS}) VALUES ({', '.join('?' * 16)})",
            (
                i.payment_id, i.request_id, i.scheme, i.network, i.payer, i.amount, i.charge, i.expires,
                i.payment, i.requirements, i.status, i.transaction, i.error, i.attempts, now, now,
            ),
        )  # fmt: skip
        return cursor.rowcount == 1

    async def add_intent(self, intent: SettlementIntent) -> bool:
        async with self._lock:
            return await self._run(self._add_intent, intent)

    def _update_intent(self, payment_id: str, status: str, transaction: str, error: str | None) -> None:
        self._connect().execute(
            "UPDATE outbox SET status = ?, transaction_hash = ?, error = ?, attempts = attempts + 1, updated = ? "
            "WHERE payment_id = ? AND status = 'pending'",
            (status, transaction, error, time.time(), payment_id),
        )

    async def update_intent(
        self, payment_id: str, *, status: str, transaction: str = "", error: str | None = None
    ) -> None:
        async with self._lock:
            await self._run(self._update_intent, payment_id, status, transaction, error)

    def _intents(self, status: str | None, since_expires: int | None) -> list[SettlementIntent]:
        sql = f"SELECT {_INTENT_COLUMNS} FROM outbox WHERE expires > ?"
        args: tuple[Any, ...] = (-1 if since_expires is None else since_expires,)
        if status is not None:
            sql, args = sql + " AND status = ?", (*args, status)
        rows = self._connect().execute(sql + " ORDER BY created", args).fetchall()
        return [
            SettlementIntent(
                payment_id=r[0], request_id=r[1], scheme=r[2], network=r[3], payer=r[4], amount=r[5],
                charge=r[6], expires=r[7], payment=bytes(r[8]), requirements=bytes(r[9]), status=r[10],
                transaction=r[11], error=r[12], attempts=r[13], created=r[14], updated=r[15],
            )
            for r in rows
        ]

    async def intents(self, status: str | None = None, *, since_expires: int | None = None) -> list[SettlementIntent]:
        async with self._lock:
            return await self._run(self._intents, status, since_expires)

    async def entries(self, request_id: str | None = None) -> list[LedgerEntry]:
        await self.flush()
        async with self._lock:
            return await self._run(self._select, request_id)

    async def aclose(self) -> None:
        task, self._flushing = self._flushing, None
        if task is not None:
            task.cancel()
        await self.flush()
        worker, self._worker = self._worker, None
        if worker is not None:  # queued behind any query still running, even one whose caller was cancelled
            await asyncio.get_running_loop().run_in_executor(worker, self._close)
            worker.shutdown(wait=False)
        else:
            self._close()


class SQLiteLedgerFactory:
    name = "sqlite"

    def create(self, settings: dict[str, Any]) -> Ledger:
        return SQLiteLedger(settings.get("path", "clawrouter-ledger.sqlite3"))


class MemoryLedgerFactory:
    name = "memory"

    def create(self, settings: dict[str, Any]) -> Ledger:
        return MemoryLedger()
