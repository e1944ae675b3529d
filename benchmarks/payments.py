"""What x402 verification adds per request, and settlement throughput on anvil.

Part 1 (in process, no network): the same auth → [verify] → route → [settle]
stack built by ``build_stack`` twice — once for a router with no rail, once for
a router with the ``exact`` EVM rail on an in-process chain (embedded
facilitator, memory ledger and state) — in front of an endpoint that answers
200 at once. Each paid request carries its own pre-signed EIP-3009 payment
(signing is the agent's cost and is done before timing). The payer's balance is
cached (the default), so no chain round trip happens on the path. Rounds
alternate between the two stacks; the figure is the median over rounds of the
CPU time (``time.process_time``) per request, and the difference is what
verify adds: header decode, quote check, signature recovery, balance
reservation, lock, the ledger's authorization entry and the release.

Part 2 (needs anvil from ``npm ci``): the embedded facilitator settles N
authorizations one after another over JSON-RPC; settlements per second.

    python benchmarks/payments.py            # ~30 s
    python benchmarks/payments.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import time

from web3 import Web3

from clawrouter import hookimpl
from clawrouter.app import build_stack
from clawrouter.config import load_config
from clawrouter.errors import json_response
from clawrouter.evm.localchain import AnvilChain, InProcessChain, find_anvil
from clawrouter.evm.networks import EvmNetwork
from clawrouter.evm.pay import pay_exact, payment_header
from clawrouter.evm.rail import local_rail
from clawrouter.keys import RouterKey
from clawrouter.router import Router

BODY = json.dumps({"model": "eco", "messages": [{"role": "user", "content": "benchmark"}], "max_tokens": 40}).encode()


class _Rails:
    __name__ = "bench_rails"

    def __init__(self, rail: object) -> None:
        self.rail = rail

    @hookimpl
    def register_payment_rails(self, config: object) -> list[object]:
        return [self.rail]


async def _ok(scope, receive, send) -> None:
    await json_response(send, 200, b'{"ok":true}')


def _scope(headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "root_path": "",
        "scheme": "http",
        "headers": [(b"host", b"bench"), (b"content-type", b"application/json"), *headers],
    }


async def _call(app, headers) -> int:
    sent = False
    status = 0

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(headers), receive, send)
    return status


async def verify_overhead(rounds: int, per_round: int, ledger: str = "memory") -> dict[str, float]:
    chain = InProcessChain()
    settler, agent, operator = RouterKey.generate(), RouterKey.generate(), RouterKey.generate()
    chain.fund(settler.address, 0)
    chain.fund(agent.address, 10**12)
    network = EvmNetwork(chain.network, chain.chain_id, chain.token, "USDC", "2")
    import tempfile

    path = f"{tempfile.mkdtemp(prefix='clawrouter-bench-')}/ledger.sqlite3"
    config = load_config(data={"ledger": {"backend": ledger, "path": path}}, env={})
    plain = Router(config, entry_points=False)
    paid = Router(
        config,
        plugins=[_Rails(local_rail(Web3(chain.provider), network, operator.address, settler))],
        env={"CLAWROUTER_KEY": settler.private_key.hex()},
        entry_points=False,
    )
    plain_app, paid_app = build_stack(plain, _ok), build_stack(paid, _ok)
    # the 402 tells us the requirements (quote id included) for this body
    challenge: dict = {}

    async def capture(message):
        if message["type"] == "http.response.start":
            challenge.update(dict(message["headers"]))

    async def receive():
        return {"type": "http.request", "body": BODY, "more_body": False}

    await paid_app(_scope([]), receive, capture)
    accepts = json.loads(base64.b64decode(challenge[b"payment-required"]))["accepts"][0]
    total = rounds * per_round + per_round
    headers = [payment_header(pay_exact(accepts, agent.private_key)).encode() for _ in range(total)]
    # warm up both (the first paid request reads the payer's balance from the chain)
    for i in range(per_round):
        assert await _call(plain_app, []) == 200
        assert await _call(paid_app, [(b"payment-signature", headers[i])]) == 200
    used = per_round
    plain_us: list[float] = []
    paid_us: list[float] = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(per_round):
            await _call(plain_app, [])
        plain_us.append((time.process_time() - started) / per_round * 1e6)
        batch = headers[used : used + per_round]
        used += per_round
        started = time.process_time()
        for header in batch:
            await _call(paid_app, [(b"payment-signature", header)])
        paid_us.append((time.process_time() - started) / per_round * 1e6)
    plain_med, paid_med = statistics.median(plain_us), statistics.median(paid_us)
    return {"without_payments_us": plain_med, "with_verify_us": paid_med, "added_us": paid_med - plain_med}


async def settlement_throughput(count: int) -> dict[str, float] | None:
    if find_anvil() is None:
        return None
    with AnvilChain() as chain:
        settler, agent, operator = RouterKey.generate(), RouterKey.generate(), RouterKey.generate()
        chain.fund(settler.address, 0)
        chain.fund(agent.address, 10**12)
        network = EvmNetwork(chain.network, chain.chain_id, chain.token, "USDC", "2")
        rail = local_rail(chain.w3, network, operator.address, settler)
        facilitator = rail.embedded
        requirements = rail.requirements(1000, "bench")
        payments = [pay_exact(requirements, agent.private_key) for _ in range(count)]
        started = time.perf_counter()
        for payment in payments:
            response = await facilitator.settle(payment, requirements)
            assert response.success, response
        elapsed = time.perf_counter() - started
        assert chain.usdc_balance(operator.address) == 1000 * count
        await rail.aclose()
        return {"settlements": count, "seconds": elapsed, "per_second": count / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, per_round, settle_n = (5, 200, 20) if args.quick else (15, 1000, 100)
    for ledger in ("memory", "sqlite"):
        verify = asyncio.run(verify_overhead(rounds, per_round, ledger))
        print(
            f"verify ({ledger} ledger): {verify['without_payments_us']:.0f} µs CPU per request without payments, "
            f"{verify['with_verify_us']:.0f} µs with verify -> +{verify['added_us']:.0f} µs "
            f"(median of {rounds} interleaved rounds x {per_round} requests)"
        )
    settle = asyncio.run(settlement_throughput(settle_n))
    if settle is None:
        print("settlement: anvil not found (run `npm ci`), skipped")
    else:
        print(
            f"settlement on anvil: {settle['settlements']} sequential settlements in {settle['seconds']:.2f} s "
            f"= {settle['per_second']:.1f}/s (each sent, mined and its receipt read)"
        )


if __name__ == "__main__":
    main()
