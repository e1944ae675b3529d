"""Two ``clawrouter serve`` replicas sharing Redis (locks, markers) and PostgreSQL (ledger, outbox).

On anvil, with the EVM ``exact`` rail: one payment sent to both replicas at once is served
once and settled once; a replica SIGKILLed while its settlement transaction waits to be mined
has that settlement completed, exactly once, by the other replica once its lease runs out.
Needs Redis (127.0.0.1:6379), PostgreSQL (127.0.0.1:5432, database ``test``), anvil and the
clawrouter-redis and clawrouter-postgres plugins: skipped without them, failed under ``CI=true``.
"""

from __future__ import annotations

import base64
import concurrent.futures
import importlib.util
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from chains import anvil_chain, anvil_wallets, missing  # noqa: F401 - fixtures
from serving import Serve, paid_config

from clawrouter.evm.pay import pay_exact, payment_header
from clawrouter.pytest_plugin import require_service

pytestmark = pytest.mark.slow

URL = "/v1/chat/completions"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
BODY = {"model": "eco", "messages": [{"role": "user", "content": "replicas"}], "max_tokens": 30}


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(a PostgreSQL URL on a fresh schema, a Redis key prefix), both removed afterwards."""
    for module, dist in (("clawrouter_redis", "plugins/redis"), ("clawrouter_postgres", "plugins/postgres")):
        if importlib.util.find_spec(module) is None:
            missing(f"{module} is not installed (pip install -e {dist})")
    require_service("127.0.0.1", 6379, "Redis")
    require_service("127.0.0.1", 5432, "PostgreSQL")
    import psycopg
    import redis

    schema = f"clawrouter_replicas_{uuid.uuid4().hex[:10]}"
    prefix = f"clawrouter-replicas:{uuid.uuid4().hex}:"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}", prefix
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
        client = redis.Redis(host="127.0.0.1", port=6379)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


wallets = anvil_wallets  # a fixture: (router key, agent with 2 USDC, operator)


def replica_config(tmp_path: Path, chain, pay_to: str, ledger_url: str, prefix: str) -> Path:
    shared = f"""
[state]
backend = "redis"
url = "redis://127.0.0.1:6379/0"
prefix = "{prefix}"

