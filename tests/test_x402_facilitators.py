"""Two routers interoperating through the x402 facilitator HTTP API, on a real
(in-process) chain.

Router A, the *facilitator host*, has the embedded EVM rail and
``[payments] serve_facilitator = true``: it serves ``/-/x402/{verify,settle,supported}``
over real HTTP on 127.0.0.1. Router B, the *resource server*, has no chain
access: its ``exact`` rail's facilitator is a :class:`RemoteFacilitator` pointed
at A. An agent pays B; B checks the payment locally, asks A's ``/verify``,
serves, and settles through A's ``/settle`` — A's key sends the transaction.

The in-process chain (eth-tester) is not thread-safe and A touches it from its
own threads, so the test reads the chain only between requests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from web3 import Web3

from clawrouter import hookimpl
from clawrouter.config import load_config
from clawrouter.evm.localchain import InProcessChain
from clawrouter.evm.networks import EvmNetwork
from clawrouter.evm.pay import pay_exact, payment_header
from clawrouter.evm.rail import ExactEvmRail, local_rail
from clawrouter.facilitator import FacilitatorUnavailable, RemoteFacilitator, encode_facilitator_request
from clawrouter.keys import RouterKey
from clawrouter.payments import PaymentPayload, PaymentRequirements
from clawrouter.receipts import decode_receipt_header, verify_receipt
from clawrouter.router import Router
from clawrouter.server import BackgroundServer

URL = "/v1/chat/completions"
FUNDS = 1_000_000


class Rails:
    __name__ = "test_facilitator_rails"

    def __init__(self, rail: Any) -> None:
        self.rail = rail

    @hookimpl
    def register_payment_rails(self, config: Any) -> list[Any]:
        return [self.rail]


class Wallets:
    def __init__(self, chain: InProcessChain) -> None:
        self.host = RouterKey.generate()  # A's router key: pays gas and settles
        self.host_pay_to = RouterKey.generate()  # A's own payTo (must receive nothing here)
        self.server = RouterKey.generate()  # B's router key: signs B's receipts and quotes
        self.operator = RouterKey.generate()  # B's payTo
        self.agent = RouterKey.generate()
        chain.fund(self.host.address, 0)
        chain.fund(self.agent.address, FUNDS)


def evm_network(chain: InProcessChain) -> EvmNetwork:
    return EvmNetwork(chain.network, chain.chain_id, chain.token, "USDC", "2")


def router(rail: Any, key: RouterKey, payments: dict[str, Any] | None = None) -> Router:
    data = {
        "ledger": {"backend": "memory"},
        "payments": payments or {},
        "providers": {"simulated": {"kind": "simulated"}},
    }
    env = {"CLAWROUTER_KEY": key.private_key.hex()}
    return Router(load_config(data=data, env={}), plugins=[Rails(rail)], env=env, entry_points=False)


def host_router(chain: InProcessChain, wallets: Wallets) -> Router:
    """Router A: the embedded rail, serving its facilitator."""
    rail = local_rail(Web3(chain.provider), evm_network(chain), wallets.host_pay_to.address, wallets.host)
    return router(rail, wallets.host, {"serve_facilitator": True})


class Spy:
    """Records the calls A's embedded facilitator receives (on A's server thread)."""

    def __init__(self, facilitator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        for op in ("verify", "settle"):
            monkeypatch.setattr(facilitator, op, self._wrap(op, getattr(facilitator, op)))

    def _wrap(self, op: str, method: Any) -> Any:
        async def call(payload: PaymentPayload, requirements: PaymentRequirements) -> Any:
            answer = await method(payload, requirements)
            with self._lock:
                self.calls.append((op, requirements.payTo))
            return answer

        return call

    def ops(self) -> list[str]:
        with self._lock:
            return [op for op, _ in self.calls]


class Host:
    def __init__(self, router: Router, server: BackgroundServer, spy: Spy) -> None:
        self.router = router
        self.server = server
        self.spy = spy
        self.facilitator_url = f"{server.url}/-/x402"


@pytest.fixture(scope="module")
def chain() -> InProcessChain:
    return InProcessChain()


@pytest.fixture
def wallets(chain: InProcessChain) -> Wallets:
    return Wallets(chain)


@pytest.fixture
def host(chain: InProcessChain, wallets: Wallets, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    a = host_router(chain, wallets)
    [rail] = a.rails.values()
    spy = Spy(rail.embedded, monkeypatch)
    with BackgroundServer(a.app) as server:
        yield Host(a, server, spy)


class Resource:
    def __init__(self, router: Router, client: httpx.AsyncClient, rail: ExactEvmRail) -> None:
        self.router = router
        self.client = client
        self.rail = rail


def resource_router(chain: InProcessChain, wallets: Wallets, facilitator_url: str) -> tuple[Router, ExactEvmRail]:
    """Router B: no chain of its own, A's facilitator over HTTP."""
    rail = ExactEvmRail(evm_network(chain), wallets.operator.address, RemoteFacilitator(facilitator_url))
    return router(rail, wallets.server), rail


