"""What the Solana ``exact`` rail costs per payment, against the EVM rail in the same run.

Everything runs in this process: a LiteSVM chain (``LocalSolana``) behind its
JSON-RPC facade (``RpcFacade``, a threaded HTTP server on 127.0.0.1), and, for
reference, the EVM rail on eth-tester (``InProcessChain``). Measured, per payment:

* ``sign``           the agent's half, for scale: ``SolanaExactSigner.sign`` (the
                     ``clawrouter.client`` signer) with its blockhash and mint cached;
* ``check``          ``check_transaction`` alone: the spec's local rules and the
                     payer's ed25519 signature (no chain);
* ``verify-http``    ``ExactSvmRail.verify`` with simulation: the local rules, one
                     JSON-RPC batch (getSignatureStatuses, getLatestBlockhash,
                     getBlockHeight, simulateTransaction) through the rail's real
                     RPC client (aiohttp) to the facade over HTTP, the blockhash's
                     age check, and the balance reservation (cached balance);
* ``verify-inproc``  the same, the JSON-RPC bodies handed to the facade in process
                     (no socket: ``verify-http`` minus this is the HTTP hop);
* ``verify-nosim``   ``verify`` with ``simulate=False``: the same batch without the
                     simulation (a replay and the blockhash's age are still checked);
* ``settle-http``    ``rail.settle``: co-sign, look the transaction up, send it
                     (with the node's preflight), confirm; three RPC round trips;
* ``evm-sign``       (reference) ``EvmExactSigner.sign``: an EIP-3009 authorization;
* ``evm-verify``     (reference) ``ExactEvmRail.verify`` on the in-process EVM chain:
                     EIP-3009 checks, signature recovery, reservation (its default
                     ``simulate = false``: no chain call); the ratios divide by it;
* ``evm-verify-sim`` (reference) the same with ``simulate=True``: an ``eth_call`` of
                     ``transferWithAuthorization`` on eth-tester's py-evm, in process
                     (slow: py-evm interprets the EVM in Python; fewer per round).

Every payment is a fresh signed transaction (or authorization), built before its
timed loop. Variants run in interleaved rounds (order rotated each round); the
figures are the median over rounds of wall time per operation and of this
process's CPU time per operation (``time.process_time``: every thread, so for the
HTTP rows it includes the facade's HTTP server and LiteSVM, i.e. the "node"), and
each variant's ratio to ``evm-verify`` in the same run. Balances are cached
(``balance_ttl`` one hour), so no balance read is on a timed path.

    python benchmarks/solana_rail.py            # ~25 s on 2 cores
    python benchmarks/solana_rail.py --quick    # ~3 s, a smoke run
    python benchmarks/solana_rail.py --json     # JSON on stdout, the table on stderr
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from clawrouter_solana.client import SolanaExactSigner
from clawrouter_solana.exact import build_transfer, check_transaction, encode_transaction
from clawrouter_solana.facilitator import EmbeddedSvmFacilitator
from clawrouter_solana.localnet import InProcessTransport, LocalSolana, RpcFacade
from clawrouter_solana.networks import LOCALNET
from clawrouter_solana.rail import ExactSvmRail
from clawrouter_solana.rpc import SolanaRpc
from solders.keypair import Keypair
from web3 import Web3

from clawrouter.client import EvmExactSigner, PaymentSigner
from clawrouter.evm.localchain import InProcessChain
from clawrouter.evm.networks import EvmNetwork
from clawrouter.evm.pay import pay_exact
from clawrouter.evm.rail import ExactEvmRail, local_rail
from clawrouter.keys import RouterKey
from clawrouter.payments import PaymentPayload, PaymentRequirements, VerifiedPayment

AMOUNT = 1_000  # atomic units per payment (0.001 USDC)
BALANCE_TTL = 3600.0
VARIANTS = (
    "sign",
    "check",
    "verify-http",
    "verify-inproc",
    "verify-nosim",
    "settle-http",
    "evm-sign",
    "evm-verify",
    "evm-verify-sim",
)
REFERENCE = "evm-verify"


class Bench:
    """The two chains, their parties and the rails under test."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.local = LocalSolana()
        self.facade = RpcFacade(self.local).start()
        self.fee_payer, self.agent, self.operator = Keypair(), Keypair(), Keypair()
        self.local.airdrop(str(self.fee_payer.pubkey()), 10**12)  # fees: 10,000 lamports per settlement
        self.local.fund(str(self.agent.pubkey()), 10**15, lamports=0)  # USDC, and no SOL
        self.local.create_ata(str(self.operator.pubkey()))
        self.rails = {
            "verify-http": self._svm_rail(SolanaRpc(self.facade.url), simulate=True),
            "verify-inproc": self._svm_rail(
                SolanaRpc(self.facade.url, transport=InProcessTransport(self.facade.handle)), simulate=True
            ),
            "verify-nosim": self._svm_rail(SolanaRpc(self.facade.url), simulate=False),
        }
        self.requirements = self.rails["verify-http"].requirements(AMOUNT, "bench")
        self.managed = {str(self.fee_payer.pubkey())}
        self.counts, self.settled = dict(counts), 0
        # the agent's signer, its caches filled once (the blockhash kept as long as the run)
        self.signer = SolanaExactSigner(
            self.agent, rpc_urls={LOCALNET.network: self.facade.url}, blockhash_ttl=BALANCE_TTL
        )
        self.signer.sign(self.requirements, None, 2)

        self.chain = InProcessChain()
        settler, self.evm_agent, evm_operator = RouterKey.generate(), RouterKey.generate(), RouterKey.generate()
        self.chain.fund(settler.address, 0)
        self.chain.fund(self.evm_agent.address, 10**15)
        network = EvmNetwork(self.chain.network, self.chain.chain_id, self.chain.token, "USDC", "2")
        self.evm: ExactEvmRail = local_rail(
            Web3(self.chain.provider), network, evm_operator.address, settler, balance_ttl=BALANCE_TTL
        )
        self.evm_requirements = self.evm.requirements(AMOUNT, "bench")
        self.evm_sim: ExactEvmRail = local_rail(
            Web3(self.chain.provider), network, evm_operator.address, settler, simulate=True, balance_ttl=BALANCE_TTL
        )
        self.evm_signer = EvmExactSigner(self.evm_agent)

    def _svm_rail(self, rpc: SolanaRpc, *, simulate: bool) -> ExactSvmRail:
        facilitator = EmbeddedSvmFacilitator(
            LOCALNET, rpc, [self.fee_payer], simulate=simulate, balance_ttl=BALANCE_TTL
        )
        return ExactSvmRail(LOCALNET, str(self.operator.pubkey()), facilitator)

    # -- payments --------------------------------------------------------------------

    def new_round(self) -> None:
        """A blockhash that outlives this round: each settlement takes one slot of its 150."""
        if self.local.last_valid_block_height - self.local.block_height < self.counts["settle-http"] + 10:
            self.local.expire_blockhash()

    def svm_payments(self, n: int) -> list[PaymentPayload]:
        blockhash = self.local.latest_blockhash()
        payments = []
        for _ in range(n):  # a random memo nonce each: n distinct transactions
            tx = build_transfer(self.requirements, self.agent, blockhash=blockhash, decimals=6)
            payments.append(PaymentPayload(2, {"transaction": encode_transaction(tx)}, accepted=self.requirements))
        return payments

    def evm_payments(self, n: int) -> list[PaymentPayload]:
        return [pay_exact(self.evm_requirements, self.evm_agent.private_key) for _ in range(n)]

    # -- one timed loop per variant ------------------------------------------------------

    async def run(self, variant: str) -> tuple[float, float]:
        """(wall µs, CPU µs) per operation of one round of ``variant``."""
        n = self.counts[variant]
        if variant in ("sign", "evm-sign"):
            signer: PaymentSigner = self.signer if variant == "sign" else self.evm_signer
            requirements = self.requirements if variant == "sign" else self.evm_requirements

            async def sign_all() -> None:
                for _ in range(n):
                    signer.sign(requirements, None, 2)

            return await _timed(sign_all, n)
        if variant == "check":
            payments = self.svm_payments(n)
            requirements, managed = self.requirements, self.managed

            async def check_all() -> None:
                for payment in payments:
                    check_transaction(payment, requirements, managed)

            return await _timed(check_all, len(payments))
        if variant == "settle-http":
            rail = self.rails["verify-http"]
            verified = [await rail.verify(p, self.requirements) for p in self.svm_payments(n)]

            async def settle_all() -> None:
                for payment in verified:
                    response = await rail.settle(payment, AMOUNT)
                    assert response.success, response

            result = await _timed(settle_all, len(verified))
            self.settled += len(verified)
            return result
        if variant.startswith("evm-"):
            evm = self.evm_sim if variant == "evm-verify-sim" else self.evm
            return await self._verify_loop(evm, self.evm_payments(n), self.evm_requirements)
        return await self._verify_loop(self.rails[variant], self.svm_payments(n), self.requirements)

    @staticmethod
    async def _verify_loop(
        rail: ExactSvmRail | ExactEvmRail, payments: list[PaymentPayload], requirements: PaymentRequirements
    ) -> tuple[float, float]:
        verified: list[VerifiedPayment] = []

        async def verify_all() -> None:
            for payment in payments:
                verified.append(await rail.verify(payment, requirements))

        result = await _timed(verify_all, len(payments))
        assert all(v.amount == AMOUNT for v in verified)
        for payment in verified:  # the reservations go back (untimed)
            rail.release(payment)
        return result

    async def warm_up(self) -> None:
        """One of each, untimed: the first balance reads, connection pools, code paths."""
        saved, self.counts = self.counts, dict.fromkeys(self.counts, 3)
        self.new_round()
        for variant in VARIANTS:
            await self.run(variant)
        self.counts = saved

    async def aclose(self) -> None:
        for rail in self.rails.values():
            await rail.aclose()
        await self.evm.aclose()
        await self.evm_sim.aclose()
        self.signer.close()
        self.facade.stop()