[ledger]
backend = "postgres"
url = "{ledger_url}"
"""
    return paid_config(tmp_path, chain, pay_to, payments="settle_attempts = 1\nsettle_lease_seconds = 3", rest=shared)


def _outbox(ledger_url: str) -> list[tuple[str, str]]:
    import psycopg

    with psycopg.connect(ledger_url) as conn:
        return [(s, t) for s, t in conn.execute("SELECT status, transaction_hash FROM clawrouter_outbox").fetchall()]


def _transfers_to(chain, address: str) -> list:
    return chain.token_contract.events.Transfer.get_logs(from_block=0, argument_filters={"to": address})


def test_one_payment_sent_to_both_replicas_is_served_once_and_settled_once(anvil_chain, wallets, shared, tmp_path):  # noqa: F811
    router_key, agent, operator = wallets
    ledger_url, prefix = shared
    config = replica_config(tmp_path, anvil_chain, operator.address, ledger_url, prefix)
    a, b = Serve(config, router_key), Serve(config, router_key)
    try:
        challenge = httpx.post(a.url + URL, json=BODY, timeout=10)
        accepts = json.loads(base64.b64decode(challenge.headers["payment-required"]))["accepts"][0]
        headers = {"PAYMENT-SIGNATURE": payment_header(pay_exact(accepts, agent.private_key))}
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda s: httpx.post(s.url + URL, json=BODY, headers=headers, timeout=30), (a, b)))
        statuses = sorted(r.status_code for r in answers)
        assert statuses[0] == 200 and statuses[1] in (402, 409), [r.text for r in answers]
        for replica in (a, b):  # settled: refused on either replica from now on
            again = httpx.post(replica.url + URL, json=BODY, headers=headers, timeout=10)
            assert again.status_code == 402 and again.json()["code"] == "invalid_exact_evm_nonce_already_used"
    finally:
        a.stop()
        b.stop()
    amount = int(accepts["amount"])
    assert len(_transfers_to(anvil_chain, operator.address)) == 1
    assert anvil_chain.usdc_balance(operator.address) == amount
    [(status, transaction)] = _outbox(ledger_url)
    assert status == "settled" and anvil_chain.w3.eth.get_transaction_receipt(transaction)["status"] == 1


def test_a_replica_killed_mid_settlement_has_it_completed_once_by_the_other(anvil_chain, wallets, shared, tmp_path):  # noqa: F811
    """A sends the settlement transaction; the chain does not mine it yet; A is SIGKILLed; mining
    resumes; B's recovery takes the intent over when A's lease (3 s) runs out, finds the
    transaction on chain, and records it: one transfer, one settled intent."""
    router_key, agent, operator = wallets
    ledger_url, prefix = shared
    config = replica_config(tmp_path, anvil_chain, operator.address, ledger_url, prefix)
    w3 = anvil_chain.w3
    a, b = Serve(config, router_key), Serve(config, router_key)
    try:
        challenge = httpx.post(a.url + URL, json=BODY, timeout=10)
        accepts = json.loads(base64.b64decode(challenge.headers["payment-required"]))["accepts"][0]
        headers = {"PAYMENT-SIGNATURE": payment_header(pay_exact(accepts, agent.private_key))}
        w3.provider.make_request("evm_setAutomine", [False])
        w3.provider.make_request("evm_setIntervalMining", [0])
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(httpx.post, a.url + URL, json=BODY, headers=headers, timeout=30)
            deadline = time.monotonic() + 15
            while not w3.eth.get_block("pending")["transactions"]:  # A's settlement reached the node
                assert time.monotonic() < deadline, "the settlement never reached the node"
                time.sleep(0.05)
            a.kill()
            with pytest.raises(httpx.TransportError):
                waiting.result(timeout=30)  # the agent's request died with its replica
        assert _outbox(ledger_url)[0][0] == "pending"
        w3.provider.make_request("evm_setAutomine", [True])
        w3.provider.make_request("evm_mine", [])
        deadline = time.monotonic() + 20
        while True:  # B's recovery loop (every 0.5 s) claims it once A's lease has run out
            outbox = _outbox(ledger_url)
            if outbox[0][0] == "settled":
                break
            assert time.monotonic() < deadline, f"the settlement was not completed: {outbox}"
            time.sleep(0.1)
        again = httpx.post(b.url + URL, json=BODY, headers=headers, timeout=10)
        assert again.status_code == 402 and again.json()["code"] == "invalid_exact_evm_nonce_already_used"
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
        a.stop()
        b.stop()
    [(status, transaction)] = _outbox(ledger_url)
    assert len(_transfers_to(anvil_chain, operator.address)) == 1
    assert anvil_chain.usdc_balance(operator.address) == int(accepts["amount"])
    assert w3.eth.get_transaction_receipt(transaction)["status"] == 1


def test_a_payer_budget_holds_across_replicas_under_concurrent_load(anvil_chain, wallets, shared, tmp_path):  # noqa: F811
    """The payer may spend three calls' worth in total; twelve paid calls go to the two replicas at
    once: three are served and settled, the others refused with 402 budget_exceeded and not charged."""
    router_key, agent, operator = wallets
    ledger_url, prefix = shared
    config = replica_config(tmp_path, anvil_chain, operator.address, ledger_url, prefix)
    a = Serve(config, router_key)
    try:
        challenge = httpx.post(a.url + URL, json=BODY, timeout=10)
        accepts = json.loads(base64.b64decode(challenge.headers["payment-required"]))["accepts"][0]
    finally:
        a.stop()
    quote = int(accepts["amount"])
    limits = f"""
[limits.payers."{agent.address.lower()}"]
max_total_usd = "{(3 * quote + quote // 2) / 1e6:.6f}"
"""
    config.write_text(config.read_text() + limits)
    a, b = Serve(config, router_key), Serve(config, router_key)
    try:
        challenge = httpx.post(a.url + URL, json=BODY, timeout=10)
        accepts = json.loads(base64.b64decode(challenge.headers["payment-required"]))["accepts"][0]
        payments = [payment_header(pay_exact(accepts, agent.private_key)) for _ in range(12)]  # fresh nonces

        def send(n: int) -> httpx.Response:
            replica = (a, b)[n % 2]
            return httpx.post(replica.url + URL, json=BODY, headers={"PAYMENT-SIGNATURE": payments[n]}, timeout=30)

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(send, range(12)))
    finally:
        a.stop()
        b.stop()
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) == 3 and codes.count(402) == 9, [r.text for r in answers if r.status_code != 402]
    assert all(r.json()["error"]["code"] == "budget_exceeded" for r in answers if r.status_code == 402)
    assert len(_transfers_to(anvil_chain, operator.address)) == 3
    assert anvil_chain.usdc_balance(operator.address) == 3 * quote
    assert sorted(status for status, _ in _outbox(ledger_url)) == ["settled"] * 3