@pytest.fixture
async def resource(chain: InProcessChain, wallets: Wallets, host: Host) -> AsyncIterator[Resource]:
    b, rail = resource_router(chain, wallets, host.facilitator_url)
    transport = httpx.ASGITransport(b.app)
    async with b.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://resource.test") as client:
        yield Resource(b, client, rail)


def body(text: str = "hello there") -> dict[str, Any]:
    return {"model": "eco", "messages": [{"role": "user", "content": text}], "max_tokens": 40}


async def challenge(client: httpx.AsyncClient, request: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(URL, json=request)
    assert response.status_code == 402, response.text
    accepts: dict[str, Any] = json.loads(base64.b64decode(response.headers["payment-required"]))["accepts"][0]
    return accepts


def paid_headers(accepts: dict[str, Any], key: RouterKey) -> dict[str, str]:
    return {"PAYMENT-SIGNATURE": payment_header(pay_exact(accepts, key.private_key))}


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --------------------------------------------------------------------------- supported


async def test_host_serves_supported_over_http_listing_the_network(chain, wallets, host):
    async with httpx.AsyncClient(base_url=host.server.url) as http:
        response = await http.get("/-/x402/supported")
    assert response.status_code == 200, response.text
    document = response.json()
    assert {"x402Version": 2, "scheme": "exact", "network": chain.network} in document["kinds"]
    assert document["signers"] == {"eip155:*": [wallets.host.address]}
    # and B's client reads the same document through its own transport
    async with RemoteFacilitator(host.facilitator_url) as remote:
        supported = await remote.supported()
    assert any(k.x402Version == 2 and (k.scheme, k.network) == ("exact", chain.network) for k in supported.kinds)
    assert supported.signers == {"eip155:*": [wallets.host.address]}


# --------------------------------------------------------------------------- the paid call


async def test_paid_call_on_b_is_verified_and_settled_by_a(chain, wallets, host, resource):
    client = resource.client
    request = body()
    accepts = await challenge(client, request)
    assert accepts["network"] == chain.network and accepts["asset"] == chain.token
    assert accepts["payTo"] == wallets.operator.address
    amount = int(accepts["amount"])
    assert amount > 0

    headers = paid_headers(accepts, wallets.agent)
    response = await client.post(URL, json=request, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]

    # B asked A to verify, then to settle, for B's payTo
    assert host.spy.calls == [("verify", wallets.operator.address), ("settle", wallets.operator.address)]

    settlement = json.loads(base64.b64decode(response.headers["payment-response"]))
    assert settlement["success"] is True and settlement["network"] == chain.network
    assert settlement["payer"] == wallets.agent.address.lower() and settlement["amount"] == str(amount)
    tx_hash = settlement["transaction"]
    assert tx_hash.startswith("0x") and len(tx_hash) == 66

    # the chain moved exactly the amount, from the agent to B's payTo, in a transaction A's key sent
    assert chain.usdc_balance(wallets.operator.address) == amount
    assert chain.usdc_balance(wallets.agent.address) == FUNDS - amount
    assert chain.usdc_balance(wallets.host_pay_to.address) == 0
    assert chain.usdc_balance(wallets.host.address) == 0
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    tx = chain.w3.eth.get_transaction(tx_hash)
    assert tx["from"] == wallets.host.address and tx["to"] == chain.token

    # B's own receipt is signed by B's key and names A's transaction
    signed = decode_receipt_header(response.headers["x-clawrouter-receipt"])
    verify_receipt(signed, body=response.content, router=wallets.server.address)
    assert signed.transaction == tx_hash and signed.charged == str(amount)
    kinds = [e.kind for e in await resource.router.ledger.entries()]
    assert kinds == ["authorization", "execution", "settlement", "receipt"]
    [intent] = await resource.router.ledger.intents()
    assert intent.status == "settled" and intent.transaction == tx_hash

    # the same payment presented again is refused by B and moves nothing
    again = await client.post(URL, json=request, headers=headers)
    assert again.status_code == 402 and again.json()["code"] == "invalid_exact_evm_nonce_already_used"
    assert chain.usdc_balance(wallets.operator.address) == amount


async def test_streamed_call_settles_through_a(chain, wallets, host, resource):
    client = resource.client
    request = {**body("stream please"), "stream": True}
    accepts = await challenge(client, request)
    response = await client.post(URL, json=request, headers=paid_headers(accepts, wallets.agent))
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    settlement = json.loads(response.text.split("event: payment\ndata: ", 1)[1].split("\n", 1)[0])
    assert settlement["success"] is True and settlement["transaction"]
    assert host.spy.ops() == ["verify", "settle"]
    assert chain.usdc_balance(wallets.operator.address) == int(accepts["amount"])
    assert chain.w3.eth.get_transaction(settlement["transaction"])["from"] == wallets.host.address


async def test_a_replayed_settle_on_a_moves_nothing_twice(chain, wallets, host, resource):
    """A's /settle is idempotent: the same payment settled again reports the first
    transaction and moves no more USDC."""
    client = resource.client
    request = body("settle me once")
    accepts = await challenge(client, request)
    payment = pay_exact(accepts, wallets.agent.private_key)
    response = await client.post(URL, json=request, headers={"PAYMENT-SIGNATURE": payment_header(payment)})
    assert response.status_code == 200, response.text
    first = json.loads(base64.b64decode(response.headers["payment-response"]))["transaction"]
    amount = int(accepts["amount"])
    assert chain.usdc_balance(wallets.operator.address) == amount

    assert payment.accepted is not None
    wire = encode_facilitator_request(payment, payment.accepted)
    async with httpx.AsyncClient(base_url=host.facilitator_url) as http:
        verify = await http.post("/verify", content=wire, headers={"content-type": "application/json"})
        settle = await http.post("/settle", content=wire, headers={"content-type": "application/json"})
    assert verify.status_code == 200
    assert verify.json()["isValid"] is False
    assert verify.json()["invalidReason"] == "invalid_exact_evm_nonce_already_used"
    assert settle.status_code == 200 and settle.json()["transaction"] == first
    assert chain.usdc_balance(wallets.operator.address) == amount
    assert chain.usdc_balance(wallets.agent.address) == FUNDS - amount


# --------------------------------------------------------------------------- refusals


async def test_payment_refused_by_a_verify_is_a_402_with_insufficient_funds(chain, wallets, host, resource):
    client = resource.client
    poor = RouterKey.generate()  # signs correctly but holds nothing
    request = body()
    accepts = await challenge(client, request)
    response = await client.post(URL, json=request, headers=paid_headers(accepts, poor))
    assert response.status_code == 402, response.text
    assert response.json()["code"] == "insufficient_funds", response.json()
    assert "payment-required" in response.headers and "payment-response" not in response.headers
    # the local checks passed and A's /verify refused: nothing was settled
    assert host.spy.calls == [("verify", wallets.operator.address)]
    assert chain.usdc_balance(wallets.operator.address) == 0
    assert chain.usdc_balance(wallets.agent.address) == FUNDS
    kinds = [e.kind for e in await resource.router.ledger.entries()]
    assert kinds == [] and await resource.router.ledger.intents() == []


async def test_a_bad_signature_is_refused_by_b_without_asking_a(chain, wallets, host, resource):
    client = resource.client
    request = body()
    accepts = await challenge(client, request)
    header = paid_headers(accepts, wallets.agent)["PAYMENT-SIGNATURE"]
    document = json.loads(base64.b64decode(header))
    document["payload"]["authorization"]["value"] = str(int(accepts["amount"]) + 1)
    tampered = base64.b64encode(json.dumps(document).encode()).decode()
    response = await client.post(URL, json=request, headers={"PAYMENT-SIGNATURE": tampered})
    assert response.status_code == 402
    assert response.json()["code"] == "invalid_exact_evm_payload_authorization_value_mismatch"
    assert host.spy.calls == []
    assert chain.usdc_balance(wallets.agent.address) == FUNDS


# --------------------------------------------------------------------------- A unreachable


async def test_a_stopped_means_503_for_a_paid_call_and_nothing_charged(chain, wallets, monkeypatch):
    a = host_router(chain, wallets)
    [rail] = a.rails.values()
    spy = Spy(rail.embedded, monkeypatch)
    with BackgroundServer(a.app) as server:
        url = f"{server.url}/-/x402"
        b, _ = resource_router(chain, wallets, url)
        transport = httpx.ASGITransport(b.app)
        async with b.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://resource.test") as client:
            # one paid call while A is up, so B's client holds a pooled connection to A
            request = body("first")
            accepts = await challenge(client, request)
            ok = await client.post(URL, json=request, headers=paid_headers(accepts, wallets.agent))
            assert ok.status_code == 200, ok.text
            paid = int(accepts["amount"])
            server.__exit__(None, None, None)  # A goes away
            assert not server._thread.is_alive()

            request = body("second")
            accepts = await challenge(client, request)  # B still quotes: it needs no chain for that
            response = await client.post(URL, json=request, headers=paid_headers(accepts, wallets.agent))
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "facilitator_unavailable", error
            assert "traceback" not in response.text.lower()
            assert "payment-response" not in response.headers
            # nothing served, nothing settled, nothing locked: the payment can be presented again
            assert [e.kind for e in await b.ledger.entries()].count("authorization") == 1
            [intent] = await b.ledger.intents()
            assert intent.status == "settled"
    assert spy.ops() == ["verify", "settle"]
    assert chain.usdc_balance(wallets.operator.address) == paid
    assert chain.usdc_balance(wallets.agent.address) == FUNDS - paid


async def test_a_never_reachable_supported_is_facilitator_unavailable():
    async with RemoteFacilitator(f"http://127.0.0.1:{closed_port()}/-/x402", timeout=2) as remote:
        with pytest.raises(FacilitatorUnavailable):
            await remote.supported()


async def test_a_gone_at_settlement_serves_pending_and_settles_when_a_is_back(chain, wallets, monkeypatch):
    """A answers /verify, then stops before /settle: B (settlement "before") serves the
    response reported as pending, charges nothing yet, and settles through A once A is
    back (on the same address) — exactly once, by A's key."""
    a = host_router(chain, wallets)
    server = BackgroundServer(a.app)
    server.__enter__()
    try:
        port = int(server.url.rsplit(":", 1)[1])
        b, rail = resource_router(chain, wallets, f"{server.url}/-/x402")
        remote = rail.facilitator
        assert isinstance(remote, RemoteFacilitator)
        verify = remote.verify

        async def verify_then_stop_a(payload: PaymentPayload, requirements: PaymentRequirements) -> Any:
            answer = await verify(payload, requirements)
            await asyncio.to_thread(server.__exit__, None, None, None)
            return answer

        monkeypatch.setattr(remote, "verify", verify_then_stop_a)
        transport = httpx.ASGITransport(b.app)
        async with b.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://resource.test") as client:
            request = body()
            accepts = await challenge(client, request)
            response = await client.post(URL, json=request, headers=paid_headers(accepts, wallets.agent))
            assert response.status_code == 200, response.text
            settlement = json.loads(base64.b64decode(response.headers["payment-response"]))
            assert settlement["success"] is True and settlement["transaction"] == ""
            assert settlement["extensions"] == {"clawrouter": {"settlement": "pending"}}
            [intent] = await b.ledger.intents()
            assert intent.status == "pending" and "FacilitatorUnavailable" in (intent.error or "")
            assert chain.usdc_balance(wallets.operator.address) == 0  # A is down: nobody touches the chain

            back = host_router(chain, wallets)
            [back_rail] = back.rails.values()
            spy = Spy(back_rail.embedded, monkeypatch)
            with BackgroundServer(back.app, port=port):
                await asyncio.wait_for(b.settler.idle(), 30)
                [intent] = await b.ledger.intents()
                assert intent.status == "settled" and intent.transaction
            assert spy.ops() == ["settle"]
        amount = int(accepts["amount"])
        assert chain.usdc_balance(wallets.operator.address) == amount
        assert chain.usdc_balance(wallets.agent.address) == FUNDS - amount
        assert chain.w3.eth.get_transaction(intent.transaction)["from"] == wallets.host.address
    finally:
        server.__exit__(None, None, None)


async def test_v1_payment_on_b_is_served_through_a(chain, wallets, host, resource):
    """A speaks v2 only (its /supported says so); B restates a v1 payment (the same signed
    authorization) as v2 for it."""
    async with httpx.AsyncClient(base_url=host.server.url) as http:
        kinds = (await http.get("/-/x402/supported")).json()["kinds"]
    assert kinds == [{"x402Version": 2, "scheme": "exact", "network": chain.network}]
    client = resource.client
    request = body()
    [v1] = (await client.post(URL, json=request)).json()["accepts"]
    fields = ("scheme", "network", "asset", "payTo", "maxTimeoutSeconds", "extra")
    payment = pay_exact({**{k: v1[k] for k in fields}, "amount": v1["maxAmountRequired"]}, wallets.agent.private_key)
    document = {"x402Version": 1, "scheme": "exact", "network": v1["network"], "payload": payment.payload}
    header = base64.b64encode(json.dumps(document).encode()).decode()
    response = await client.post(URL, json=request, headers={"X-PAYMENT": header})
    assert response.status_code == 200, response.json()
