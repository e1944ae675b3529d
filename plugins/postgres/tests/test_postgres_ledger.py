"""The PostgreSQL ledger against a real server (127.0.0.1:5432, database ``test``, user ``postgres``).

Without PostgreSQL the tests skip with the reason, except under ``CI=true``, where they fail: CI
must run everything. Each test gets a fresh schema, chosen through the URL's
``options=-csearch_path%3D<schema>`` (the way an operator would pick one), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from clawrouter_postgres.ledger import MIGRATIONS, SCHEMA_VERSION, PostgresLedger
from clawrouter_postgres.plugin import PostgresLedgerFactory, register_ledgers

from clawrouter.config import ConfigError, load_config
from clawrouter.errors import ServiceUnavailable
from clawrouter.ledger import Ledger, LedgerEntry, SettlementIntent, SQLiteLedger
from clawrouter.payments import (
    PaymentPayload,
    PaymentRequired,
    encode_header,
)
from clawrouter.pytest_plugin import VoucherRail, require_service
from clawrouter.router import Router

SERVER = "postgresql://postgres@127.0.0.1:5432/test"
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens here once closed


async def _sql(query: str, *args: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(SERVER, autocommit=True, connect_timeout=3) as conn:
        cursor = await conn.execute(query, args or None)
        return await cursor.fetchall() if cursor.description else []


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    require_service("127.0.0.1", 5432, "PostgreSQL")
    name = f"clawrouter_test_{uuid.uuid4().hex[:12]}"
    await _sql(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        await _sql(f"DROP SCHEMA {name} CASCADE")


@pytest.fixture
def url(schema: str) -> str:
    return f"{SERVER}?options=-csearch_path%3D{schema}"


def intent(payment_id: str, *, expires: int = 2_000_000_000, **fields: Any) -> SettlementIntent:
    return SettlementIntent(
        payment_id=payment_id,
        request_id=f"req-{payment_id}",
        scheme="exact",
        network="eip155:8453",
        payer="0xpayer",
        amount=fields.pop("amount", 1000),
        charge=fields.pop("charge", 700),
        expires=expires,
        payment=b'{"payload": "\x00\xff bytes"}',
        requirements=b'{"amount": "1000"}',
        **fields,
    )


# --- migrations ----------------------------------------------------------------------------


async def test_migrations_apply_once_when_replicas_start_together(url, schema):
    replicas = [PostgresLedger(url) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(r.migrate() for r in replicas))
        assert sorted(applied) == [[], [], [], [m.version for m in MIGRATIONS]]
        assert await replicas[0].migrate() == []  # idempotent
        rows = await _sql(f"SELECT version, description FROM {schema}.clawrouter_schema ORDER BY version")
        assert rows == [(m.version, m.description) for m in MIGRATIONS] and rows[-1][0] == SCHEMA_VERSION
        tables = await _sql("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", schema)
        assert tables == [("clawrouter_ledger",), ("clawrouter_outbox",), ("clawrouter_schema",)]
        indexes = {r[0] for r in await _sql("SELECT indexname FROM pg_indexes WHERE schemaname = %s", schema)}
        assert {"clawrouter_outbox_status", "clawrouter_outbox_expires", "clawrouter_ledger_request"} <= indexes
    finally:
        for r in replicas:
            await r.aclose()


async def test_an_older_schema_is_upgraded_in_order_and_first_use_migrates(url, schema):
    old = PostgresLedger(url, migrations=MIGRATIONS[:1])  # a database made by the first release
    assert await old.migrate() == [1]
    await old.aclose()
    await _sql(  # a row the first release wrote
        f"INSERT INTO {schema}.clawrouter_outbox (payment_id, request_id, scheme, network, payer, amount, charge, "
        "expires, payment, requirements, status, created, updated) "
        "VALUES ('p-old', 'r', 'exact', 'n', 'payer', 1, 1, 2000000000, '', '', 'pending', 1, 1)"
    )
    new = PostgresLedger(url)
    try:
        assert await new.intents() != []  # first use migrates: version 2 adds the claim columns
        assert await new.migrate() == []
        assert [i.payment_id for i in await new.claim_pending("a", 30)] == ["p-old"]
        versions = await _sql(f"SELECT version FROM {schema}.clawrouter_schema ORDER BY version")
        assert versions == [(1,), (2,)]
    finally:
        await new.aclose()


# --- entries -------------------------------------------------------------------------------


async def test_entries_are_ordered_filtered_stamped_and_durable(url):
    ledger, other = PostgresLedger(url), PostgresLedger(url)
    try:
        data = {"usage": {"prompt_tokens": 3}, "cost": 0.25, "big": 2**70, "text": "héllo ☃", "none": None}
        before = time.time()
        for n in range(3):
            await ledger.record(LedgerEntry(f"r{n % 2}", "execution", {**data, "n": n}))
        await ledger.record(LedgerEntry("r0", "receipt", {"id": "r0"}, time=123.5))
        found = await ledger.entries()
        assert [(e.request_id, e.kind, e.data.get("n")) for e in found] == [
            ("r0", "execution", 0),
            ("r1", "execution", 1),
            ("r0", "execution", 2),
            ("r0", "receipt", None),
        ]
        assert found[0].data == {**data, "n": 0} and before <= found[0].time <= time.time()
        assert found[-1].time == 123.5  # a given time is kept exactly
        assert [e.data.get("n") for e in await ledger.entries("r0")] == [0, 2, None]
        assert await ledger.entries("nobody") == []
        assert await other.entries() == found  # on the server, for every replica
        await ledger.record(LedgerEntry("r4", "execution", {"a\x00": ["b\x00"]}))  # jsonb refuses U+0000
        assert [e.data for e in await ledger.entries("r4")] == [{"a\ufffd": ["b\ufffd"]}]
        # many records at once share a commit and keep their order
        await asyncio.gather(*(ledger.record(LedgerEntry("r2", "execution", {"n": n})) for n in range(50)))
        assert [e.data["n"] for e in await ledger.entries("r2")] == list(range(50))
        # queued entries are written by aclose
        await ledger.record(LedgerEntry("r3", "released", {}))
        await ledger.aclose()
        assert [e.kind for e in await other.entries("r3")] == ["released"]
    finally:
        await ledger.aclose()
        await other.aclose()


async def test_record_without_delay_is_durable_when_it_returns(url):
    direct, other = PostgresLedger(url, flush_delay=0), PostgresLedger(url)
    try:
        await direct.record(LedgerEntry("r1", "authorization", {"payer": "0xabc"}))
        assert [e.data for e in await other.entries("r1")] == [{"payer": "0xabc"}]
    finally:
        await direct.aclose()
        await other.aclose()


# --- the outbox ------------------------------------------------------------------------------


async def _outbox_story(ledger: Ledger) -> list[SettlementIntent]:
    assert await ledger.add_intent(intent("p1", amount=2**62, charge=2**61)) is True
    assert await ledger.add_intent(intent("p1", amount=1, status="failed")) is False  # a replay: unchanged
    assert await ledger.add_intent(intent("p2", expires=1_000)) is True
    assert await ledger.add_intent(intent("p3")) is True
    await ledger.update_intent("p1", status="pending", error="RPCError: node down")
    await ledger.update_intent("p1", status="settled", transaction="0xtx")
    await ledger.update_intent("p3", status="failed", error="insufficient_funds")
    await ledger.update_intent("missing", status="settled")  # nothing to update: no error
    return await ledger.intents()


def _comparable(i: SettlementIntent) -> SettlementIntent:
    return msgspec.structs.replace(i, created=0.0, updated=0.0)


async def test_the_outbox_mirrors_the_sqlite_ledger(url, tmp_path):
    ledger, reference = PostgresLedger(url), SQLiteLedger(tmp_path / "reference.sqlite3")
    try:
        start = time.time()
        ours = await _outbox_story(ledger)
        assert [_comparable(i) for i in ours] == [_comparable(i) for i in await _outbox_story(reference)]
        p1, p2, p3 = ours
        assert (p1.status, p1.transaction, p1.error, p1.attempts) == ("settled", "0xtx", None, 2)
        assert p1.amount == 2**62 and p1.payment == b'{"payload": "\x00\xff bytes"}'
        assert (p2.status, p2.attempts) == ("pending", 0) and (p3.status, p3.error) == ("failed", "insufficient_funds")
        assert start <= p1.created <= p1.updated <= time.time() and p2.created == p2.updated
        assert [i.payment_id for i in await ledger.intents("pending")] == ["p2"]
        assert [i.payment_id for i in await ledger.intents(since_expires=1_000)] == ["p1", "p3"]
        assert [i.payment_id for i in await ledger.intents(since_expires=999)] == ["p1", "p2", "p3"]
        assert [i.payment_id for i in await ledger.intents("settled", since_expires=1_000)] == ["p1"]
        assert await ledger.intents("pending", since_expires=1_000) == []
        # amounts beyond 64 bits (uint256 token units) fit too
        assert await ledger.add_intent(intent("p4", amount=2**255, charge=2**200))
        (p4,) = [i for i in await ledger.intents() if i.payment_id == "p4"]
        assert (p4.amount, p4.charge) == (2**255, 2**200)
    finally:
        await ledger.aclose()
        await reference.aclose()


# --- claims: replicas draining the outbox together ---------------------------------------------


async def _claims(schema: str) -> dict[str, tuple[str | None, bool]]:
    rows = await _sql(
        f"SELECT payment_id, claimed_by, claimed_until > now() FROM {schema}.clawrouter_outbox ORDER BY 1"
    )
    return {p: (by, bool(live)) for p, by, live in rows}


async def test_concurrent_claims_never_share_an_intent(url):
    one, two = PostgresLedger(url, max_size=4), PostgresLedger(url, max_size=4)  # two replicas
    try:
        ids = [f"p{n:02}" for n in range(40)]
        for n, payment_id in enumerate(ids):
            await one.add_intent(intent(payment_id, status="settled" if n % 10 == 9 else "pending"))
        pending = [p for n, p in enumerate(ids) if n % 10 != 9]
        calls = [(one, "one"), (two, "two")] * 8
        results = await asyncio.gather(*(ledger.claim_pending(owner, 30, limit=3) for ledger, owner in calls))
        taken = [i.payment_id for batch in results for i in batch]
        assert len(taken) == len(set(taken)) and sorted(taken) == pending  # each exactly once
        assert all(i.status == "pending" for batch in results for i in batch)
        assert await two.claim_pending("two", 30) == []  # every lease is live
    finally:
        await one.aclose()
        await two.aclose()


async def test_claims_lease_expiry_release_and_preclaimed_intents(url, schema):
    one, two = PostgresLedger(url), PostgresLedger(url)
    try:
        await one.add_intent(intent("a"))
        await one.add_intent(intent("b"))
        assert await one.add_intent(intent("c"), owner="one", lease=30) is True  # the request path's own
        assert await one.add_intent(intent("c"), owner="two") is False
        claimed = await one.claim_pending("one", 0.3)
        assert [i.payment_id for i in claimed] == ["a", "b"]  # oldest first; "c" is held already
        assert await two.claim_pending("two", 30) == []  # held by a live lease: skipped
        claims = await _claims(schema)
        assert claims == {"a": ("one", True), "b": ("one", True), "c": ("one", True)}
        await one.update_intent("b", status="settled", transaction="0xb")  # done: the claim goes
        await one.update_intent("c", status="pending", error="node down")  # a failed attempt: its owner retries
        assert (await _claims(schema))["b"] == (None, False)
        assert (await _claims(schema))["c"] == ("one", True)  # still held
        assert await two.claim_pending("two", 30) == []
        # a final status is final: a late writer (another replica's attempt) changes nothing
        await two.update_intent("b", status="failed", error="invalid_exact_evm_nonce_already_used")
        (b,) = [i for i in await two.intents() if i.payment_id == "b"]
        assert (b.status, b.transaction, b.attempts) == ("settled", "0xb", 1)
        await asyncio.sleep(0.4)  # replica one died holding "a": its lease runs out
        taken = await two.claim_pending("two", 30)
        assert [(i.payment_id, i.status) for i in taken] == [("a", "pending")]
        assert (await _claims(schema))["a"] == ("two", True)
        with pytest.raises(ValueError):
            await one.claim_pending("one", 0)
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_row_locked_by_another_claim_is_skipped_not_waited_for(url, schema):
    ledger = PostgresLedger(url)
    try:
        for payment_id in ("a", "b", "c"):
            await ledger.add_intent(intent(payment_id))
        # another replica's claim transaction, in the middle of taking "a"
        async with await psycopg.AsyncConnection.connect(url, connect_timeout=3) as holder:
            await holder.execute(f"SELECT 1 FROM {schema}.clawrouter_outbox WHERE payment_id = 'a' FOR UPDATE")
            started = time.monotonic()
            async with asyncio.timeout(3):
                taken = await ledger.claim_pending("me", 30)
            assert time.monotonic() - started < 1.0
            assert [i.payment_id for i in taken] == ["b", "c"]
            await holder.rollback()
        assert [i.payment_id for i in await ledger.claim_pending("me", 30)] == ["a"]
    finally:
        await ledger.aclose()


# --- failure and configuration -----------------------------------------------------------------


async def test_an_unreachable_server_is_a_503_never_a_driver_error():
    port = _closed_port()
    ledger = PostgresLedger(f"postgresql://postgres:secret@127.0.0.1:{port}/test", timeout=0.3, flush_delay=0)
    try:
        calls = [
            ledger.record(LedgerEntry("r", "execution", {})),
            ledger.entries(),
            ledger.add_intent(intent("p")),
            ledger.claim_pending("me", 30),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable) as caught:
                await call
            assert time.monotonic() - started < 2.0  # short timeouts
            error = caught.value
            assert (error.status, error.code) == (503, "ledger_unavailable")
            assert (b"retry-after", b"5") in error.headers and "secret" not in str(error)
            assert error.__cause__ is None and error.__suppress_context__
    finally:
        await ledger.aclose()


async def test_connections_killed_while_idle_are_replaced_not_failed(url):
    name = f"clawrouter_test_{uuid.uuid4().hex[:8]}"
    checked = PostgresLedger(f"{url}&application_name={name}", max_size=1, check_idle=0.05)
    unchecked = PostgresLedger(f"{url}&application_name={name}", max_size=1, check_idle=3600)
    try:
        await checked.add_intent(intent("p1"))
        await unchecked.intents()
        killed = await _sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", name)
        assert len(killed) == 2  # a server restart, a failover, a firewall dropping idle connections
        await asyncio.sleep(0.1)
        assert [i.payment_id for i in await checked.intents()] == ["p1"]  # checked, replaced, served
        with pytest.raises(ServiceUnavailable) as caught:  # used unchecked: a 503, never a driver error
            await unchecked.intents()
        assert caught.value.code == "ledger_unavailable"
        assert [i.payment_id for i in await unchecked.intents()] == ["p1"]  # the broken one was discarded
    finally:
        await checked.aclose()
        await unchecked.aclose()


async def test_a_search_path_without_a_schema_is_a_503_naming_the_cause(schema):
    ledger = PostgresLedger(f"{SERVER}?options=-csearch_path%3D{schema}_missing", timeout=2)
    try:
        with pytest.raises(ServiceUnavailable, match="InvalidSchemaName") as caught:
            await ledger.intents()
        assert caught.value.code == "ledger_unavailable"
    finally:
        await ledger.aclose()


async def test_queued_entries_survive_an_outage_until_written(url):
    port = _closed_port()
    ledger = PostgresLedger(f"postgresql://postgres@127.0.0.1:{port}/test", timeout=0.2, flush_delay=0.01)
    await ledger.record(LedgerEntry("r1", "execution", {"n": 1}))
    await asyncio.sleep(0.4)  # the background flush failed: the entry stays queued
    assert [e.kind for e in ledger._pending] == ["execution"]
    with pytest.raises(ServiceUnavailable):
        await ledger.entries()
    assert len(ledger._pending) == 1
    await ledger.aclose()  # logs the loss instead of raising at shutdown
    assert ledger._pending == []


def test_configuration_errors_name_the_key_and_hide_the_password():
    factory = PostgresLedgerFactory()
    assert factory.name == "postgres" and list(register_ledgers(config=None)) != []
    with pytest.raises(ConfigError, match=r"'ledger.url': required by the postgres backend"):
        factory.create({"backend": "postgres", "path": "x", "url": ""})
    bad = [
        "redis://user:secret@127.0.0.1:6379/0",
        "host=127.0.0.1 user=postgres password=secret",
        "postgresql+psycopg://user:secret@127.0.0.1:5432/test",
        "postgresql://user:secret@127.0.0.1:5432/test?unknown_param=1",
        "postgresql://user:s%ZZecret@127.0.0.1/test",
    ]
    for url in bad:
        with pytest.raises(ConfigError, match=r"'ledger.url': ") as caught:
            factory.create({"url": url})
        assert "secret" not in str(caught.value), str(caught.value)
    ledger = factory.create({"url": "postgresql://postgres:secret@127.0.0.1:5432/test?password=secret"})
    assert isinstance(ledger, PostgresLedger) and isinstance(ledger, Ledger)
    assert "secret" not in repr(ledger) and "postgres:***@127.0.0.1" in repr(ledger)


# --- a router settling through the PostgreSQL outbox ----------------------------------------------


async def test_a_router_settles_through_the_postgres_outbox(url, monkeypatch):
    monkeypatch.setenv("CLAWROUTER_LOAD_PLUGINS", "postgres")  # this distribution's entry point only
    monkeypatch.delenv("CLAWROUTER_DISABLE_PLUGINS", raising=False)
    config = load_config(data={"ledger": {"backend": "postgres", "url": url}}, env={})
    settled: list[str] = []
    router = Router(config, plugins=[VoucherRail(settled, network="test:postgres")], env={"CLAWROUTER_KEY": "11" * 32})
    assert type(router.ledger).__name__ == "PostgresLedger"
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://r") as client:
            challenge = await client.post("/v1/chat/completions", json=CHAT)
            assert challenge.status_code == 402
            required = msgspec.json.decode(
                base64.b64decode(challenge.headers["payment-required"]), type=PaymentRequired
            )
            header = encode_header(PaymentPayload(2, {"nonce": "n-1"}, accepted=required.accepts[0])).decode()
            paid = await client.post("/v1/chat/completions", json=CHAT, headers={"payment-signature": header})
            assert paid.status_code == 200, paid.text
            again = await client.post("/v1/chat/completions", json=CHAT, headers={"payment-signature": header})
            assert again.status_code == 402, again.text  # a replay is never served twice
            assert again.json()["code"] == "invalid_exact_evm_nonce_already_used"
            await router.settler.idle()
    finally:
        await router.stop()
    assert settled == ["n-1"]
    reader = PostgresLedger(url)  # another replica, or an auditor
    try:
        (done,) = await reader.intents()
        assert (done.payment_id, done.status, done.transaction, done.attempts) == ("n-1", "settled", "tx-n-1", 1)
        kinds = [e.kind for e in await reader.entries(done.request_id)]
        assert "settlement" in kinds and "receipt" in kinds
        # a replica crashed after writing an intent: the next one to start settles it
        accepted = required.accepts[0]
        orphan = msgspec.structs.replace(
            intent("n-2", expires=int(time.time()) + 600),
            network=accepted.network,
            payment=msgspec.json.encode(PaymentPayload(2, {"nonce": "n-2"}, accepted=accepted)),
            requirements=msgspec.json.encode(accepted),
        )
        assert await reader.add_intent(orphan)
        replica = Router(
            config, plugins=[VoucherRail(settled, network="test:postgres")], env={"CLAWROUTER_KEY": "11" * 32}
        )
        await replica.start()
        try:
            for _ in range(100):  # bounded: the settler's first recovery runs at once
                if [i.payment_id for i in await reader.intents("settled")] == ["n-1", "n-2"]:
                    break
                await asyncio.sleep(0.02)
        finally:
            await replica.stop()
        assert settled == ["n-1", "n-2"]
        assert [(i.payment_id, i.transaction) for i in await reader.intents("settled")] == [
            ("n-1", "tx-n-1"),
            ("n-2", "tx-n-2"),
        ]
    finally:
        await reader.aclose()


# --- replicas draining one outbox -----------------------------------------------------------------


def _orphan(payment_id: str, rail: VoucherRail, **fields: Any) -> SettlementIntent:
    """A pending intent some replica wrote and never settled (it crashed)."""
    accepted = rail.requirements(1000, "http://r/v1/chat/completions")
    return msgspec.structs.replace(
        intent(payment_id, expires=int(time.time()) + 600, **fields),
        network=rail.network,
        payment=msgspec.json.encode(PaymentPayload(2, {"nonce": payment_id}, accepted=accepted)),
        requirements=msgspec.json.encode(accepted),
    )


async def test_two_routers_drain_one_outbox_settling_each_intent_once(url, monkeypatch):
    """Both replicas recover at start, at the same moment: each intent is claimed, so settled, once."""
    monkeypatch.setenv("CLAWROUTER_LOAD_PLUGINS", "postgres")
    monkeypatch.delenv("CLAWROUTER_DISABLE_PLUGINS", raising=False)
    config = load_config(data={"ledger": {"backend": "postgres", "url": url}}, env={})
    settled: list[str] = []  # what the chain saw, from both replicas
    replicas = [
        Router(
            config,
            plugins=[VoucherRail(settled, network="test:postgres", delay=0.02)],
            env={"CLAWROUTER_KEY": "11" * 32},
        )
        for _ in range(2)
    ]
    rail = VoucherRail([], network="test:postgres")
    writer = PostgresLedger(url)
    ids = [f"n-{n:02d}" for n in range(12)]
    try:
        for payment_id in ids:
            assert await writer.add_intent(_orphan(payment_id, rail))
        # one more, held by a replica that is settling it right now (a live lease): left alone
        assert await writer.add_intent(_orphan("held", rail), owner="elsewhere", lease=1.0)
        await asyncio.gather(*(r.start() for r in replicas))  # each one's first recovery runs at once
        for _ in range(250):  # bounded
            if len(await writer.intents("settled")) == len(ids):
                break
            await asyncio.sleep(0.02)
        assert sorted(settled) == ids and len(settled) == len(set(settled))  # every one, once
        assert "held" not in settled
        await asyncio.sleep(1.1)  # the holder died: its lease runs out, and the next recovery takes it
        assert await replicas[1].settler.recover() == 1
        assert await replicas[0].settler.recover() == 0
        assert settled.count("held") == 1
        owners = {i.payment_id: i.status for i in await writer.intents()}
        assert set(owners.values()) == {"settled"}
    finally:
        await asyncio.gather(*(r.stop() for r in replicas))
        await writer.aclose()


async def test_a_router_whose_postgres_is_down_refuses_paid_requests_before_serving(monkeypatch):
    """The verify stage checks the ledger first: nothing is served that could not be settled."""
    monkeypatch.setenv("CLAWROUTER_LOAD_PLUGINS", "postgres")
    monkeypatch.delenv("CLAWROUTER_DISABLE_PLUGINS", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    config = load_config(
        data={"ledger": {"backend": "postgres", "url": f"postgresql://postgres@127.0.0.1:{port}/test"}}, env={}
    )
    settled: list[str] = []
    router = Router(config, plugins=[VoucherRail(settled, network="test:postgres")], env={"CLAWROUTER_KEY": "11" * 32})
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://r") as client:
            challenge = await client.post("/v1/chat/completions", json=CHAT)
            assert challenge.status_code == 402  # a quote needs no ledger
            required = msgspec.json.decode(
                base64.b64decode(challenge.headers["payment-required"]), type=PaymentRequired
            )
            header = encode_header(PaymentPayload(2, {"nonce": "n-9"}, accepted=required.accepts[0])).decode()
            paid = await client.post("/v1/chat/completions", json=CHAT, headers={"payment-signature": header})
            assert paid.status_code == 503, paid.text
            assert paid.json()["error"]["code"] == "ledger_unavailable" and paid.headers["retry-after"] == "5"
            assert "choices" not in paid.text
    finally:
        await router.stop()
    assert settled == []


async def test_a_failed_attempt_renews_the_lease_its_owner_holds(url, schema):
    one, two = PostgresLedger(url), PostgresLedger(url)
    try:
        assert await one.add_intent(intent("r"), owner="one", lease=0.6)
        await asyncio.sleep(0.4)
        await one.update_intent("r", status="pending", error="node down")  # retrying: held 0.6 s more
        await asyncio.sleep(0.4)  # 0.8 s after the claim, 0.4 s after the renewal
        assert await two.claim_pending("two", 30) == []
        await asyncio.sleep(0.4)  # the owner stopped retrying (it died): the lease runs out
        assert [i.payment_id for i in await two.claim_pending("two", 30)] == ["r"]
    finally:
        await one.aclose()
        await two.aclose()
