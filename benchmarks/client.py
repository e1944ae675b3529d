"""What the agent-side client adds per paid call, in process (no network, no chain).

A mock x402 server (``httpx.MockTransport``) answers an unpaid request with a
402 (``PAYMENT-REQUIRED``, one ``exact`` entry) and a paid one with 200, a
``PAYMENT-RESPONSE`` and a router receipt signed over the body. Two ways to
make the same paid call, in alternating rounds:

* **by hand** (the reference): a plain ``httpx.Client`` sends the request, gets
  the 402, and sends it again with a payment signed *before timing* — the
  round trips with no client logic;
* **clawrouter.client.Client**: the same two round trips, plus what the client
  does — parse the challenge, apply the policy, sign EIP-3009, count the
  authorization, read the settlement, verify the receipt's signature and the
  body digest.

The figure is the median over rounds of CPU time (``time.process_time``) per
call; the difference is the client's cost.

    python benchmarks/client.py            # ~10 s
    python benchmarks/client.py --quick
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time

import httpx
import msgspec

from clawrouter.client import Client, Policy
from clawrouter.evm.networks import BASE_SEPOLIA
from clawrouter.evm.pay import pay_exact, payment_header
from clawrouter.keys import RouterKey
from clawrouter.payments import PaymentRequired, PaymentRequirements, SettlementResponse, encode_header
from clawrouter.receipts import Receipt, encode_receipt_header, sign_receipt

BODY = msgspec.json.encode(
    {"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": "hi"}}]}
)


def mock_server(agent: RouterKey) -> tuple[httpx.MockTransport, PaymentRequirements]:
    router, operator = RouterKey.generate(), RouterKey.generate()
    requirements = PaymentRequirements(
        "exact", BASE_SEPOLIA.network, "650", BASE_SEPOLIA.asset, operator.address, 60, {"name": "USDC", "version": "2"}
    )
    challenge = encode_header(PaymentRequired(2, [requirements], error="payment required")).decode()
    tx = "0x" + "ab" * 32
    settlement = encode_header(SettlementResponse(True, BASE_SEPOLIA.network, tx, agent.address, amount="650"))
    receipt = sign_receipt(
        Receipt(
            id="r1",
            request_id="r1",
            issued_at=int(time.time()),
            model="m",
            provider="p",
            prompt_tokens=1,
            completion_tokens=1,
            quote="650",
            charged="650",
            cost_usd="0.00065",
            asset=BASE_SEPOLIA.asset,
            payer=agent.address,
            network=BASE_SEPOLIA.network,
            transaction=tx,
            response_sha256=hashlib.sha256(BODY).hexdigest(),
        ),
        router,
    )
    paid_headers = {
        "content-type": "application/json",
        "payment-response": settlement.decode(),
        "x-clawrouter-receipt": encode_receipt_header(receipt).decode(),
    }

    def handle(request: httpx.Request) -> httpx.Response:
        if "payment-signature" in request.headers:
            return httpx.Response(200, headers=paid_headers, content=BODY)
        return httpx.Response(402, headers={"payment-required": challenge}, json={})

    return httpx.MockTransport(handle), requirements


def by_hand(http: httpx.Client, headers: list[str]) -> None:
    for header in headers:
        assert http.post("http://router.test/v1/chat/completions", content=b"{}").status_code == 402
        response = http.post(
            "http://router.test/v1/chat/completions", content=b"{}", headers={"PAYMENT-SIGNATURE": header}
        )
        assert response.status_code == 200 and response.content == BODY


def with_client(http: Client, n: int) -> None:
    for _ in range(n):
        response = http.post("http://router.test/v1/chat/completions", content=b"{}")
        assert response.status_code == 200 and response.content == BODY
    assert http.calls[-1].receipt_error is None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, per_round = (3, 50) if args.quick else (15, 200)
    agent = RouterKey.generate()
    transport, requirements = mock_server(agent)
    policy = Policy(networks=[BASE_SEPOLIA.network], max_per_call=None, max_per_session=None)
    hand, client = [], []
    with httpx.Client(transport=transport) as plain:
        for _ in range(rounds):
            headers = [payment_header(pay_exact(requirements, agent.private_key)) for _ in range(per_round)]
            start = time.process_time()
            by_hand(plain, headers)
            hand.append((time.process_time() - start) / per_round)
            with Client(agent, policy, transport=transport) as paying:
                start = time.process_time()
                with_client(paying, per_round)
                client.append((time.process_time() - start) / per_round)
                assert paying.spend.paid_calls == per_round
    ref, ours = statistics.median(hand), statistics.median(client)
    print(f"paid call, by hand (pre-signed)   {ref * 1e6:8.0f} µs CPU")
    print(f"paid call, clawrouter.client      {ours * 1e6:8.0f} µs CPU")
    print(f"client adds                        {(ours - ref) * 1e6:8.0f} µs CPU per paid call ({ours / ref:.2f}x)")


if __name__ == "__main__":
    main()
