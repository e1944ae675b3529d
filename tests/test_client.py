"""The agent-side client (clawrouter.client) paying a real router on an in-process chain.

Every test reads balances back from the chain: a refusal must leave them
untouched, a retry must move money once. A recording transport between the
client and the router shows exactly what was sent, and injects the network
faults the no-double-pay rules are about.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import stat
import time
from decimal import Decimal

import httpx
import msgspec
import paid_router
import pytest
from paid_router import make_router

from clawrouter.client import (
    AsyncClient,
    Budget,
    Client,
    PaymentError,
    Policy,
    PolicyError,
    ReceiptError,
    X402Transport,
)
from clawrouter.client.payer import Payer, StreamTap, parse_challenge
from clawrouter.keys import RouterKey
from clawrouter.payments import PaymentRequired, PaymentRequirements, SettlementResponse, encode_header
from clawrouter.receipts import verify_receipt

URL = "/v1/chat/completions"
FUNDS = paid_router.FUNDS


chain = paid_router.chain  # a fixture: one in-process chain per module
wallets = paid_router.wallets  # a fixture: (settler, agent funded with FUNDS, operator)


def policy_for(chain, **kwargs) -> Policy:
    """A policy that allows the test chain's token (the defaults allow only Base's USDC)."""
    kwargs.setdefault("networks", [chain.network])
    kwargs.setdefault("assets", {chain.token: 6})
    return Policy(**kwargs)


class Wire(httpx.AsyncBaseTransport):
    """Between client and router: records each request and injects faults into paid ones.

    ``faults`` is consumed one per paid request: ``"refuse"`` raises ConnectError
    before the router sees the request; ``"lose"`` lets the router answer, then
    raises ReadTimeout (the response is lost); ``None`` passes through.
    ``v1_only`` removes the v2 ``PAYMENT-REQUIRED`` header from 402s.
    """

    def __init__(self, app, faults=(), v1_only=False, mangle=None):
        self.inner = httpx.ASGITransport(app)
        self.faults = list(faults)
        self.v1_only = v1_only
        self.mangle = mangle
        self.sent: list[httpx.Headers] = []

    def paid(self) -> list[str]:
        return [h.get("payment-signature") or h.get("x-payment") for h in self.sent if _payment(h)]

    async def handle_async_request(self, request):
        self.sent.append(request.headers.copy())
        fault = self.faults.pop(0) if _payment(request.headers) and self.faults else None
        if fault == "refuse":
            raise httpx.ConnectError("connection refused", request=request)
        response = await self.inner.handle_async_request(request)
        if fault == "lose":
            await response.aread()
            raise httpx.ReadTimeout("timed out", request=request)
        if fault == "cut":  # the answer's headers arrive, its body is cut off half way
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, stream=_Cut(content, request))
        headers = response.headers.copy()
        if self.v1_only and response.status_code == 402:
            del headers["payment-required"]
        content = await response.aread()
        if self.mangle is not None and response.status_code == 200:
            content = self.mangle(content)
        return httpx.Response(response.status_code, headers=headers, content=content)


class _Cut(httpx.AsyncByteStream):
    def __init__(self, content: bytes, request: httpx.Request) -> None:
        self.content, self.request = content, request

    async def __aiter__(self):
        yield self.content[: len(self.content) // 2]
        raise httpx.ReadError("connection reset", request=self.request)


def _payment(headers) -> bool:
    return "payment-signature" in headers or "x-payment" in headers


def chat(text="hello there", **extra):
    return {"model": "eco", "messages": [{"role": "user", "content": text}], "max_tokens": 40, **extra}


@pytest.fixture
async def router(chain, wallets):
    router = make_router(chain, wallets)
    async with router.lifespan():
        yield router


def client_for(app_router, agent, policy, wire=None, **kwargs) -> AsyncClient:
    wire = wire or Wire(app_router.app)
    return AsyncClient(agent, policy, transport=wire, base_url="http://router.test", **kwargs)


# -- paying ------------------------------------------------------------------


async def test_pays_a_402_once_and_verifies_the_router_receipt(chain, wallets, router):
    settler, agent, operator = wallets
    wire = Wire(router.app)
    async with client_for(router, agent, policy_for(chain), wire, router=settler.address) as client:
        response = await client.post(URL, json=chat())
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"]
    [record] = client.calls
    charged = chain.usdc_balance(operator.address)
    assert charged == record.amount > 0
    assert chain.usdc_balance(agent.address) == FUNDS - charged
    assert len(wire.sent) == 2 and not _payment(wire.sent[0]) and len(wire.paid()) == 1  # unpaid, then paid once
    assert record.state == "settled" and record.attempts == 1 and record.settlement.success
    assert record.receipt is not None and record.receipt_error is None and record.verified
    assert record.receipt.transaction == record.settlement.transaction
    verify_receipt(record.receipt, router=settler.address, body=response.content)
    usd = Decimal(charged).scaleb(-6)
    assert client.spend.calls == 1 and client.spend.paid_calls == 1
    assert client.spend.authorized == client.spend.charged == usd and client.spend.open == 0
    assert client.receipts == [record.receipt]


async def test_stream_payment_events_are_taken_out_and_the_stream_receipt_verified(chain, wallets, router):
    settler, agent, operator = wallets
    client = client_for(router, agent, policy_for(chain), router=settler.address, require_receipt=True)
    async with client, client.stream("POST", URL, json=chat(stream=True)) as response:
        assert response.status_code == 200
        text = (await response.aread()).decode()
    assert "event: payment" not in text and "event: receipt" not in text
    assert text.endswith("data: [DONE]\n\n") and text.count("data: {") >= 2
    [record] = client.calls
    assert record.state == "settled" and record.settlement.success and record.verified
    assert chain.usdc_balance(operator.address) == record.amount
    # the receipt's digest is the stream as received, up to where the trailer was
    body = text[: text.rindex("data: [DONE]")].encode()
    verify_receipt(record.receipt, router=settler.address, body=body)


async def test_a_v1_only_challenge_is_answered_with_x_payment(chain, wallets, router):
    _, agent, operator = wallets
    wire = Wire(router.app, v1_only=True)
    async with client_for(router, agent, policy_for(chain), wire) as client:
        response = await client.post(URL, json=chat())
    assert response.status_code == 200, response.text
    assert "x-payment-response" in response.headers
    [record] = client.calls
    assert record.header[0] == "X-PAYMENT" and "payment-signature" not in wire.sent[1]
    sent = json.loads(base64.b64decode(wire.sent[1]["x-payment"]))
    assert sent["x402Version"] == 1 and sent["network"] == chain.network and "accepted" not in sent
    assert record.state == "settled" and chain.usdc_balance(operator.address) == record.amount


async def test_the_sync_client_pays_through_a_sync_transport(chain, wallets, router):
    """The sync client on a real socket is tested with the OpenAI SDK; here its flow on a mock of the router."""
    _, agent, operator = wallets
    loop = asyncio.get_running_loop()
    inner = httpx.ASGITransport(router.app)

    def forward(request: httpx.Request) -> httpx.Response:
        async def send() -> httpx.Response:
            response = await inner.handle_async_request(request)
            return httpx.Response(response.status_code, headers=response.headers, content=await response.aread())

        return asyncio.run_coroutine_threadsafe(send(), loop).result(30)

    def run() -> tuple[int, Client]:
        with Client(agent, policy_for(chain), transport=httpx.MockTransport(forward), base_url="http://r") as client:
            return client.post(URL, json=chat()).status_code, client

    status, client = await asyncio.to_thread(run)
    assert status == 200 and client.spend.paid_calls == 1
    assert chain.usdc_balance(operator.address) == client.calls[0].amount


# -- policy refusals: raised before anything is signed ------------------------


def _other() -> str:
    return RouterKey.generate().address


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        ({"max_per_call": "0.0001"}, "over_call_cap"),
        ({"pay_to": "other"}, "pay_to_not_allowed"),
        ({"networks": ["eip155:8453"]}, "network_not_allowed"),
        ({"assets": {"0x0000000000000000000000000000000000000001": 6}}, "asset_not_allowed"),
    ],
)
async def test_a_policy_refusal_raises_and_nothing_is_signed(chain, wallets, router, policy, reason):
    _, agent, operator = wallets
    if policy.get("pay_to") == "other":
        policy = {"pay_to": [_other()]}
    wire = Wire(router.app)
    async with client_for(router, agent, policy_for(chain, **policy), wire) as client:
        with pytest.raises(PolicyError) as caught:
            await client.post(URL, json=chat())
    assert caught.value.reason == reason and "nothing was signed" in str(caught.value)
    assert wire.paid() == [] and client.calls == []
    assert client.spend.refused == 1 and client.spend.authorized == 0
    assert chain.usdc_balance(agent.address) == FUNDS and chain.usdc_balance(operator.address) == 0


async def test_the_session_cap_counts_what_this_client_paid(chain, wallets, router):
    _, agent, operator = wallets
    wire = Wire(router.app)
    async with client_for(router, agent, policy_for(chain, max_per_session="0.001"), wire) as client:
        assert (await client.post(URL, json=chat())).status_code == 200
        paid = client.calls[0].amount  # 650 atomic: a second one would pass $0.001
        with pytest.raises(PolicyError) as caught:
            await client.post(URL, json=chat("again"))
    assert caught.value.reason == "over_session_cap" and "$0.001" in str(caught.value)
    assert len(wire.paid()) == 1 and chain.usdc_balance(operator.address) == paid
    # a new session starts from zero
    async with client_for(router, agent, policy_for(chain, max_per_session="0.001")) as fresh:
        assert (await fresh.post(URL, json=chat("third"))).status_code == 200


async def test_the_total_cap_holds_across_sessions_through_a_budget_file(chain, wallets, router, tmp_path):
    _, agent, operator = wallets
    path = tmp_path / "spend.jsonl"
    async with client_for(router, agent, policy_for(chain), budget=Budget("0.001", path=path)) as first:
        assert (await first.post(URL, json=chat())).status_code == 200
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # a new Budget object on the same file (another run, another process) sees the first payment
    budget = Budget("0.001", path=path)
    assert budget.spent() == first.spend.charged > 0
    async with client_for(router, agent, policy_for(chain), budget=budget) as second:
        with pytest.raises(PolicyError) as caught:
            await second.post(URL, json=chat("more"))
    assert caught.value.reason == "over_total_cap" and second.calls == []
    assert chain.usdc_balance(operator.address) == first.calls[0].amount
    # Policy.max_total applies the same cap with no file
    async with client_for(router, agent, policy_for(chain, max_total="0.0001")) as capped:
        with pytest.raises(PolicyError, match=r"total cap of \$0.0001"):
            await capped.post(URL, json=chat("capped"))


def _challenge_response(accepts: list[PaymentRequirements]) -> httpx.Response:
    document = PaymentRequired(2, accepts, error="payment required")
    return httpx.Response(402, headers={"payment-required": encode_header(document).decode()}, json={})


async def test_an_unsupported_scheme_is_refused_and_preference_picks_the_first_allowed_network(chain, wallets):
    _, agent, _ = wallets
    upto = PaymentRequirements("upto", chain.network, "10", chain.token, _other(), 60, {"name": "USDC", "version": "2"})
    sent: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if "payment-signature" in request.headers:
            return httpx.Response(200, json={"ok": True})
        return _challenge_response(offers)

    offers = [upto]
    async with AsyncClient(agent, policy_for(chain), transport=httpx.MockTransport(server)) as client:
        with pytest.raises(PolicyError) as caught:
            await client.get("http://paid.test/")
        assert caught.value.reason == "scheme_not_supported" and len(sent) == 1
        # two acceptable entries: the policy's first network wins, whatever the order offered
        usdc = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
        domain = {"name": "USD Coin", "version": "2"}
        base = PaymentRequirements("exact", "eip155:8453", "10", usdc, _other(), 60, domain)
        mine = msgspec.structs.replace(upto, scheme="exact", amount="50")  # dearer, but on the preferred network
        offers = [upto, base, mine]
        policy = Policy(networks=[chain.network, "eip155:8453"], assets={chain.token: 6, base.asset: 6})
        client.payer.policy = policy
        assert (await client.get("http://paid.test/")).status_code == 200
    accepted = json.loads(base64.b64decode(sent[-1].headers["payment-signature"]))["accepted"]
    assert accepted["network"] == chain.network and accepted["scheme"] == "exact" and accepted["amount"] == "50"


async def test_a_malformed_challenge_is_a_clear_error_and_a_plain_402_passes_through(chain, wallets):
    _, agent, _ = wallets

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/garbled":
            return httpx.Response(402, headers={"payment-required": "%%% not base64"})
        return httpx.Response(402, json={"error": "subscription expired"})

    async with AsyncClient(agent, policy_for(chain), transport=httpx.MockTransport(server)) as client:
        with pytest.raises(PaymentError) as caught:
            await client.get("http://paid.test/garbled")
        assert caught.value.reason == "invalid_challenge" and "PAYMENT-REQUIRED" in str(caught.value)
        plain = await client.get("http://paid.test/plain")
        assert plain.status_code == 402 and plain.json() == {"error": "subscription expired"}
    assert client.calls == []
    with pytest.raises(PaymentError, match="not an x402 challenge"):
        parse_challenge(httpx.Headers(), b'{"x402Version": 1, "accepts": "no"}')


# -- never pay twice -----------------------------------------------------------


async def test_a_retry_after_a_refused_connection_reuses_the_authorization(chain, wallets, router):
    _, agent, operator = wallets
    wire = Wire(router.app, faults=["refuse"])
    async with client_for(router, agent, policy_for(chain), wire) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(URL, json=chat())
        assert client.calls[0].state == "pending" and client.spend.open > 0
        response = await client.post(URL, json=chat())  # the caller (or its SDK) retries
    assert response.status_code == 200, response.text
    first, second = wire.paid()
    assert first == second  # the same signed authorization, not a new one
    [record] = client.calls
    assert record.attempts == 2 and record.state == "settled"
    assert chain.usdc_balance(operator.address) == record.amount
    assert client.spend.authorized == client.spend.charged == record.usd and client.spend.open == 0


async def test_a_retry_after_a_lost_response_does_not_pay_again(chain, wallets, router):
    _, agent, operator = wallets
    wire = Wire(router.app, faults=["lose"])
    async with client_for(router, agent, policy_for(chain), wire) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(URL, json=chat())  # the router answered and settled; the answer is lost
        with pytest.raises(PaymentError) as caught:
            await client.post(URL, json=chat())
    assert caught.value.reason == "already_settled" and "not paying again" in str(caught.value)
    first, second = wire.paid()
    assert first == second
    [record] = client.calls
    assert record.state == "settled" and client.spend.charged == record.usd
    assert chain.usdc_balance(operator.address) == record.amount  # moved once
    assert chain.usdc_balance(agent.address) == FUNDS - record.amount


async def test_a_v1_retry_after_a_lost_response_does_not_pay_again(chain, wallets, router):
    """A v1 server says "already used" in the 402 body only."""
    _, agent, operator = wallets
    wire = Wire(router.app, faults=["lose"], v1_only=True)
    async with client_for(router, agent, policy_for(chain), wire) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(URL, json=chat())
        with pytest.raises(PaymentError) as caught:
            await client.post(URL, json=chat())
    assert caught.value.reason == "already_settled" and len(set(wire.paid())) == 1
    [record] = client.calls
    assert record.state == "settled" and chain.usdc_balance(operator.address) == record.amount


async def test_a_retry_after_a_settled_answer_was_cut_off_does_not_pay_again(chain, wallets, router):
    _, agent, operator = wallets
    wire = Wire(router.app, faults=["cut"])
    async with client_for(router, agent, policy_for(chain), wire) as client:
        with pytest.raises(httpx.ReadError):
            await client.post(URL, json=chat())
        with pytest.raises(PaymentError) as caught:
            await client.post(URL, json=chat())
        assert caught.value.reason == "already_settled" and "cut off" in str(caught.value)
        assert (await client.post(URL, json=chat("a different request"))).status_code == 200
    assert len(wire.paid()) == 2  # the cut one, and the different request: never the retry
    assert chain.usdc_balance(operator.address) == sum(r.amount for r in client.calls)


async def test_no_new_authorization_while_a_lost_one_is_about_to_expire(chain, wallets, router):
    _, agent, operator = wallets
    wire = Wire(router.app, faults=["refuse"])
    async with client_for(router, agent, policy_for(chain), wire) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(URL, json=chat())
        [record] = client.calls
        client.payer.clock = lambda: record.expires - 5  # too little time left to send it again
        with pytest.raises(PaymentError) as caught:
            await client.post(URL, json=chat())
        assert caught.value.reason == "previous_attempt_unresolved" and len(client.calls) == 1
    assert len(wire.paid()) == 1 and chain.usdc_balance(operator.address) == 0


async def test_a_failed_call_is_retried_with_the_same_authorization_and_costs_nothing(chain, wallets):
    _, agent, operator = wallets
    router = make_router(chain, wallets, fail_models=["simulated/eco"])
    request = chat(model="simulated/eco")
    wire = Wire(router.app)
    async with router.lifespan(), client_for(router, agent, policy_for(chain), wire) as client:
        for _ in range(3):
            failed = await client.post(URL, json=request)
            assert failed.status_code >= 500 and "payment-response" not in failed.headers
    assert len(set(wire.paid())) == 1 and len(wire.paid()) == 3
    [record] = client.calls
    assert record.attempts == 3 and record.state == "unsettled"
    assert chain.usdc_balance(operator.address) == 0 and chain.usdc_balance(agent.address) == FUNDS
    # the authorization stays at risk until it expires, then counts for nothing
    assert client.spend.charged == 0 and client.spend.open == record.usd
    client.payer.clock = lambda: record.expires + 1
    assert client.spend.open == 0 and client.spend.authorized == record.usd


async def test_concurrent_identical_requests_each_pay_and_a_different_request_signs_afresh(chain, wallets, router):
    _, agent, operator = wallets
    wire = Wire(router.app)
    async with client_for(router, agent, policy_for(chain), wire) as client:
        responses = await asyncio.gather(*(client.post(URL, json=chat("same")) for _ in range(3)))
        assert [r.status_code for r in responses] == [200, 200, 200]
    assert len(set(wire.paid())) == 3  # in flight at once: three calls, three authorizations
    assert chain.usdc_balance(operator.address) == sum(r.amount for r in client.calls)
    assert client.spend.paid_calls == 3


# -- receipts --------------------------------------------------------------------


async def test_a_body_that_does_not_match_its_receipt_is_reported(chain, wallets, router):
    _, agent, _ = wallets

    def mangle(content: bytes) -> bytes:
        return content.replace(b"simulated", b"SIMULATED", 1)

    async with client_for(router, agent, policy_for(chain), Wire(router.app, mangle=mangle)) as client:
        response = await client.post(URL, json=chat())
        assert response.status_code == 200
    assert "response_sha256" in client.calls[0].receipt_error
    strict = client_for(router, agent, policy_for(chain), Wire(router.app, mangle=mangle), require_receipt=True)
    async with strict:
        with pytest.raises(ReceiptError, match="response_sha256"):
            await strict.post(URL, json=chat("strict"))
    assert strict.calls[0].state == "settled"  # paid all the same: the error is about the evidence


async def test_a_receipt_from_another_router_key_is_reported(chain, wallets, router):
    _, agent, _ = wallets
    async with client_for(router, agent, policy_for(chain), router=_other()) as client:
        assert (await client.post(URL, json=chat())).status_code == 200
    assert "expected" in client.calls[0].receipt_error


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_the_stream_tap_finds_the_trailer_across_any_chunking(eol):
    from clawrouter.client.payer import CallRecord

    payer = Payer(RouterKey.generate())
    requirements = PaymentRequirements("exact", "eip155:8453", "5", "0xA", "0xB", 60)
    body = b'data: {"a": 1}\n\ndata: {"b": 2}\n\n'.replace(b"\n", eol)
    trailer = (
        b'event: payment\ndata: {"success":true,"network":"eip155:8453","transaction":"0x1"}\n\n'
        b"event:receipt\ndata: {}\n\n"
    ).replace(b"\n", eol)
    stream = body + trailer + b"data: [DONE]\n\n".replace(b"\n", eol)
    for size in (1, 3, 7, len(stream)):
        record = CallRecord("id", "POST", "u", requirements, Decimal(5), 2**40)
        tap = StreamTap(payer, record, sse=True)
        out = b"".join(tap.feed(stream[i : i + size]) for i in range(0, len(stream), size))
        if size < len(stream):
            assert out.startswith(body)  # events are handed on as they complete, not at the end
        out += tap.finish()
        assert out == body + b"data: [DONE]\n\n".replace(b"\n", eol)
        assert record.state == "settled" and record.settlement.transaction == "0x1"
        assert tap.digest.hexdigest() == hashlib.sha256(body).hexdigest()
        assert "malformed event: receipt" in record.receipt_error and not record.verified


def test_a_stream_that_ends_without_its_payment_trailer_was_not_settled():
    from clawrouter.client.payer import CallRecord

    payer = Payer(RouterKey.generate())
    requirements = PaymentRequirements("exact", "eip155:8453", "5", "0xA", "0xB", 60)
    record = CallRecord("id", "POST", "u", requirements, Decimal(5), 2**40)
    tap = StreamTap(payer, record, sse=True)
    tap.feed(b'data: {"error": {"message": "upstream failed"}}\n\n')
    tap.finish()
    assert record.state == "unsettled"


def test_budget_reads_are_pure_and_a_torn_line_loses_nothing(tmp_path):
    from clawrouter.client.policy import Exposure

    path = tmp_path / "spend.jsonl"
    budget = Budget("1.00", path=path)
    live = Exposure("a", Decimal("0.90"), int(time.time()) + 300, "unsettled")
    budget.reserve(live)
    assert budget.spent(now=time.time() + 3600) == 0  # a projection past its expiry...
    with pytest.raises(PolicyError):  # ...does not forget it now
        budget.reserve(Exposure("b", Decimal("0.20"), int(time.time()) + 300))
    with path.open("ab") as f:
        f.write(b'{"id":"torn","usd":"0.0')  # a writer died mid-line
    budget.reserve(Exposure("c", Decimal("0.05"), int(time.time()) + 300))
    assert Budget("1.00", path=path).spent() == Decimal("0.95")  # another reader sees every whole line


def test_policy_arguments_are_checked():
    with pytest.raises(ValueError, match="max_per_call"):
        Policy(max_per_call="lots")
    with pytest.raises(ValueError, match="non-negative"):
        Policy(max_per_session="-1")
    with pytest.raises(TypeError, match="list of CAIP-2"):
        Policy(networks="eip155:8453")
    assert Policy(max_per_call=0.1).max_per_call == Decimal("0.1")
    assert Policy().decimals("eip155:8453", "0x833589FCD6EDB6E08F4C7C32D4F71B54BDA02913") == 6
    assert Policy(max_per_call=None).max_per_call is None


def test_a_long_session_keeps_recent_records_and_exact_totals(chain, wallets):
    """``history`` bounds the records kept; the totals still count every payment, and nothing is reused."""
    _, agent, _ = wallets
    domain = {"name": "USDC", "version": "2"}
    offer = PaymentRequirements("exact", chain.network, "1500", chain.token, _other(), 60, domain)
    settled = encode_header(SettlementResponse(True, chain.network, "0x" + "cd" * 32, agent.address)).decode()
    nonces: set[str] = set()

    def server(request: httpx.Request) -> httpx.Response:
        if "payment-signature" not in request.headers:
            return _challenge_response([offer])
        payment = json.loads(base64.b64decode(request.headers["payment-signature"]))
        nonces.add(payment["payload"]["authorization"]["nonce"])
        return httpx.Response(200, headers={"payment-response": settled}, json={"ok": True})

    payer = Payer(agent, policy_for(chain, max_per_session=None), history=10)
    with httpx.Client(transport=X402Transport(payer=payer, transport=httpx.MockTransport(server))) as client:
        for _ in range(25):
            assert client.post("http://paid.test/", json={"same": "body"}).status_code == 200
    assert len(nonces) == 25 and len(payer.calls) == 10
    spend = payer.spend
    assert spend.paid_calls == 25 and spend.charged == spend.authorized == Decimal("0.0375") and spend.open == 0
