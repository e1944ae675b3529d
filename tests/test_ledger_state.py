from __future__ import annotations

import asyncio

import pytest

from clawrouter.ledger import LedgerEntry, MemoryLedger, SQLiteLedger
from clawrouter.state import MemoryState


async def test_sqlite_ledger_is_durable(tmp_path):
    path = tmp_path / "deep" / "ledger.sqlite3"
    ledger = SQLiteLedger(path)
    await ledger.record(LedgerEntry("r1", "authorization", {"amount": 5}))
    await ledger.record(LedgerEntry("r2", "authorization", {"amount": 7}))
    await ledger.record(LedgerEntry("r1", "settlement", {"transaction": "0xabc"}))
    await ledger.aclose()
    reopened = SQLiteLedger(path)
    entries = await reopened.entries("r1")
    assert [(e.kind, e.data) for e in entries] == [
        ("authorization", {"amount": 5}),
        ("settlement", {"transaction": "0xabc"}),
    ]
    assert all(e.time > 0 for e in entries)
    assert len(await reopened.entries()) == 3
    await reopened.aclose()


async def test_sqlite_ledger_group_commits_entries_and_writes_intents_at_once(tmp_path):
    from clawrouter.ledger import SettlementIntent

    path = tmp_path / "ledger.sqlite3"
    ledger = SQLiteLedger(path, flush_delay=0.05)
    other = SQLiteLedger(path)  # another process's view of the file
    for i in range(20):
        await ledger.record(LedgerEntry(f"r{i}", "authorization"))
    assert await other.entries() == []  # queued, not yet committed
    await asyncio.sleep(0.2)  # one delayed flush commits the whole batch
    assert len(await other.entries()) == 20
    intent = SettlementIntent(
        payment_id="p", request_id="r0", scheme="exact", network="n", payer="a", amount=5, charge=4,
        expires=0, payment=b"{}", requirements=b"{}",
    )  # fmt: skip
    assert await ledger.add_intent(intent)
    assert [i.payment_id for i in await other.intents("pending")] == ["p"]  # durable on return
    await ledger.aclose()
    await other.aclose()


async def test_memory_ledger():
    ledger = MemoryLedger()
    await asyncio.gather(*[ledger.record(LedgerEntry(f"r{i}", "execution")) for i in range(5)])
    assert len(await ledger.entries()) == 5 and len(await ledger.entries("r3")) == 1


async def test_memory_state_locks_expire():
    state = MemoryState()
    assert await state.acquire("p", 0.05)
    assert not await state.acquire("p", 0.05)
    await asyncio.sleep(0.06)
    assert await state.acquire("p", 10)
    await state.release("p")
    assert await state.acquire("p", 10)


async def test_sqlite_close_waits_for_a_query_whose_caller_was_cancelled(tmp_path, monkeypatch):
    """A settler stopped mid-scan: its query still runs on the worker thread, and closing
    the ledger must wait for it (closing the connection under a running query crashed the
    process with a segmentation fault)."""
    import threading
    import time as _time

    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3")
    await ledger.intents()  # connected
    started, seen = threading.Event(), []
    query = ledger._intents

    def slow(*args):
        connection = ledger._db
        started.set()
        _time.sleep(0.2)
        seen.append(ledger._db is connection)  # still open, and the same connection
        return query(*args)

    monkeypatch.setattr(ledger, "_intents", slow)
    scan = asyncio.create_task(ledger.intents("pending"))
    assert await asyncio.to_thread(started.wait, 5)
    scan.cancel()
    await ledger.aclose()
    assert seen == [True]
    assert ledger._db is None


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_final_intent_status_is_never_changed(kind, tmp_path):
    """A late attempt (another replica's, after a lease ran out) cannot undo a settlement."""
    from clawrouter.ledger import SettlementIntent

    ledger = MemoryLedger() if kind == "memory" else SQLiteLedger(tmp_path / "ledger.sqlite3")
    intent = SettlementIntent(
        payment_id="p", request_id="r", scheme="exact", network="n", payer="a", amount=5, charge=4,
        expires=0, payment=b"{}", requirements=b"{}",
    )  # fmt: skip
    assert await ledger.add_intent(intent)
    await ledger.update_intent("p", status="pending", error="node down")  # a failed attempt
    await ledger.update_intent("p", status="settled", transaction="0xabc")
    await ledger.update_intent("p", status="failed", error="invalid_exact_evm_nonce_already_used")
    (done,) = await ledger.intents()
    assert (done.status, done.transaction, done.error, done.attempts) == ("settled", "0xabc", None, 2)
    await ledger.aclose()
