"""The ``exact`` EVM rail end to end on a real (in-process) chain: eth-tester/py-evm
running the project's EIP-3009 token. Balances are read back from the chain."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import msgspec
import paid_router
import pytest
from paid_router import Rails, make_router
from web3 import Web3

from clawrouter.config import load_config
from clawrouter.evm.eip3009 import sign_authorization
from clawrouter.evm.networks import EvmNetwork
from clawrouter.evm.pay import pay_exact, payment_header
from clawrouter.keys import RouterKey
from clawrouter.receipts import Receipt, decode_receipt_header, verify_receipt
from clawrouter.router import Router

URL = "/v1/chat/completions"
FUNDS = paid_router.FUNDS


chain = paid_router.chain  # a fixture: one in-process chain per module
wallets = paid_router.wallets  # a fixture: (settler, agent funded with FUNDS, operator)


@pytest.fixture
async def paid(chain, wallets):
    router = make_router(chain, wallets)
    transport = httpx.ASGITransport(router.app)
    async with router.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://router.test") as c:
        yield router, c


def body(text="hello there", **extra):
    return {"model": "eco", "messages": [{"role": "user", "content": text}], "max_tokens": 40, **extra}


async def challenge(client, request):
    response = await client.post(URL, json=request)
    assert response.status_code == 402, response.text
    return json.loads(base64.b64decode(response.headers["payment-required"]))["accepts"][0]


def signed(accepts, key, *, chain_id, to=None, value=None, after=None, before=None, nonce=None, accepted=None):
    """A payment answering ``accepts`` whose authorization differs where told to."""
    now = int(time.time())
    authorization, signature = sign_authorization(
        key.private_key,
        name="USDC",
        version="2",
        chain_id=chain_id,
        asset=accepts["asset"],
        to=to or accepts["payTo"],
        value=int(accepts["amount"]) if value is None else value,
        valid_after=now - 60 if after is None else after,
        valid_before=now + 60 if before is None else before,
        nonce=nonce,
    )
    payload = {"signature": signature, "authorization": msgspec.to_builtins(authorization)}
    document = {"x402Version": 2, "accepted": accepted or accepts, "payload": payload}
    return base64.b64encode(json.dumps(document).encode()).decode()


async def test_paid_call_moves_exactly_the_amount_and_returns_a_verifiable_receipt(paid, chain, wallets):
    router, client = paid
    settler, agent, operator = wallets
    request = body()
    accepts = await challenge(client, request)
    assert accepts["network"] == chain.network and accepts["asset"] == chain.token
    assert accepts["payTo"] == operator.address and accepts["extra"]["name"] == "USDC"
    response = await client.post(
        URL, json=request, headers={"PAYMENT-SIGNATURE": payment_header(pay_exact(accepts, agent.private_key))}
    )
    assert response.status_code == 200, response.text
    settlement = json.loads(base64.b64decode(response.headers["payment-response"]))
    amount = int(accepts["amount"])
    assert settlement["success"] is True and settlement["payer"] == agent.address.lower()
    assert settlement["amount"] == str(amount)
    assert chain.usdc_balance(operator.address) == amount
    assert chain.usdc_balance(agent.address) == FUNDS - amount
    receipt = chain.w3.eth.get_transaction_receipt(settlement["transaction"])
    assert receipt["status"] == 1
    signed_receipt = decode_receipt_header(response.headers["x-clawrouter-receipt"])
    verify_receipt(signed_receipt, body=response.content, router=settler.address)
    assert signed_receipt.transaction == settlement["transaction"] and signed_receipt.charged == str(amount)
    fetched = await client.get(f"/-/receipts/{signed_receipt.id}")
    assert fetched.status_code == 200 and fetched.json()["signature"] == signed_receipt.signature
    kinds = [e.kind for e in await router.ledger.entries()]
    assert kinds == ["authorization", "execution", "settlement", "receipt"]
    [intent] = await router.ledger.intents()
    assert intent.status == "settled" and intent.transaction == settlement["transaction"]


async def test_streamed_call_settles_after_the_last_event(paid, chain, wallets):
    _, client = paid
    _, agent, operator = wallets
    request = body(stream=True)
    accepts = await challenge(client, request)
    response = await client.post(
        URL, json=request, headers={"PAYMENT-SIGNATURE": payment_header(pay_exact(accepts, agent.private_key))}
    )
    text = response.text
    assert response.status_code == 200 and text.endswith("data: [DONE]\n\n")
    before_payment, rest = text.split("event: payment\ndata: ", 1)
    settlement = json.loads(rest.split("\n", 1)[0])
    assert settlement["success"] and chain.usdc_balance(operator.address) == int(accepts["amount"])
    receipt_json = rest.split("event: receipt\ndata: ", 1)[1].split("\n", 1)[0]
    receipt = msgspec.json.decode(receipt_json.encode(), type=Receipt)
    verify_receipt(receipt, body=before_payment.encode())


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("expired", "invalid_exact_evm_payload_authorization_valid_before"),
        ("expires_too_soon", "invalid_exact_evm_payload_authorization_valid_before"),
        ("not_yet_valid", "invalid_exact_evm_payload_authorization_valid_after"),
        ("wrong_pay_to", "invalid_exact_evm_payload_recipient_mismatch"),
        ("wrong_amount", "invalid_exact_evm_payload_authorization_value_mismatch"),
        ("wrong_network", "unsupported_scheme"),
        ("wrong_asset", "invalid_payment_requirements"),
        ("tampered_signature", "invalid_exact_evm_payload_signature"),
        ("other_signer", "invalid_exact_evm_payload_signature"),
        ("insufficient_balance", "insufficient_funds"),
        ("foreign_quote", "invalid_quote"),
        ("missing_quote", "invalid_quote"),
        ("quote_for_another_request", "invalid_quote"),
        ("lowered_amount", "invalid_quote"),
    ],
)
async def test_refusals_carry_the_spec_reason_and_charge_nothing(paid, chain, wallets, case, code):
    router, client = paid
    _, agent, operator = wallets
    request = body()
    accepts = await challenge(client, request)
    now = int(time.time())
    cid = chain.chain_id
    stranger = RouterKey.generate()
    headers = {
        "expired": lambda: signed(accepts, agent, chain_id=cid, after=now - 600, before=now - 1),
        "expires_too_soon": lambda: signed(accepts, agent, chain_id=cid, before=now + 3),
        "not_yet_valid": lambda: signed(accepts, agent, chain_id=cid, after=now + 120, before=now + 600),
        "wrong_pay_to": lambda: signed(accepts, agent, chain_id=cid, to=stranger.address),
        "wrong_amount": lambda: signed(accepts, agent, chain_id=cid, value=int(accepts["amount"]) - 1),
        "wrong_network": lambda: signed(accepts, agent, chain_id=8453, accepted={**accepts, "network": "eip155:8453"}),
        "wrong_asset": lambda: signed(accepts, agent, chain_id=cid, accepted={**accepts, "asset": stranger.address}),
        "other_signer": lambda: _swap_from(signed(accepts, stranger, chain_id=cid), agent.address),
        "tampered_signature": lambda: _tamper(signed(accepts, agent, chain_id=cid)),
        "insufficient_balance": lambda: signed(accepts, stranger, chain_id=cid),
        "foreign_quote": lambda: signed(
            accepts,
            agent,
            chain_id=cid,
            accepted={**accepts, "extra": {**accepts["extra"], "quote": "9999999999.AAAAAAAAAAAAAAAAAAAAAA"}},
        ),
        "missing_quote": lambda: signed(
            accepts, agent, chain_id=cid, accepted={**accepts, "extra": {"name": "USDC", "version": "2"}}
        ),
        "quote_for_another_request": None,
        "lowered_amount": lambda: signed(accepts, agent, chain_id=cid, value=1, accepted={**accepts, "amount": "1"}),
    }
    if case == "quote_for_another_request":
        header = signed(accepts, agent, chain_id=cid)
        request = body("a different prompt")
    else:
        header = headers[case]()
    response = await client.post(URL, json=request, headers={"PAYMENT-SIGNATURE": header})
    assert response.status_code == 402, response.text
    assert response.json()["code"] == code, response.json()
    assert "payment-required" in response.headers  # a fresh challenge to pay again
    assert chain.usdc_balance(operator.address) == 0 and chain.usdc_balance(agent.address) == FUNDS


def _tamper(header: str) -> str:
    document = json.loads(base64.b64decode(header))
    signature = document["payload"]["signature"]
    document["payload"]["signature"] = signature[:10] + ("0" if signature[10] != "0" else "1") + signature[11:]
    return base64.b64encode(json.dumps(document).encode()).decode()


def _swap_from(header: str, address: str) -> str:
    document = json.loads(base64.b64decode(header))
    document["payload"]["authorization"]["from"] = address
    return base64.b64encode(json.dumps(document).encode()).decode()


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("%%%", "not valid base64"),
        (base64.b64encode(b"{nope").decode(), "not valid JSON"),
        (base64.b64encode(b"[]").decode(), "payment header: "),
        (base64.b64encode(b'{"x402Version": 2, "payload": "x"}').decode(), "payment header: "),
    ],
)
async def test_malformed_payment_headers_are_400(paid, header, fragment):
    _, client = paid
    for name in ("PAYMENT-SIGNATURE", "X-PAYMENT"):
        response = await client.post(URL, json=body(), headers={name: header})
        assert response.status_code == 400 and fragment in response.json()["error"]["message"]


async def test_malformed_exact_payload_is_refused_with_invalid_payload(paid, wallets):
    _, client = paid
    request = body()
    accepts = await challenge(client, request)
    for payload in ({}, {"signature": "0x00", "authorization": {"from": "x"}}):
        header = base64.b64encode(json.dumps({"x402Version": 2, "accepted": accepts, "payload": payload}).encode())
        response = await client.post(URL, json=request, headers={"PAYMENT-SIGNATURE": header.decode()})
        assert response.status_code == 402 and response.json()["code"] == "invalid_payload"


async def test_used_nonce_is_refused(paid, chain, wallets):
    _, client = paid
    _, agent, _ = wallets
    nonce = b"\x07" * 32
    first = body("first")
    accepts = await challenge(client, first)
    ok = await client.post(
        URL, json=first, headers={"PAYMENT-SIGNATURE": signed(accepts, agent, chain_id=chain.chain_id, nonce=nonce)}
    )
    assert ok.status_code == 200
    second = body("second")
    accepts = await challenge(client, second)
    again = await client.post(
        URL, json=second, headers={"PAYMENT-SIGNATURE": signed(accepts, agent, chain_id=chain.chain_id, nonce=nonce)}
    )
    assert again.status_code == 402 and again.json()["code"] == "invalid_exact_evm_nonce_already_used"


async def test_simulation_refuses_a_nonce_used_elsewhere_on_chain(chain, wallets):
    """With ``simulate``, a payment already spent on chain (not through this router) is refused."""
    _, agent, operator = wallets
    router = make_router(chain, wallets, simulate=True)
    async with (
        router.lifespan(),
        httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://r") as client,
    ):
        request = body()
        accepts = await challenge(client, request)
        header = signed(accepts, agent, chain_id=chain.chain_id)
        payload = json.loads(base64.b64decode(header))["payload"]
        auth, signature = payload["authorization"], bytes.fromhex(payload["signature"][2:])
        token = chain.w3.eth.contract(address=chain.token, abi=chain.token_contract.abi)
        token.functions.transferWithAuthorization(
            Web3.to_checksum_address(auth["from"]), Web3.to_checksum_address(auth["to"]), int(auth["value"]),
            int(auth["validAfter"]), int(auth["validBefore"]), bytes.fromhex(auth["nonce"][2:]), signature,
        ).transact({"from": chain.funder})  # fmt: skip
        spent = chain.usdc_balance(operator.address)
        response = await client.post(URL, json=request, headers={"PAYMENT-SIGNATURE": header})
        assert response.status_code == 402 and response.json()["code"] == "invalid_exact_evm_nonce_already_used"
        assert chain.usdc_balance(operator.address) == spent


async def test_twenty_concurrent_copies_one_served_one_settled(paid, chain, wallets):
    _, client = paid
    _, agent, operator = wallets
    request = body()
    accepts = await challenge(client, request)
    header = payment_header(pay_exact(accepts, agent.private_key))
    responses = await asyncio.gather(
        *[client.post(URL, json=request, headers={"PAYMENT-SIGNATURE": header}) for _ in range(20)]
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1 and set(statuses[1:]) <= {402, 409}
    refused = [r.json() for r in responses if r.status_code != 200]
    assert all(
        r.get("code") == "invalid_exact_evm_nonce_already_used" or r["error"]["code"] == "payment_in_flight"
        for r in refused
    )
    assert chain.usdc_balance(operator.address) == int(accepts["amount"])


async def test_reservations_stop_two_payments_spending_one_balance(paid, chain, wallets):
    """Two different payments, each within the balance but not both: the second waits on
    nothing and is refused while the first is in flight (no chain round trip decides it)."""
    router, client = paid
    poor = RouterKey.generate()
    chain.fund(poor.address, 100)
    rail = next(iter(router.rails.values()))
    book = rail.embedded.book
    first, second = body("one"), body("two")
    a1, a2 = await challenge(client, first), await challenge(client, second)
    chain.fund(poor.address, int(a1["amount"]) - 100)  # exactly one payment's worth
    assert await book.reserve(poor.address.lower(), int(a1["amount"]))
    response = await client.post(
        URL, json=second, headers={"PAYMENT-SIGNATURE": payment_header(pay_exact(a2, poor.private_key))}
    )
    assert response.status_code == 402 and response.json()["code"] == "insufficient_funds"
    book.release(poor.address.lower(), int(a1["amount"]))
    response = await client.post(
        URL, json=first, headers={"PAYMENT-SIGNATURE": payment_header(pay_exact(a1, poor.private_key))}
    )
    assert response.status_code == 200


async def test_upstream_failure_settles_nothing_and_releases_the_lock(chain, wallets):
    _, agent, operator = wallets
    router = make_router(chain, wallets, fail_models=["simulated/eco", "simulated/premium", "simulated/balanced"])
    async with (
        router.lifespan(),
        httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://r") as client,
    ):
        request = body()
        request["model"] = "simulated/eco"
        accepts = await challenge(client, request)
        header = payment_header(pay_exact(accepts, agent.private_key))
        failed = await client.post(URL, json=request, headers={"PAYMENT-SIGNATURE": header})
        assert failed.status_code >= 500 and "payment-response" not in failed.headers
        assert chain.usdc_balance(operator.address) == 0
        kinds = [e.kind for e in await router.ledger.entries()]
        assert kinds == ["authorization", "released"] and await router.ledger.intents() == []
        rail = next(iter(router.rails.values()))
        assert rail.embedded.book._reserved == {}
        # released: the same payment can be presented again (it fails again, and is again not charged)
        again = await client.post(URL, json=request, headers={"PAYMENT-SIGNATURE": header})
        assert again.status_code == failed.status_code


async def test_v1_payment_is_accepted_and_answered_in_v1(paid, chain, wallets):
    _, client = paid
    _, agent, operator = wallets
    request = body()
    response = await client.post(URL, json=request)
    [v1] = response.json()["accepts"]
    assert v1["maxAmountRequired"] and v1["resource"].endswith(URL)
    accepts = {**v1, "amount": v1["maxAmountRequired"]}
    payload = pay_exact(
        {k: accepts[k] for k in ("scheme", "network", "amount", "asset", "payTo", "maxTimeoutSeconds", "extra")},
        agent.private_key,
    )
    document = {"x402Version": 1, "scheme": "exact", "network": v1["network"], "payload": payload.payload}
    header = base64.b64encode(json.dumps(document).encode()).decode()
    paid_response = await client.post(URL, json=request, headers={"X-PAYMENT": header})
    assert paid_response.status_code == 200, paid_response.text
    assert "x-payment-response" in paid_response.headers
    assert chain.usdc_balance(operator.address) == int(v1["maxAmountRequired"])


async def test_deferred_settlement_answers_first_and_settles_off_the_path(chain, wallets):
    _, agent, operator = wallets
    router = make_router(chain, wallets, settlement="deferred")
    async with (
        router.lifespan(),
        httpx.AsyncClient(transport=httpx.ASGITransport(router.app), base_url="http://r") as client,
    ):
        request = body()
        accepts = await challenge(client, request)
        response = await client.post(
            URL, json=request, headers={"PAYMENT-SIGNATURE": payment_header(pay_exact(accepts, agent.private_key))}
        )
        settlement = json.loads(base64.b64decode(response.headers["payment-response"]))
        assert settlement["success"] and settlement["transaction"] == ""
        assert settlement["extensions"] == {"clawrouter": {"settlement": "pending"}}
        await router.settler.idle()
        [intent] = await router.ledger.intents()
        assert intent.status == "settled" and chain.usdc_balance(operator.address) == int(accepts["amount"])
        receipt = (
            await client.get(f"/-/receipts/{decode_receipt_header(response.headers['x-clawrouter-receipt']).id}")
        ).json()
        assert receipt["transaction"] == intent.transaction  # re-signed once settled


async def test_cors_exposes_the_payment_headers(paid):
    _, client = paid
    preflight = await client.options(
        URL, headers={"Origin": "https://agent.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204 and "payment-signature" in preflight.headers["access-control-allow-headers"]
    response = await client.post(URL, json=body(), headers={"Origin": "https://agent.example"})
    assert response.status_code == 402
    exposed = response.headers["access-control-expose-headers"]
    assert "payment-required" in exposed and "payment-response" in exposed


async def test_unreachable_chain_fails_closed_with_503(wallets):
    """The payer's balance cannot be read: 503 with a clear error, nothing served or charged."""
    from clawrouter.evm.chain import EvmChain
    from clawrouter.evm.facilitator import EmbeddedEvmFacilitator
    from clawrouter.evm.rail import ExactEvmRail

    settler, agent, operator = wallets
    network = EvmNetwork("eip155:84532", 84532, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC", "2")
    dead = EvmChain.from_url("http://127.0.0.1:9", network.asset, key=settler)  # nothing listens on port 9
    rail = ExactEvmRail(network, operator.address, EmbeddedEvmFacilitator(network, dead))
    router = Router(
        load_config(data={"ledger": {"backend": "memory"}}, env={}), plugins=[Rails(rail)], entry_points=False
    )
    transport = httpx.ASGITransport(router.app)
    async with router.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://r") as client:
        request = body()
        accepts = await challenge(client, request)
        header = payment_header(pay_exact(accepts, agent.private_key))
        response = await client.post(URL, json=request, headers={"PAYMENT-SIGNATURE": header})
        assert response.status_code == 503 and response.json()["error"]["code"] == "chain_unavailable"
        assert response.headers["retry-after"] == "5"
        assert await router.ledger.intents() == []
