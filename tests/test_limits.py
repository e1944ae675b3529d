"""Budgets and rate limits per API key and per payer ([limits], the admin endpoint), on the memory backend.

The Redis backend runs the same operations as Lua scripts: plugins/redis/tests covers them,
and a budget holding across two routers sharing Redis.
"""

from __future__ import annotations

import base64
import json

import pytest
from helpers import chat
from plugins.fake_rail import FakeRail, FakeRailPlugin, payment_header

from clawrouter.config import ConfigError, load_config
from clawrouter.default_auth import hash_key
from clawrouter.limits import Limit, LimitsConfig
from clawrouter.pytest_plugin import check_limit_counters
from clawrouter.state import MemoryState

URL = "/v1/chat/completions"
ADMIN = "admin-secret"
BODY = chat(model="eco", max_tokens=50)


@pytest.fixture
def rail():
    rail = FakeRail()
    rail.balances["alice"] = rail.balances["bob"] = 10_000_000
    return rail


def make(clawrouter_router, rail, limits, **config):
    data = {
        "ledger": {"backend": "memory"},
        "auth": {"api_keys": [{"name": "team-a", "sha256": hash_key("key-a")}]},
        "limits": {"admin_key_sha256": hash_key(ADMIN), **limits},
        **config,
    }
    return clawrouter_router(data, plugins=[FakeRailPlugin(rail)])


async def pay(client, payer="alice", nonce="n1", key="key-a", body=BODY):
    challenge = await client.post(URL, json=body, headers={"authorization": f"Bearer {key}"})
    assert challenge.status_code == 402, challenge.text
    accepts = json.loads(base64.b64decode(challenge.headers["payment-required"]))["accepts"][0]
    header = payment_header(accepts, payer=payer, nonce=nonce)
    return await client.post(URL, json=body, headers={"PAYMENT-SIGNATURE": header, "authorization": f"Bearer {key}"})


def test_limits_are_validated_with_the_key_named():
    with pytest.raises(ConfigError, match=r"'limits.default': max_per_day_usd must be a USD amount"):
        load_config(data={"limits": {"default": {"max_per_day_usd": "lots"}}}, env={})
    with pytest.raises(ConfigError, match=r"'limits.keys\[...\]': requests_per_minute must be"):
        load_config(data={"limits": {"keys": {"a": {"requests_per_minute": -1}}}}, env={})
    assert not LimitsConfig().active() and LimitsConfig(default=Limit(requests_per_minute=1)).active()
    assert Limit(max_total_usd="1.25").cap("max_total_usd") == 1_250_000


async def test_no_limits_no_overhead(clawrouter_router, rail):
    router = clawrouter_router({"ledger": {"backend": "memory"}}, plugins=[FakeRailPlugin(rail)])
    assert router.limits is None


