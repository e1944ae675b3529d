"""The x402 EVM path over real JSON-RPC: anvil at chain 84532 with the project's token
at Base Sepolia's USDC address, the rail built from configuration (embedded
facilitator, the router's key from the environment), and real clients: the
official ``x402`` SDK's, and ours across a router killed mid-settlement."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import pytest
from chains import anvil_chain, anvil_wallets  # noqa: F401 - fixtures
from serving import Serve, paid_config

from clawrouter.evm.pay import pay_exact, payment_header

pytestmark = pytest.mark.slow

URL = "/v1/chat/completions"


wallets = anvil_wallets  # a fixture: (router key, agent with 2 USDC, operator)


def _transfers_to(chain, address: str) -> list:
    return chain.token_contract.events.Transfer.get_logs(from_block=0, argument_filters={"to": address})


async def test_official_x402_client_pays_clawrouter_on_anvil(anvil_chain, wallets, tmp_path):  # noqa: F811
    from eth_account import Account
    from x402 import x402Client
    from x402.http.clients import x402HttpxClient
    from x402.mechanisms.evm.exact import ExactEvmScheme

    router_key, agent, operator = wallets
    serve = Serve(paid_config(tmp_path, anvil_chain, operator.address), router_key)
    try:
        client = x402Client()
        client.register("eip155:*", ExactEvmScheme(signer=Account.from_key(agent.private_key)))
        body = {"model": "eco", "messages": [{"role": "user", "content": "pay me"}], "max_tokens": 30}
        async with x402HttpxClient(client, base_url=serve.url, timeout=30) as http:
            response = await http.post(URL, json=body)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"]
        settlement = json.loads(base64.b64decode(response.headers["payment-response"]))
        assert settlement["success"] is True and settlement["network"] == "eip155:84532"
        assert settlement["payer"].lower() == agent.address.lower()
        charged = int(settlement["amount"])
        assert charged > 0
        assert anvil_chain.usdc_balance(operator.address) == charged
        assert anvil_chain.usdc_balance(agent.address) == 2_000_000 - charged
        receipt = anvil_chain.w3.eth.get_transaction_receipt(settlement["transaction"])
        assert receipt["status"] == 1 and receipt["from"].lower() == router_key.address.lower()
    finally:
        serve.stop()


def test_router_killed_between_response_and_settlement_settles_exactly_once(anvil_chain, wallets, tmp_path):  # noqa: F811
    """Deferred settlement; the chain stops mining so the settlement transaction is sent but
    not mined; the router is SIGKILLed; mining resumes; a restarted router finds the
    transaction on chain and records it — one transfer, never two."""
    router_key, agent, operator = wallets
    config = paid_config(tmp_path, anvil_chain, operator.address, settlement="deferred")
    w3 = anvil_chain.w3
    serve = Serve(config, router_key)
    try:
        body = {"model": "eco", "messages": [{"role": "user", "content": "crash"}], "max_tokens": 30}
        challenge = httpx.post(serve.url + URL, json=body, timeout=10)
        accepts = json.loads(base64.b64decode(challenge.headers["payment-required"]))["accepts"][0]
        assert accepts["asset"] == "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
        w3.provider.make_request("evm_setAutomine", [False])
        w3.provider.make_request("evm_setIntervalMining", [0])
        headers = {"PAYMENT-SIGNATURE": payment_header(pay_exact(accepts, agent.private_key))}
        response = httpx.post(serve.url + URL, json=body, headers=headers, timeout=10)
        assert response.status_code == 200
        assert json.loads(base64.b64decode(response.headers["payment-response"]))["transaction"] == ""
        deadline = time.monotonic() + 10
        while not w3.eth.get_block("pending")["transactions"]:  # the settlement was sent
            assert time.monotonic() < deadline, "settlement never reached the node"
            time.sleep(0.05)
        serve.kill()
    finally:
        serve.stop()
    assert anvil_chain.usdc_balance(operator.address) == 0  # not mined yet
    w3.provider.make_request("evm_setAutomine", [True])
    w3.provider.make_request("evm_mine", [])
    amount = int(accepts["amount"])
    assert anvil_chain.usdc_balance(operator.address) == amount
    for _ in range(2):  # restart, then restart again: nothing more happens
        serve = Serve(config, router_key)
        try:
            deadline = time.monotonic() + 15
            while True:
                state = _outbox(tmp_path)
                if state and state[0][0] == "settled":
                    break
                assert time.monotonic() < deadline, f"pending settlement not completed: {state}"
                time.sleep(0.1)
            # the replayed payment is refused after the restart too
            again = httpx.post(serve.url + URL, json=body, headers=headers, timeout=10)
            assert again.status_code == 402 and again.json()["code"] == "invalid_exact_evm_nonce_already_used"
        finally:
            serve.stop()
    [(status, transaction)] = _outbox(tmp_path)
    assert len(_transfers_to(anvil_chain, operator.address)) == 1
    assert anvil_chain.usdc_balance(operator.address) == amount
    assert w3.eth.get_transaction_receipt(transaction)["status"] == 1


def _outbox(tmp_path: Path) -> list[tuple[str, str]]:
    import sqlite3

    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    try:
        return db.execute("SELECT status, transaction_hash FROM outbox").fetchall()
    finally:
        db.close()
