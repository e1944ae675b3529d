"""Interop, server side: an x402 server made only of the official SDK (FastAPI middleware,
the SDK's own facilitator settling on anvil; see ``x402_official_server``), paid by the
SDK's httpx client and by ours, with the money checked on chain."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from chains import anvil_chain  # noqa: F401 - a fixture
from web3.logs import DISCARD
from x402_official_server import PAID_PATH, official_server

from clawrouter.client import AsyncClient, Policy
from clawrouter.evm.localchain import DEV_KEYS
from clawrouter.wallet import Wallet

pytestmark = pytest.mark.slow

PRICE = "$0.001"
PRICE_ATOMIC = int(Decimal(PRICE.removeprefix("$")) * 10**6)  # USDC has 6 decimals
NETWORK = "eip155:84532"


@pytest.fixture(scope="module")
def pay_to(anvil_chain) -> str:  # noqa: F811
    return anvil_chain.accounts[1].address


@pytest.fixture(scope="module")
def server_url(anvil_chain, pay_to) -> Iterator[str]:  # noqa: F811
    with official_server(anvil_chain, pay_to, PRICE) as url:
        yield url


def _decode(header: str) -> dict:
    return json.loads(base64.b64decode(header))


def _assert_settled_on_chain(chain, transaction: str, payer: str, pay_to: str) -> None:
    receipt = chain.w3.eth.get_transaction_receipt(transaction)
    assert receipt["status"] == 1
    assert receipt["to"].lower() == chain.token.lower()
    [transfer] = chain.token_contract.events.Transfer().process_receipt(receipt, errors=DISCARD)
    assert transfer["args"]["from"].lower() == payer.lower()
    assert transfer["args"]["to"].lower() == pay_to.lower()
    assert transfer["args"]["value"] == PRICE_ATOMIC


def test_unpaid_request_gets_402_with_payment_required(anvil_chain, pay_to):  # noqa: F811
    with official_server(anvil_chain, pay_to, PRICE) as url:
        response = httpx.get(url + PAID_PATH, timeout=10)
        assert response.status_code == 402
        required = _decode(response.headers["payment-required"])
        assert required["x402Version"] == 2
        [accepts] = required["accepts"]
        assert accepts["scheme"] == "exact" and accepts["network"] == NETWORK
        assert accepts["asset"].lower() == anvil_chain.token.lower()
        assert accepts["payTo"].lower() == pay_to.lower()
        assert int(accepts["amount"]) == PRICE_ATOMIC
        token = anvil_chain.token_contract.functions
        assert accepts["extra"]["name"] == token.name().call() == "USDC"
        assert accepts["extra"]["version"] == token.version().call() == "2"
        assert httpx.get(url + "/free", timeout=10).status_code == 200  # only /paid is protected
    with pytest.raises(httpx.TransportError):  # stopped on exit
        httpx.get(url + PAID_PATH, timeout=2)


async def test_official_x402_client_pays_official_x402_server(anvil_chain, pay_to, server_url):  # noqa: F811
    from eth_account import Account
    from x402 import x402Client
    from x402.http.clients import x402HttpxClient
    from x402.mechanisms.evm.exact import ExactEvmScheme

    payer = Account.create()
    anvil_chain.fund(payer.address, 1_000_000, eth_wei=0)
    payee_before = anvil_chain.usdc_balance(pay_to)

    client = x402Client()
    client.register("eip155:*", ExactEvmScheme(signer=payer))
    async with x402HttpxClient(client, timeout=30) as http:
        response = await http.get(server_url + PAID_PATH)

    assert response.status_code == 200, response.text
    assert response.json() == {"paid": True, "network": NETWORK}
    settlement = _decode(response.headers["payment-response"])
    assert settlement["success"] is True and settlement["network"] == NETWORK
    assert settlement["payer"].lower() == payer.address.lower()
    assert anvil_chain.usdc_balance(payer.address) == 1_000_000 - PRICE_ATOMIC
    assert anvil_chain.usdc_balance(pay_to) == payee_before + PRICE_ATOMIC
    _assert_settled_on_chain(anvil_chain, settlement["transaction"], payer.address, pay_to)


async def test_clawrouter_client_pays_official_x402_server(anvil_chain, pay_to, server_url):  # noqa: F811
    wallet = Wallet.from_hex(DEV_KEYS[2])
    anvil_chain.fund(wallet.address, 1_000_000, eth_wei=0)
    payer_before = anvil_chain.usdc_balance(wallet.address)
    payee_before = anvil_chain.usdc_balance(pay_to)

    policy = Policy(max_per_call="0.01", networks=[NETWORK])
    async with AsyncClient(wallet, policy=policy) as c:
        r = await c.get(server_url + PAID_PATH)

    assert r.status_code == 200, r.text
    assert anvil_chain.usdc_balance(wallet.address) == payer_before - PRICE_ATOMIC
    assert anvil_chain.usdc_balance(pay_to) == payee_before + PRICE_ATOMIC
    assert c.spend.paid_calls == 1
    settlement = c.calls[-1].settlement
    assert settlement is not None
    _assert_settled_on_chain(anvil_chain, settlement.transaction, wallet.address, pay_to)