async def test_an_api_key_over_its_requests_per_minute_gets_429(clawrouter_router, clawrouter_client, rail):
    router = make(clawrouter_router, rail, {"keys": {"team-a": {"requests_per_minute": 3}}})
    client = await clawrouter_client(router)
    answers = [await client.post(URL, json=BODY, headers={"authorization": "Bearer key-a"}) for _ in range(4)]
    assert [a.status_code for a in answers] == [402, 402, 402, 429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited" and refused.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    other = await client.post(URL, json=BODY)  # anonymous: the default limit (none)
    assert other.status_code == 402


async def test_budgets_per_request_per_day_and_in_total(clawrouter_router, clawrouter_client, rail):
    router = make(clawrouter_router, rail, {})
    client = await clawrouter_client(router)
    first = await pay(client, nonce="probe")
    assert first.status_code == 200
    challenge = await client.post(URL, json=BODY, headers={"authorization": "Bearer key-a"})
    quote = int(json.loads(base64.b64decode(challenge.headers["payment-required"]))["accepts"][0]["amount"])
    # a day budget of two calls for alice; the API key's total caps three calls
    day, total = f"{(2 * quote + 1) / 1e6:.6f}", f"{(3 * quote + 1) / 1e6:.6f}"
    limits = {"payers": {"alice": {"max_per_day_usd": day}}, "keys": {"team-a": {"max_total_usd": total}}}
    await router.limits.replace(json.dumps(limits).encode())
    assert (await pay(client, nonce="a1")).status_code == 200
    assert (await pay(client, nonce="a2")).status_code == 200
    refused = await pay(client, nonce="a3")
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "budget_exceeded"
    assert 0 < int(refused.headers["retry-after"]) <= 86400  # until midnight UTC
    # bob has no day budget, but the key's total (3 calls, one spent by the probe... the probe
    # came before the limit, so only a1 and a2 count): one more, then refused
    assert (await pay(client, payer="bob", nonce="b1")).status_code == 200
    over = await pay(client, payer="bob", nonce="b2")
    assert over.status_code == 402 and over.json()["error"]["code"] == "budget_exceeded"
    assert [n for n, _ in rail.settled] == ["probe", "a1", "a2", "b1"]  # refused ones were not charged
    # per request
    await router.limits.replace(json.dumps({"default": {"max_per_request_usd": "0.000001"}}).encode())
    tiny = await pay(client, payer="bob", nonce="b3")
    assert tiny.status_code == 402 and "per request" in tiny.json()["error"]["message"]


async def test_a_failed_call_releases_its_reservation(clawrouter_router, clawrouter_client, rail):
    router = make(clawrouter_router, rail, {"default": {"max_total_usd": "1"}})
    client = await clawrouter_client(router)
    rail.fail_settle = True
    failed = await pay(client, nonce="f1")
    assert failed.status_code != 200
    usage = await router.limits.usage("payer", "alice")
    assert usage["total"] == {"spent_usd": "0", "reserved_usd": "0"}
    rail.fail_settle = False
    assert (await pay(client, nonce="f2")).status_code == 200
    usage = await router.limits.usage("payer", "alice")
    assert usage["total"]["spent_usd"] != "0" and usage["total"]["reserved_usd"] == "0"


async def test_the_admin_endpoint(clawrouter_router, clawrouter_client, rail):
    router = make(clawrouter_router, rail, {"default": {"requests_per_minute": 100}})
    client = await clawrouter_client(router)
    assert (await client.get("/-/admin/limits")).status_code == 401
    assert (await client.get("/-/admin/limits", headers={"authorization": "Bearer wrong"})).status_code == 401
    admin = {"authorization": f"Bearer {ADMIN}"}
    current = (await client.get("/-/admin/limits", headers=admin)).json()
    assert current["limits"]["default"]["requests_per_minute"] == 100
    assert current["limits"]["admin_key_sha256"] == ""  # never shown
    changed = await client.put(
        "/-/admin/limits", headers=admin, json={"payers": {"alice": {"max_per_request_usd": "0.000001"}}}
    )
    assert changed.status_code == 200 and changed.json()["limits"]["payers"]["alice"]["max_per_request_usd"]
    refused = await pay(client, nonce="x1")  # in force at once, without a restart
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "budget_exceeded"
    bad = await client.put("/-/admin/limits", headers=admin, json={"default": {"max_total_usd": "-1"}})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_limits"
    usage = (await client.get("/-/admin/limits?payer=alice", headers=admin)).json()["usage"]
    assert set(usage["payer:alice"]) == {"day", "total"}
    assert (await client.delete("/-/admin/limits", headers=admin)).status_code == 405


async def test_no_admin_key_no_endpoint(clawrouter_router, clawrouter_client, rail):
    router = clawrouter_router(
        {"ledger": {"backend": "memory"}, "limits": {"default": {"requests_per_minute": 5}}},
        plugins=[FakeRailPlugin(rail)],
    )
    client = await clawrouter_client(router)
    assert (await client.get("/-/admin/limits", headers={"authorization": "Bearer x"})).status_code == 404


async def test_memory_counters():
    await check_limit_counters(MemoryState())


@pytest.mark.parametrize("value", ["1e999999999", "1e5000", "0.0000015", " 1", "-0.5", "NaN", "abc"])
async def test_amounts_outside_the_range_are_refused_not_crashed_on(value, clawrouter_router, clawrouter_client, rail):
    with pytest.raises(ConfigError, match="max_total_usd must be a USD amount from 0 to 10\\^12"):
        load_config(data={"limits": {"default": {"max_total_usd": value}}}, env={})
    router = make(clawrouter_router, rail, {})
    client = await clawrouter_client(router)
    answer = await client.put(
        "/-/admin/limits", headers={"authorization": f"Bearer {ADMIN}"}, json={"default": {"max_total_usd": value}}
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_limits"
    assert (await pay(client)).status_code == 200  # the limits in force are untouched


def test_payer_limits_match_evm_addresses_in_any_case():
    from clawrouter.limits import subject

    config = LimitsConfig(payers={"0xAbCdEf": Limit(requests_per_minute=7)})
    assert config.limit_for("payer", subject("payer", "0xABCDEF")).requests_per_minute == 7
    assert config.limit_for("payer", subject("payer", "0xabcdef")).requests_per_minute == 7
    base58 = LimitsConfig(payers={"So1anaPayer": Limit(requests_per_minute=3)})
    assert base58.limit_for("payer", subject("payer", "So1anaPayer")).requests_per_minute == 3
    assert base58.limit_for("payer", subject("payer", "so1anapayer")).requests_per_minute == 0  # case matters


async def test_a_settled_payment_is_reported_settled_even_if_its_bookkeeping_fails(
    clawrouter_router, clawrouter_client, rail, monkeypatch
):
    """The chain has spoken: the state backend failing after the transfer must not turn the answer
    into an error that says nothing was charged."""
    from clawrouter.errors import ServiceUnavailable

    router = make(clawrouter_router, rail, {})
    client = await clawrouter_client(router)

    async def down(*args, **kwargs):
        raise ServiceUnavailable("redis is down", code="state_unavailable")

    monkeypatch.setattr(router.state, "set", down)
    response = await pay(client, nonce="s1")
    assert response.status_code == 200, response.text
    settlement = json.loads(base64.b64decode(response.headers["payment-response"]))
    assert settlement["success"] is True and settlement["transaction"] == "tx-s1"
    [intent] = await router.ledger.intents()
    assert intent.status == "settled"


async def test_a_payer_over_its_rate_gets_429_and_holds_no_budget(clawrouter_router, clawrouter_client, rail):
    """Rate limit and budget are checked at once: a reservation made as the rate limit refused is released."""
    router = make(clawrouter_router, rail, {"payers": {"alice": {"requests_per_minute": 1, "max_total_usd": "10"}}})
    client = await clawrouter_client(router)
    assert (await pay(client, nonce="r1")).status_code == 200
    refused = await pay(client, nonce="r2")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    total = (await router.limits.usage("payer", "alice"))["total"]
    assert total["reserved_usd"] == "0" and total["spent_usd"] != "0"
    assert [n for n, _ in rail.settled] == ["r1"]
