"""The Redis state backend against a real Redis (127.0.0.1:6379), alone and under two routers.

Without Redis the tests skip with the reason, except under ``CI=true``, where they fail:
CI must run everything. Each test uses its own key prefix and deletes its keys.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from clawrouter_redis.plugin import RedisStateFactory
from clawrouter_redis.state import RedisState

from clawrouter.config import ConfigError, load_config
from clawrouter.errors import ServiceUnavailable
from clawrouter.payments import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    encode_header,
)
from clawrouter.pytest_plugin import VoucherRail, check_limit_counters, require_service
from clawrouter.router import Router

URL = "redis://127.0.0.1:6379/0"
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require_service("127.0.0.1", 6379, "Redis")
    name = f"clawrouter-test:{uuid.uuid4().hex}:"
    yield name
    cleaner = RedisState(URL, prefix="")
    keys = [k async for k in cleaner.client.scan_iter(match=name + "*")]
    if keys:
        await cleaner.client.delete(*keys)
    await cleaner.aclose()


async def test_lock_marker_release_and_expiry(prefix):
    one, two = RedisState(URL, prefix=prefix), RedisState(URL, prefix=prefix)  # two replicas' clients
    try:
        assert await one.ping()
        assert await one.acquire("pay:1", 30) is True
        assert await two.acquire("pay:1", 30) is False  # held, by another replica
        assert await two.get("pay:1") == "locked"
        await one.set("pay:1", "settled", 30)  # the settled marker replaces the lock
        assert await two.get("pay:1") == "settled" and await two.acquire("pay:1", 30) is False
        await two.release("pay:1")
        assert await one.get("pay:1") is None and await one.acquire("pay:1", 0.05) is True
        await asyncio.sleep(0.15)  # a holder that died: its lock frees itself
        assert await two.acquire("pay:1", 30) is True
        assert await one.client.pttl(prefix + "pay:1") > 29_000  # namespaced, with the TTL asked
    finally:
        await one.aclose()
        await two.aclose()


async def test_one_winner_among_many_concurrent_acquires(prefix):
    replicas = [RedisState(URL, prefix=prefix) for _ in range(4)]
    try:
        wins = await asyncio.gather(*(replicas[i % 4].acquire("pay:race", 30) for i in range(64)))
        assert sum(wins) == 1
    finally:
        for replica in replicas:
            await replica.aclose()


async def test_an_unreachable_redis_fails_closed():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    state = RedisState(f"redis://127.0.0.1:{port}/0", timeout=0.5)
    try:
        with pytest.raises(ServiceUnavailable) as caught:
            await state.acquire("pay:1", 30)
        assert caught.value.code == "state_unavailable" and caught.value.status == 503
    finally:
        await state.aclose()


def test_configuration_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"'state.url': required by the redis backend"):
        RedisStateFactory().create({"url": ""})
    with pytest.raises(ConfigError, match=r"'state.url': .* is not a redis://"):
        RedisStateFactory().create({"url": "http://user:secret@example/0"})
    state = RedisStateFactory().create({"url": "redis://user:secret@127.0.0.1:6379/0", "prefix": "x:"})
    assert "secret" not in repr(state) and state.prefix == "x:"


# --- two routers sharing Redis -----------------------------------------------------------


def router(
    state: dict[str, Any], settled: list[str], monkeypatch: pytest.MonkeyPatch, limits: dict[str, Any] | None = None
) -> Router:
    monkeypatch.setenv("CLAWROUTER_LOAD_PLUGINS", "redis")  # this distribution's entry point only
    monkeypatch.delenv("CLAWROUTER_DISABLE_PLUGINS", raising=False)
    data: dict[str, Any] = {"state": state, "ledger": {"backend": "memory"}}
    if limits is not None:
        data["limits"] = limits
    config = load_config(data=data, env={})
    key = {"CLAWROUTER_KEY": "11" * 32}  # both replicas share the router key (quotes, receipts)
    return Router(config, plugins=[VoucherRail(settled, network="test:redis", delay=0.05)], env=key)


async def _accepted(client: httpx.AsyncClient) -> PaymentRequirements:
    challenge = await client.post("/v1/chat/completions", json=CHAT)
    assert challenge.status_code == 402
    document = msgspec.json.decode(base64.b64decode(challenge.headers["payment-required"]), type=PaymentRequired)
    return document.accepts[0]


async def test_two_routers_sharing_redis_serve_a_payment_once(prefix, monkeypatch):
    settled: list[str] = []
    state = {"backend": "redis", "url": URL, "prefix": prefix}
    a, b = router(state, settled, monkeypatch), router(state, settled, monkeypatch)
    assert type(a.state).__name__ == "RedisState"
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(a.app), base_url="http://a") as to_a,
        httpx.AsyncClient(transport=httpx.ASGITransport(b.app), base_url="http://b") as to_b,
    ):
        accepted = await _accepted(to_a)
        header = encode_header(PaymentPayload(2, {"nonce": "n-1"}, accepted=accepted)).decode()
        paid = {"payment-signature": header}
        answers = await asyncio.gather(
            to_a.post("/v1/chat/completions", json=CHAT, headers=paid),
            to_b.post("/v1/chat/completions", json=CHAT, headers=paid),
        )
        assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
        # after settlement, the marker in Redis refuses the copy on either router
        again = await to_b.post("/v1/chat/completions", json=CHAT, headers=paid)
        assert again.status_code == 402 and again.json()["code"] == "invalid_exact_evm_nonce_already_used"
    assert settled == ["n-1"]
    await a.stop()
    await b.stop()


async def test_a_router_whose_redis_is_down_refuses_paid_requests_with_503(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settled: list[str] = []
    down = router({"backend": "redis", "url": f"redis://127.0.0.1:{port}/0"}, settled, monkeypatch)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(down.app), base_url="http://down") as client:
        accepted = await _accepted(client)
        header = encode_header(PaymentPayload(2, {"nonce": "n-2"}, accepted=accepted)).decode()
        response = await client.post("/v1/chat/completions", json=CHAT, headers={"payment-signature": header})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "state_unavailable"
        assert response.headers["retry-after"] == "5"
    assert settled == []  # nothing served, nothing charged
    await down.stop()


def test_the_backend_is_chosen_from_config(monkeypatch):
    with pytest.raises(ConfigError, match=r"'state.url': required by the redis backend"):
        router({"backend": "redis"}, [], monkeypatch)


# --- budgets and rate limits in Redis ------------------------------------------------------------


async def test_the_limit_counters_as_lua_scripts(prefix):
    state = RedisState(URL, prefix=prefix)
    try:
        await check_limit_counters(state)
        assert 55_000 < await state.client.pttl(prefix + "day") <= 60_000
        # many concurrent reservations of one unit against a cap of 25: exactly 25 win
        wins = await asyncio.gather(*(state.budget_reserve([("race", 25, 60.0)], 1) for _ in range(60)))
        assert sum(wins) == 25
    finally:
        await state.aclose()


async def test_a_budget_holds_across_two_routers_under_concurrent_load(prefix, monkeypatch):
    """Two replicas, 12 concurrent paid requests from one payer whose total budget covers 5."""
    settled: list[str] = []
    state = {"backend": "redis", "url": URL, "prefix": prefix}
    limits = {"payers": {"agent": {"max_total_usd": "0"}}}  # replaced below, once the quote is known
    a = router(state, settled, monkeypatch, limits=limits)
    b = router(state, settled, monkeypatch, limits=limits)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(a.app), base_url="http://a") as to_a,
        httpx.AsyncClient(transport=httpx.ASGITransport(b.app), base_url="http://b") as to_b,
    ):
        accepted = await _accepted(to_a)
        quote = int(accepted.amount)
        budget = {"payers": {"agent": {"max_total_usd": f"{(5 * quote + quote // 2) / 1e6:.6f}"}}}
        await a.limits.replace(msgspec.json.encode(budget))  # through Redis: B reads it too

        def paid(n: int) -> dict[str, str]:
            return {
                "payment-signature": encode_header(PaymentPayload(2, {"nonce": f"c-{n}"}, accepted=accepted)).decode()
            }

        answers = await asyncio.gather(
            *((to_a if n % 2 else to_b).post("/v1/chat/completions", json=CHAT, headers=paid(n)) for n in range(12))
        )
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) == 5 and codes.count(402) == 7, [r.text for r in answers if r.status_code != 402]
    assert all(r.json()["error"]["code"] == "budget_exceeded" for r in answers if r.status_code == 402)
    assert len(settled) == 5
    assert (await a.limits.usage("payer", "agent"))["total"]["spent_usd"] == f"{5 * quote / 1e6:g}"
    await a.stop()
    await b.stop()


# --- routing statistics shared by replicas -------------------------------------------------------


async def test_replicas_see_each_others_routing_measurements(prefix, monkeypatch):
    a = router({"backend": "redis", "url": URL, "prefix": prefix}, [], monkeypatch)
    b = router({"backend": "redis", "url": URL, "prefix": prefix}, [], monkeypatch)
    model = "simulated/eco"
    for _ in range(20):
        a.stats.success(model, 2.0, ttft=0.5)  # A measured a slow model
    for _ in range(10):
        a.stats.failure(model)
    b.stats.success(model, 0.1)
    await a.sync_stats()
    await b.sync_stats()  # B absorbs A's measurements
    b.stats.maybe_refresh()
    seen = b.stats.snapshot(model)
    assert seen.samples == 21 and seen.latency is not None and seen.latency[0] == 2.0  # the fleet's p50
    assert 0.2 < seen.error_rate < 0.6 and seen.ttft == (0.5, 0.5, 0.5)
    await a.sync_stats()
    a.stats.maybe_refresh()
    assert a.stats.snapshot(model).samples == 21  # and the other way round
    # a replica that stopped publishing is forgotten when its entry expires
    await a.state.client.delete(prefix + "stats:" + a.replica)
    await b.sync_stats()
    b.stats.maybe_refresh()
    assert b.stats.snapshot(model).samples == 1
    assert a.replica not in await b.state.client.smembers(prefix + "stats:replicas")
    await a.state.aclose()  # (never started: stop() has nothing to close)
    await b.state.aclose()


async def test_the_sync_loop_runs_with_the_router(prefix, monkeypatch):
    state = {"backend": "redis", "url": URL, "prefix": prefix, "stats_sync_seconds": 0.05}
    a, b = router(state, [], monkeypatch), router(state, [], monkeypatch)
    a.stats.success("simulated/eco", 1.5)
    await a.start()
    await b.start()
    try:
        for _ in range(100):  # bounded
            b.stats.maybe_refresh()
            if b.stats.snapshot("simulated/eco").samples:
                break
            await asyncio.sleep(0.02)
        assert b.stats.snapshot("simulated/eco").latency == (1.5, 1.5, 1.5)
    finally:
        await a.stop()
        await b.stop()
