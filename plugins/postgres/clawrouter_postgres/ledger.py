"""The clawrouter ledger and settlement outbox in PostgreSQL, shared by every replica.

:class:`PostgresLedger` implements :class:`clawrouter.ledger.Ledger` with the
semantics of :class:`~clawrouter.ledger.SQLiteLedger`: entries come back in the
order they were written; ``add_intent`` returns ``False`` for a ``payment_id``
already in the outbox (and changes nothing); ``update_intent`` records an
attempt's outcome and counts it in ``attempts``; ``intents`` filters on status
and on expiry (``expires > since_expires``) and orders by creation.

**Durability.** Outbox calls (``add_intent``, ``update_intent``,
``claim_pending``) are single statements committed before they return. Plain
entries are group-committed like SQLite's: ``record`` queues the entry and one
statement writes everything queued within ``flush_delay`` seconds
(``flush_delay=0`` writes each entry before ``record`` returns); ``entries``
and ``aclose`` write what is queued first. Entries whose write fails because
PostgreSQL cannot be reached stay queued, in order, and are retried. ``data`` is stored as ``jsonb``, which cannot
hold U+0000: such characters are stored as U+FFFD.

**Schema.** :data:`MIGRATIONS`, applied in order at first use (or by
:meth:`PostgresLedger.migrate`) in one transaction that holds
``pg_advisory_xact_lock``: replicas starting together migrate once, the others
wait for the lock and find nothing left to do. ``clawrouter_schema`` keeps one
row per applied version. Tables are created in the first schema of the
connection's ``search_path`` (``?options=-csearch_path%3Dname`` in the URL).

**Claims.** :meth:`PostgresLedger.claim_pending` lets several replicas drain
pending intents without settling one twice at the same time: each call takes
pending intents nobody holds (``SELECT ... FOR UPDATE SKIP LOCKED``) and leases
them to its caller until ``claimed_until``; ``update_intent`` lets go of the
claim, and a lease that runs out (a replica that died) frees the intent.

**Failure.** When PostgreSQL cannot be reached (or answers with an error) every
call raises :class:`LedgerUnavailable`, a
:class:`~clawrouter.errors.ServiceUnavailable` (503 ``ledger_unavailable``,
``Retry-After: 5``), never a driver exception; waits are bounded (``timeout``
for a connection, ``command_timeout`` per call).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from clawrouter.errors import ServiceUnavailable
from clawrouter.ledger import LedgerEntry, SettlementIntent

from .plugin import check_url, redact

__all__ = ["DEFAULT_LEASE", "MIGRATIONS", "SCHEMA_VERSION", "LedgerUnavailable", "Migration", "PostgresLedger"]

log = logging.getLogger("clawrouter.ledger.postgres")

_R = TypeVar("_R")
_Conn = psycopg.AsyncConnection[TupleRow]


@dataclass(frozen=True)
class Migration:
    """One step of the schema: ``statements`` run in order, in the migration transaction."""

    version: int
    description: str
    statements: tuple[str, ...]


#: The schema, step by step. Append a new :class:`Migration` (next version) to change it; never edit
#: one that has shipped, since databases already at that version never run it again.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "the ledger and the settlement outbox",
        (
            """CREATE TABLE clawrouter_ledger (
                seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                request_id text NOT NULL,
                kind text NOT NULL,
                time double precision NOT NULL,
                data jsonb NOT NULL
            )""",
            "CREATE INDEX clawrouter_ledger_request ON clawrouter_ledger (request_id, seq)",
            """CREATE TABLE clawrouter_outbox (
                payment_id text PRIMARY KEY,
                request_id text NOT NULL,
                scheme text NOT NULL,
                network text NOT NULL,
                payer text NOT NULL,
                amount numeric(78, 0) NOT NULL,
                charge numeric(78, 0) NOT NULL,
                expires bigint NOT NULL,
                payment bytea NOT NULL,
                requirements bytea NOT NULL,
                status text NOT NULL,
                transaction_hash text NOT NULL DEFAULT '',
                error text,
                attempts integer NOT NULL DEFAULT 0,
                created double precision NOT NULL,
                updated double precision NOT NULL
            )""",
            "CREATE INDEX clawrouter_outbox_status ON clawrouter_outbox (status, expires)",
            "CREATE INDEX clawrouter_outbox_expires ON clawrouter_outbox (expires)",
        ),
    ),
    Migration(
        2,
        "outbox claims, for replicas draining pending intents together",
        ("ALTER TABLE clawrouter_outbox ADD COLUMN claimed_by text, ADD COLUMN claimed_until timestamptz",),
    ),
)

#: the version a database has once every migration here is applied
SCHEMA_VERSION = MIGRATIONS[-1].version

#: the first key of the migration's advisory lock ("claw"); the second is the schema's name, hashed
_LOCK_KEY = 0x636C6177

#: the lease of an intent added already claimed (``add_intent(owner=...)`` without ``lease``)
DEFAULT_LEASE = 60.0

_INTENT_COLUMNS = (
    "payment_id, request_id, scheme, network, payer, amount, charge, expires, payment, requirements, "
    "status, transaction_hash, error, attempts, created, updated"
)

_ADD_INTENT = (
    f"INSERT INTO clawrouter_outbox ({_INTENT_COLUMNS}, claimed_by, claimed_until) "
    f"VALUES ({', '.join(['%s'] * 17)}, now() + %s::float8 * interval '1 second') "
    "ON CONFLICT (payment_id) DO NOTHING"
)

# A final status (settled, failed) is never changed again; a failed attempt (pending) keeps the claim,
# since its owner retries, and a final status lets go of it.
_UPDATE_INTENT = (
    "UPDATE clawrouter_outbox SET status = %(status)s, transaction_hash = %(transaction)s, error = %(error)s, "
    "attempts = attempts + 1, updated = %(updated)s, "
    "claimed_by = CASE WHEN %(status)s = 'pending' THEN claimed_by END, "
    "claimed_until = CASE WHEN %(status)s <> 'pending' THEN NULL "
    "WHEN %(renew)s::float8 > 0 THEN now() + %(renew)s::float8 * interval '1 second' ELSE claimed_until END "
    "WHERE payment_id = %(payment_id)s AND status = 'pending'"
)

# One statement, so one short transaction: lock what nobody holds (skipping rows another claim is
# locking right now, never waiting for them), lease it, return it.
_CLAIM = f"""
WITH claimable AS (
    SELECT payment_id FROM clawrouter_outbox
    WHERE status = 'pending' AND (claimed_until IS NULL OR claimed_until <= now())
    ORDER BY created, payment_id
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
UPDATE clawrouter_outbox AS o
SET claimed_by = %s, claimed_until = now() + %s::float8 * interval '1 second'
FROM claimable WHERE o.payment_id = claimable.payment_id
RETURNING {", ".join("o." + c.strip() for c in _INTENT_COLUMNS.split(","))}
"""

_INSERT_ENTRIES = (
    "INSERT INTO clawrouter_ledger (request_id, kind, time, data) "
    "SELECT r, k, t, d FROM unnest(%s::text[], %s::text[], %s::float8[], %s::jsonb[]) "
    "WITH ORDINALITY AS batch (r, k, t, d, n) ORDER BY n"
)


class LedgerUnavailable(ServiceUnavailable):
    """503 ``ledger_unavailable``; ``transient`` if PostgreSQL could not be reached (worth retrying)
    rather than refusing the statement."""

    def __init__(self, message: str, *, transient: bool, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.transient = transient


def _without_nul(value: Any) -> Any:
    """``value`` with U+0000, which ``jsonb`` cannot hold, replaced by U+FFFD in every string."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def _intent(r: Sequence[Any]) -> SettlementIntent:
    return SettlementIntent(
        payment_id=r[0], request_id=r[1], scheme=r[2], network=r[3], payer=r[4], amount=_int(r[5]),
        charge=_int(r[6]), expires=r[7], payment=bytes(r[8]), requirements=bytes(r[9]), status=r[10],
        transaction=r[11], error=r[12], attempts=r[13], created=r[14], updated=r[15],
    )  # fmt: skip


def _int(value: Decimal | int) -> int:
    return int(value)


class PostgresLedger:
    """A :class:`clawrouter.ledger.Ledger` over a pool of PostgreSQL connections (see the module docstring).

    :param url: a ``postgresql://`` URL (libpq parameters in its query string).
    :param min_size: connections kept open; ``max_size``: at most this many.
    :param timeout: seconds to wait for a connection (and, at least 2, for libpq's ``connect_timeout``
        unless the URL sets one) before answering 503.
    :param command_timeout: seconds a whole call may take, waiting for a connection included.
    :param flush_delay: how long ``record`` lets entries gather before one commit writes them.
    :param migrations: the schema's steps (:data:`MIGRATIONS`; tests pass a prefix of it).
    :param check_idle: a pooled connection idle longer than this is checked (one empty query)
        before it is used.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 5.0,
        command_timeout: float = 10.0,
        flush_delay: float = 0.005,
        migrations: Sequence[Migration] = MIGRATIONS,
        check_idle: float = 1.0,
    ) -> None:
        check_url(url)
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self.command_timeout = max(command_timeout, timeout)
        self.flush_delay = flush_delay
        self.migrations = tuple(migrations)
        self.check_idle = check_idle
        self._used: weakref.WeakKeyDictionary[_Conn, float] = weakref.WeakKeyDictionary()
        given = conninfo_to_dict(url)
        self._kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in given:
            self._kwargs["connect_timeout"] = max(2, round(timeout))
        if "application_name" not in given:
            self._kwargs["application_name"] = "clawrouter"
        self._pool: AsyncConnectionPool[_Conn] | None = None
        self._open_lock = asyncio.Lock()
        self._migrated = False
        self._checked = float("-inf")  # when check() last succeeded (monotonic)
        self._leases: dict[str, float] = {}  # payment id -> lease seconds, for the claims this process holds
        self._pending: list[LedgerEntry] = []
        self._flush_lock = asyncio.Lock()
        self._flushing: asyncio.Task[None] | None = None  # the flush still waiting to start
        self._tasks: set[asyncio.Task[None]] = set()  # every flush task, waiting or writing
        self._closing = False
        self._retry = 0.0  # the delay before the next retry of a failed flush
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(dict[str, Any]).decode

    def __repr__(self) -> str:  # never shows a password
        return f"PostgresLedger({redact(self.url)!r})"

    # --- connections and errors ---------------------------------------------------------

    async def _open(self) -> AsyncConnectionPool[_Conn]:
        if self._pool is None:
            pool: AsyncConnectionPool[_Conn] = AsyncConnectionPool(
                self.url,
                kwargs=self._kwargs,
                min_size=self.min_size,
                max_size=max(self.max_size, self.min_size),
                open=False,
                timeout=self.timeout,
                name="clawrouter-ledger",
                configure=self._stamp,
                check=self._check,
            )
            await pool.open(wait=False)
            self._pool = pool
        return self._pool

    async def _stamp(self, conn: _Conn) -> None:
        self._used[conn] = time.monotonic()

    async def _check(self, conn: _Conn) -> None:
        """Before a connection leaves the pool: if it sat idle longer than ``check_idle``, one empty
        round trip makes sure it still works, so one that a server restart or a firewall killed
        meanwhile is replaced instead of failing the call. Busy connections skip the round trip."""
        used = self._used.get(conn)
        if used is None or time.monotonic() - used > self.check_idle:
            await conn.execute("")

    async def _ready(self) -> AsyncConnectionPool[_Conn]:
        """The pool, opened, with the schema migrated (first use only)."""
        if self._pool is not None and self._migrated:
            return self._pool
        async with self._open_lock:
            pool = await self._open()
            if not self._migrated:
                async with pool.connection() as conn:
                    await self._apply(conn)
                self._migrated = True
        return pool

    async def _run(self, what: str, op: Callable[[_Conn], Awaitable[_R]], *, migrate: bool = True) -> _R:
        """``op`` on a pooled connection, bounded in time, with every failure a 503."""
        try:
            async with asyncio.timeout(self.command_timeout):
                pool = await (self._ready() if migrate else self._open())
                async with pool.connection() as conn:
                    try:
                        return await op(conn)
                    finally:
                        self._used[conn] = time.monotonic()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise self._unavailable(what, exc) from None

    def _unavailable(self, what: str, exc: BaseException) -> LedgerUnavailable:
        transient = isinstance(exc, PoolTimeout | TimeoutError | psycopg.OperationalError | OSError)
        reason = "cannot be reached" if transient else "failed"
        log.warning("ledger %s: PostgreSQL %s: %s: %s", what, reason, type(exc).__name__, exc)
        return LedgerUnavailable(
            f"the ledger (PostgreSQL) {reason}: {type(exc).__name__}; retry later",
            code="ledger_unavailable",
            headers=[(b"retry-after", b"5")],
            transient=transient,
        )

    def _remember_lease(self, payment_id: str, lease: float) -> None:
        """A lease this process holds, renewed by each failed attempt's ``update_intent``."""
        if len(self._leases) > 10_000:  # bounded: the oldest are the least likely to be retried
            for old in list(self._leases)[:1_000]:
                del self._leases[old]
        self._leases[payment_id] = lease

    async def check(self) -> None:
        """Raise a 503 ``ledger_unavailable`` unless PostgreSQL answers (``SELECT 1``; a success
        is trusted for a second). The verify stage calls it before a paid request is served,
        so that a request whose settlement could not be written is never served."""
        if time.monotonic() - self._checked < 1.0:
            return

        async def op(conn: _Conn) -> None:
            await conn.execute("SELECT 1")

        await self._run("check", op)
        self._checked = time.monotonic()

    # --- the schema ---------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply the migrations this database lacks; returns their versions (``[]`` if none)."""
        async with self._open_lock:
            applied = await self._run("migrate", self._apply, migrate=False)
            self._migrated = True
        return applied

    async def _apply(self, conn: _Conn) -> list[int]:
        applied: list[int] = []
        async with conn.transaction():
            # one migrator at a time per schema: the others wait here, then find nothing to do
            await conn.execute(f"SELECT pg_advisory_xact_lock({_LOCK_KEY}, hashtext(coalesce(current_schema(), '')))")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS clawrouter_schema ("
                "version integer PRIMARY KEY, description text NOT NULL, "
                "applied timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM clawrouter_schema")
            row = await cursor.fetchone()
            current = int(row[0]) if row else 0
            for migration in self.migrations:
                if migration.version <= current:
                    continue
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO clawrouter_schema (version, description) VALUES (%s, %s)",
                    (migration.version, migration.description),
                )
                applied.append(migration.version)
        if applied:
            log.info("ledger schema migrated to version %d (applied %s)", applied[-1], applied)
        elif self.migrations and current > self.migrations[-1].version:
            log.warning(
                "ledger schema is at version %d, newer than this clawrouter-postgres knows (%d)",
                current,
                self.migrations[-1].version,
            )
        return applied

    # --- entries ------------------------------------------------------------------------

    async def record(self, entry: LedgerEntry) -> None:
        if not entry.time:
            entry = msgspec.structs.replace(entry, time=time.time())
        if self.flush_delay <= 0:
            await self._insert([entry])
            return
        self._pending.append(entry)
        if self._flushing is None:
            self._schedule(self.flush_delay)

    def _schedule(self, delay: float) -> None:
        task = asyncio.get_running_loop().create_task(self._flush_later(delay))
        self._flushing = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._flushing = None  # from here on, entries recorded go to the next flush
        try:
            await self.flush()
            self._retry = 0.0
        except ServiceUnavailable:  # kept queued: retried later, or by the next record, entries or aclose
            if self._pending and self._flushing is None and not self._closing:
                self._retry = min(max(self._retry * 2, 0.5), 5.0)
                log.warning("%d ledger entries queued; retrying in %.1f s", len(self._pending), self._retry)
                self._schedule(self._retry)

    async def flush(self) -> None:
        """Write every queued entry (one statement, one commit)."""
        async with self._flush_lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                await self._insert(batch)
            except LedgerUnavailable as exc:
                if not exc.transient:  # refused by the server: retrying would block every later entry
                    log.error(
                        "ledger entries dropped, refused by PostgreSQL: %s", [(e.request_id, e.kind) for e in batch]
                    )
                    raise
                self._pending[:0] = batch  # back in front of anything queued meanwhile, in order
                raise
            except BaseException:  # cancelled: kept, in order
                self._pending[:0] = batch
                raise

    async def _insert(self, batch: list[LedgerEntry]) -> None:
        columns = (
            [e.request_id for e in batch],
            [e.kind for e in batch],
            [e.time for e in batch],
            [self._json(e.data) for e in batch],
        )

        async def op(conn: _Conn) -> None:
            await conn.execute(_INSERT_ENTRIES, columns)

        await self._run("record", op)

    def _json(self, data: dict[str, Any]) -> str:
        text = self._encode(data).decode()
        return self._encode(_without_nul(data)).decode() if "\\u0000" in text else text

    async def entries(self, request_id: str | None = None) -> list[LedgerEntry]:
        await self.flush()
        sql = "SELECT request_id, kind, data::text, time FROM clawrouter_ledger"
        args: tuple[str, ...] = ()
        if request_id is not None:
            sql, args = sql + " WHERE request_id = %s", (request_id,)

        async def op(conn: _Conn) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql + " ORDER BY seq", args)
            return await cursor.fetchall()

        decode = self._decode
        return [LedgerEntry(r, k, decode(d), t) for r, k, d, t in await self._run("entries", op)]

    # --- the outbox ---------------------------------------------------------------------

    async def add_intent(
        self, intent: SettlementIntent, *, owner: str | None = None, lease: float | None = None
    ) -> bool:
        """Write ``intent``; ``False`` if its ``payment_id`` is already there. With ``owner``, the
        intent is written already claimed by ``owner`` for ``lease`` seconds (:data:`DEFAULT_LEASE`):
        the request path settling it itself keeps other replicas' :meth:`claim_pending` off it."""
        if owner is not None and lease is None:
            lease = DEFAULT_LEASE
        now = time.time()
        i = intent
        args = (
            i.payment_id, i.request_id, i.scheme, i.network, i.payer, i.amount, i.charge, i.expires,
            i.payment, i.requirements, i.status, i.transaction, i.error, i.attempts, now, now,
            owner, None if owner is None else lease,
        )  # fmt: skip

        async def op(conn: _Conn) -> bool:
            cursor = await conn.execute(_ADD_INTENT, args)
            return cursor.rowcount == 1

        added = await self._run("add_intent", op)
        if added and owner is not None and lease is not None:
            self._remember_lease(intent.payment_id, lease)
        return added

    async def update_intent(
        self, payment_id: str, *, status: str, transaction: str = "", error: str | None = None
    ) -> None:
        """Record an attempt's outcome (``status`` ``pending`` counts a failed attempt and keeps
        the claim, renewing a lease this process holds, as its owner retries; ``settled`` or
        ``failed`` is final, lets go of the claim, and is never changed)."""
        renew = self._leases.get(payment_id, 0.0) if status == "pending" else 0.0
        if status != "pending":
            self._leases.pop(payment_id, None)
        args = {
            "status": status,
            "transaction": transaction,
            "error": error,
            "updated": time.time(),
            "payment_id": payment_id,
            "renew": renew,
        }

        async def op(conn: _Conn) -> None:
            await conn.execute(_UPDATE_INTENT, args)

        await self._run("update_intent", op)

    async def intents(self, status: str | None = None, *, since_expires: int | None = None) -> list[SettlementIntent]:
        sql = f"SELECT {_INTENT_COLUMNS} FROM clawrouter_outbox WHERE expires > %s"
        args: tuple[Any, ...] = (-1 if since_expires is None else since_expires,)
        if status is not None:
            sql, args = sql + " AND status = %s", (*args, status)

        async def op(conn: _Conn) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql + " ORDER BY created, payment_id", args)
            return await cursor.fetchall()

        return [_intent(r) for r in await self._run("intents", op)]

    async def claim_pending(self, owner: str, lease: float, limit: int = 50) -> list[SettlementIntent]:
        """Take up to ``limit`` pending intents that no live lease holds, leasing them to ``owner``
        for ``lease`` seconds (oldest first). Intents another replica holds, or is claiming at this
        very moment, are skipped, never waited for; ``update_intent`` releases the claim."""
        if lease <= 0 or limit < 1:
            raise ValueError("claim_pending needs lease > 0 and limit >= 1")
        args = (limit, owner, lease)

        async def op(conn: _Conn) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(_CLAIM, args)
            return await cursor.fetchall()

        claimed = [_intent(r) for r in await self._run("claim_pending", op)]
        for found in claimed:
            self._remember_lease(found.payment_id, lease)
        return sorted(claimed, key=lambda i: (i.created, i.payment_id))

    # --- lifecycle ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Write what is queued (logged, not raised, if PostgreSQL is down), then close the pool."""
        self._closing = True
        try:
            waiting, self._flushing = self._flushing, None
            if waiting is not None:  # still asleep: cancelling loses nothing, the flush below writes
                waiting.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)  # let a write under way finish
            try:
                await self.flush()
            except ServiceUnavailable:
                lost, self._pending = len(self._pending), []
                if lost:
                    log.error("ledger closed with %d entries not written: PostgreSQL cannot be reached", lost)
            pool, self._pool = self._pool, None
            if pool is not None:
                await pool.close()
        finally:
            self._closing = False