async def _timed(loop: Callable[[], Awaitable[None]], n: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    await loop()
    return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6


async def measure(rounds: int, counts: Mapping[str, int]) -> dict[str, Any]:
    bench = Bench(counts)
    samples: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    try:
        await bench.warm_up()
        before = bench.local.token_balance(str(bench.operator.pubkey()))
        settled_before = bench.settled
        for index in range(rounds):
            bench.new_round()
            shift = index % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                samples[variant].append(await bench.run(variant))
        received = bench.local.token_balance(str(bench.operator.pubkey())) - before
        assert received == (bench.settled - settled_before) * AMOUNT, "every settlement moved its amount once"
        facade_calls = dict(bench.facade.calls)
    finally:
        await bench.aclose()
    figures: dict[str, dict[str, Any]] = {
        v: {
            "wall_us": statistics.median(w for w, _ in s),
            "cpu_us": statistics.median(c for _, c in s),
            "ops_per_round": counts[v],
            "wall_us_by_round": [round(w, 1) for w, _ in s],
        }
        for v, s in samples.items()
    }
    reference = figures[REFERENCE]
    for figure in figures.values():
        figure["wall_x_evm"] = figure["wall_us"] / reference["wall_us"]
        figure["cpu_x_evm"] = figure["cpu_us"] / reference["cpu_us"]
    return {"figures": figures, "rounds": rounds, "rpc_calls": facade_calls}


def _fmt(us: float) -> str:
    return f"{us / 1000:8.2f} ms" if us >= 1000 else f"{us:8.0f} µs"


def table(result: dict[str, Any]) -> str:
    figures = result["figures"]
    lines = [
        f"{'variant':<15} {'wall/op':>11} {'CPU/op':>11} {'wall x evm':>11} {'CPU x evm':>10} {'ops/round':>10}",
        "-" * 73,
    ]
    for name, f in figures.items():
        lines.append(
            f"{name:<15} {_fmt(f['wall_us']):>11} {_fmt(f['cpu_us']):>11} {f['wall_x_evm']:>10.2f}x "
            f"{f['cpu_x_evm']:>9.2f}x {f['ops_per_round']:>10}"
        )
    sim = figures["verify-http"]["wall_us"] - figures["verify-nosim"]["wall_us"]
    hop = figures["verify-http"]["wall_us"] - figures["verify-inproc"]["wall_us"]
    lines += [
        "",
        f"simulation round trip (verify-http - verify-nosim): {_fmt(sim).strip()} wall per payment",
        f"of which HTTP between rail and node (verify-http - verify-inproc): {_fmt(hop).strip()}",
        f"median of {result['rounds']} interleaved rounds; {result['environment']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run (~3 s)")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout (the table goes to stderr)")
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop (default uvloop, which `clawrouter serve` gets from uvicorn when installed)",
    )
    args = parser.parse_args(argv)
    rounds, ops, settles, simulated = (3, 60, 20, 5) if args.quick else (15, 300, 100, 20)
    counts = dict.fromkeys(VARIANTS, ops) | {"settle-http": settles, "evm-verify-sim": simulated}
    runner: Callable[[Any], Any] = asyncio.run
    loop = args.loop
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            loop = "asyncio (uvloop is not installed)"
        else:
            runner = uvloop.run
    started = time.perf_counter()
    result = runner(measure(rounds, counts))
    result["environment"] = (
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, loop {loop}, {time.perf_counter() - started:.0f} s"
    )
    if args.json:
        print(table(result), file=sys.stderr)
        print(json.dumps(result, indent=2))
    else:
        print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
