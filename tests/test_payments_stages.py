"""The verify and settle stages' plumbing, with a test rail (the chain rails have their own suites)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from helpers import chat, sse_events
from plugins.fake_rail import FakeRail, FakeRailPlugin, payment_header

from plugins import echo_provider

URL = "/v1/chat/completions"


@pytest.fixture
def rail():
    rail = FakeRail()
    rail.balances["alice"] = 10_000_000
    return rail


@pytest.fixture
async def paid(clawrouter_router, clawrouter_client, rail):
    config = {
        "ledger": {"backend": "memory"},
        "providers": {"simulated": {"kind": "simulated"}, "cut": {"kind": "echo", "fail_after": 1}},
    }
    router = clawrouter_router(config, plugins=[FakeRailPlugin(rail), echo_provider])
    return router, await clawrouter_client(router)


async def challenge(client, body):
    response = await client.post(URL, json=body)
    assert response.status_code == 402
    document = json.loads(base64.b64decode(response.headers["payment-required"]))
    return response, document


async def test_challenge(paid):
    router, client = paid
    body = chat(model="eco", max_tokens=100)
    response, document = await challenge(client, body)
    assert document["x402Version"] == 2
    assert document["resource"]["url"] == "http://clawrouter.test/v1/chat/completions"
    [accepts] = document["accepts"]
    assert accepts["scheme"] == "exact" and accepts["network"] == "test:1" and accepts["payTo"] == "0xrouter"
    # worst case over the chain, in atomic units, from catalogue prices
    from clawrouter.wire import decode_request

    request = decode_request(json.dumps(body).encode())
    assert int(accepts["amount"]) == router.quote(request, router.decide(request)) > 0
    # the body is the x402 v1 document, for v1 clients (v2 clients read the header)
    v1 = response.json()
    assert v1["x402Version"] == 1 and v1["error"] == "payment required" and v1["type"] == "payment_required"
    [v1_accepts] = v1["accepts"]
    assert v1_accepts["maxAmountRequired"] == accepts["amount"] and v1_accepts["payTo"] == accepts["payTo"]
    assert v1_accepts["resource"] == document["resource"]["url"] and v1_accepts["extra"] == accepts["extra"]
    assert accepts["extra"]["quote"]  # the stateless quote id


async def test_paid_request_is_settled_once_with_payment_response(paid, rail):
    router, client = paid
    body = chat(model="eco", max_tokens=100)
    _, document = await challenge(client, body)
    header = payment_header(document["accepts"][0])
    response = await client.post(URL, json=body, headers={"PAYMENT-SIGNATURE": header})
    assert response.status_code == 200
    settlement = json.loads(base64.b64decode(response.headers["payment-response"]))
    assert settlement == {"success": True, "network": "test:1", "transaction": "tx-n1", "payer": "alice"}
    assert len(rail.settled) == 1 and rail.settled[0][1] <= int(document["accepts"][0]["amount"])
    kinds = [e.kind for e in await router.ledger.entries()]
    assert kinds == ["authorization", "execution", "settlement", "receipt"]
    [intent] = await router.ledger.intents()
    assert intent.status == "settled" and intent.transaction == "tx-n1"
    # the same payment again: the rail's nonce is spent on chain in real rails; here the balance still
    # covers it, so the settled marker must refuse it
    again = await client.post(URL, json=body, headers={"PAYMENT-SIGNATURE": header})
    assert again.status_code == 402 and again.json()["code"] == "invalid_exact_evm_nonce_already_used"
    assert len(rail.settled) == 1


async def test_v1_header_gets_v1_response_header(paid):
    _, client = paid
    body = chat(model="eco", max_tokens=10)
    _, document = await challenge(client, body)
    response = await client.post(
        URL, json=body, headers={"X-PAYMENT": payment_header(document["accepts"][0], version=1)}
    )
    assert response.status_code == 200 and "x-payment-response" in response.headers


@pytest.mark.parametrize(
    ("header", "status", "fragment"),
    [
        ("%%%not-base64", 400, "not valid base64"),
        (base64.b64encode(b"{not json").decode(), 400, "not valid JSON"),
        (base64.b64encode(b'{"x402Version": "two"}').decode(), 400, "payment header: "),
        (base64.b64encode(b'{"x402Version": 2, "payload": {}}').decode(), 400, "no scheme/network"),
    ],
)
async def test_malformed_payment_headers_are_400(paid, header, status, fragment):
    _, client = paid
    response = await client.post(URL, json=chat(model="eco"), headers={"PAYMENT-SIGNATURE": header})
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


async def test_rejections_carry_the_reason_and_a_fresh_challenge(paid, rail):
    _, client = paid
    body = chat(model="eco", max_tokens=100)
    _, document = await challenge(client, body)
    accepted = document["accepts"][0]
    cases = {
        "invalid_quote": payment_header({**accepted, "amount": "1"}),
        "invalid_payment_requirements": payment_header({**accepted, "payTo": "0xsomeoneelse"}),
        "unsupported_scheme": payment_header({**accepted, "network": "test:999"}),
        "insufficient_funds": payment_header(accepted, payer="bob"),
    }
    tampered = json.loads(base64.b64decode(payment_header(accepted)))
    tampered["payload"]["sig"] = "0" * 64
    cases["invalid_signature"] = base64.b64encode(json.dumps(tampered).encode()).decode()
    for code, header in cases.items():
        response = await client.post(URL, json=body, headers={"PAYMENT-SIGNATURE": header})
        assert response.status_code == 402, code
        assert response.json()["code"] == code
        assert "payment-required" in response.headers
    # a quote for another request does not pay for this one
    other = chat(model="eco", max_tokens=500)
    response = await client.post(URL, json=other, headers={"PAYMENT-SIGNATURE": payment_header(accepted)})
    assert response.json()["code"] == "invalid_quote"
    assert rail.settled == []


async def test_concurrent_copies_one_served_one_settled(paid, rail):
    _router, client = paid
    body = chat(model="eco", max_tokens=100)
    _, document = await challenge(client, body)
    header = payment_header(document["accepts"][0])
    responses = await asyncio.gather(
        *[client.post(URL, json=body, headers={"PAYMENT-SIGNATURE": header}) for _ in range(20)]
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and set(statuses[1:]) <= {402, 409}  # in flight, or already settled
    assert len(rail.settled) == 1


async def test_failed_call_is_not_settled_and_lock_is_released(paid, rail, clawrouter_router, clawrouter_client):
    router, client = paid
    body = chat("alpha beta gamma", model="cut/model", stream=True, max_tokens=10)
    _, document = await challenge(client, body)
    header = payment_header(document["accepts"][0])
    response = await client.post(URL, json=body, headers={"PAYMENT-SIGNATURE": header})
    events = sse_events(response.text)
    assert json.loads(events[-1])["error"]["type"] == "upstream_error"
    assert rail.settled == []
    kinds = [e.kind for e in await router.ledger.entries()]
    assert kinds == ["authorization", "released"]
    # released: the same payment can be used again (and this time it succeeds)
    ok_body = chat("alpha beta gamma", model="eco", stream=True, max_tokens=10)
    _, document = await challenge(client, ok_body)
    retry = await client.post(URL, json=ok_body, headers={"PAYMENT-SIGNATURE": payment_header(document["accepts"][0])})
    assert retry.status_code == 200
    text = retry.text
    assert "event: payment\n" in text and text.endswith("data: [DONE]\n\n")
    payment_event = json.loads(text.split("event: payment\ndata: ", 1)[1].split("\n", 1)[0])
    assert payment_event["success"] is True and len(rail.settled) == 1
    assert "event: receipt\n" in text


async def test_failed_settlement_replaces_the_response_with_402(paid, rail):
    router, client = paid
    rail.fail_settle = True
    body = chat(model="eco", max_tokens=10)
    _, document = await challenge(client, body)
    response = await client.post(URL, json=body, headers={"PAYMENT-SIGNATURE": payment_header(document["accepts"][0])})
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "unexpected_settle_error"
    assert [e.kind for e in await router.ledger.entries()][-1] == "released"


async def test_no_rail_means_no_payment_machinery(clawrouter_router, clawrouter_client):
    router = clawrouter_router()
    client = await clawrouter_client(router)
    response = await client.post(URL, json=chat(), headers={"PAYMENT-SIGNATURE": "garbage"})
    assert response.status_code == 200 and "payment-response" not in response.headers
    assert router._ledger is None  # never even opened
