"""``clawrouter demo``: the embedded default, paid end to end, offline.

Starts a local chain — by default an in-process EVM chain (eth-tester/py-evm)
with the project's test USDC (:mod:`clawrouter.evm.localchain`); with
``--network NAME`` one an installed plugin offers (hook
``register_demo_networks``, e.g. ``solana`` from clawrouter-solana) — funds a
demo agent wallet, and serves the router on 127.0.0.1 with the simulated
provider and that chain's ``exact`` rail. The
agent sends a few chat completions through :class:`clawrouter.client.Client`,
which pays each 402 challenge (an EIP-3009 authorization, or a Solana transfer) within its policy
and verifies the router's receipts: profiles, an explicit model, a stream, a
model that fails and falls back, and one that fails outright (not charged). It
prints a table of what each call cost and which transaction settled it, the
agent's spend, then reconciles the ledger with the chain.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import msgspec

from .client.payer import EvmExactSigner, PaymentSigner
from .config import load_config
from .hookspecs import hookimpl
from .keys import RouterKey
from .payments import PaymentRail
from .router import Router
from .server import BackgroundServer

__all__ = ["AGENT_FUNDS", "DemoChain", "DemoNetwork", "EvmDemo", "demo_networks", "run_demo"]

PROMPTS = [
    ("auto", "Summarise why per-call payments suit autonomous agents.", False),
    ("eco", "List three colours.", False),
    ("premium", "Prove that the square root of two is irrational.", False),
    ("simulated/flaky", "This model fails upstream; the router falls back.", False),
    ("simulated/broken", "This model fails and has no fallback: nothing is charged.", False),
    ("auto", "Stream a short greeting.", True),
]
AGENT_FUNDS = 5_000_000  # 5 USDC


class _DemoRails:
    __name__ = "demo_rails"

    def __init__(self, rail: object) -> None:
        self.rail = rail

    @hookimpl
    def register_payment_rails(self, config: object) -> list[object]:
        return [self.rail]


def _demo_config(ledger: Path) -> Any:
    data = json.loads(json.dumps(msgspec.to_builtins(load_config(env={}))))
    data["providers"]["simulated"]["fail_models"] = ["simulated/flaky", "simulated/broken"]
    data["ledger"] = {"backend": "sqlite", "path": str(ledger)}
    data["models"] = [
        {
            "id": f"simulated/{name}",
            "provider": "simulated",
            "input_price": 0.2,
            "output_price": 0.8,
            "fallbacks": fallbacks,
        }
        for name, fallbacks in (("flaky", ["simulated/eco"]), ("broken", []))
    ]
    return load_config(data=data, env={})


class DemoChain(Protocol):
    """A local chain, started and funded, that the demo pays on."""

    network: str  # CAIP-2 id
    description: str  # one line for the banner
    asset: str
    decimals: int
    agent: str  # the paying agent's address, funded with AGENT_FUNDS
    operator: str  # the address the router is paid to
    router_key: RouterKey  # signs receipts

    def rail(self) -> PaymentRail: ...

    def signer(self) -> PaymentSigner: ...

    def balance(self, address: str) -> int: ...

    def confirmed(self, transaction: str) -> bool:
        """Whether ``transaction`` landed and succeeded."""
        ...

    def close(self) -> None: ...


class DemoNetwork(Protocol):
    """What ``clawrouter demo --network NAME`` runs on (hook ``register_demo_networks``)."""

    name: str
    description: str

    def start(self, funds: int) -> DemoChain:
        """Start the chain, fund the agent with ``funds`` atomic units; raise
        ``RuntimeError`` with an install hint if a package is missing."""
        ...


class _EvmChain:
    def __init__(self, funds: int) -> None:
        from web3 import Web3

        from .evm.localchain import InProcessChain
        from .evm.networks import EvmNetwork

        self.chain = InProcessChain()
        self.router_key, agent, operator = RouterKey.generate(), RouterKey.generate(), RouterKey.generate()
        self._agent_key = agent
        self.chain.fund(self.router_key.address, 0)  # gas for settlements
        self.chain.fund(agent.address, funds)
        self.network, self.asset, self.decimals = self.chain.network, self.chain.token, 6
        self.agent, self.operator = agent.address, operator.address
        self.description = f"in-process EVM chain {self.network}"
        self._evm = EvmNetwork(self.network, self.chain.chain_id, self.asset, "USDC", "2", label="local")
        self._w3 = Web3(self.chain.provider)

    def rail(self) -> PaymentRail:
        from .evm.rail import local_rail

        return local_rail(self._w3, self._evm, self.operator, self.router_key)

    def signer(self) -> PaymentSigner:
        return EvmExactSigner(self._agent_key)

    def balance(self, address: str) -> int:
        return int(self.chain.usdc_balance(address))

    def confirmed(self, transaction: str) -> bool:
        return int(self.chain.w3.eth.get_transaction_receipt(transaction)["status"]) == 1  # type: ignore[arg-type]

    def close(self) -> None:
        pass


class EvmDemo:
    """The built-in demo network: the in-process EVM (eth-tester) with the project's test USDC."""

    name = "base"
    description = "in-process EVM chain with EIP-3009 test USDC (the `demo` extra)"

    def start(self, funds: int) -> DemoChain:
        try:
            import eth_tester  # type: ignore[import-untyped]  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(f"the in-process chain needs: pip install 'clawrouter[demo]' ({exc})") from None
        return _EvmChain(funds)


def demo_networks() -> dict[str, DemoNetwork]:
    """The built-in network and those installed plugins offer (a plugin's wins on a shared name)."""
    from .plugins import load_plugins

    networks: dict[str, DemoNetwork] = {EvmDemo.name: EvmDemo()}
    pm, _, _ = load_plugins()
    for result in reversed(pm.hook.register_demo_networks()):
        for network in result or ():
            networks[network.name] = network
    return networks


def run_demo(config_path: str | Path | None = None, network: str = "base") -> int:
    from .client import Client, Policy

    networks = demo_networks()
    if network not in networks:
        hint = " (pip install clawrouter-solana)" if network == "solana" else ""
        print(f"clawrouter demo: no demo network {network!r}{hint}; installed: {', '.join(sorted(networks))}")
        return 2
    started = time.perf_counter()
    try:
        chain = networks[network].start(AGENT_FUNDS)
    except RuntimeError as exc:
        print(f"clawrouter demo: {exc}")
        return 2
    try:
        return _run(chain, config_path, started, Client, Policy)
    finally:
        chain.close()


def _run(chain: DemoChain, config_path: str | Path | None, started: float, Client: Any, Policy: Any) -> int:
    router_key = chain.router_key
    workdir = Path(tempfile.mkdtemp(prefix="clawrouter-demo-"))
    config = load_config(config_path) if config_path is not None else _demo_config(workdir / "ledger.sqlite3")
    router = Router(
        config,
        plugins=[_DemoRails(chain.rail())],
        env={"CLAWROUTER_KEY": router_key.private_key.hex()},
        entry_points=False,
    )
    # the agent's policy: the local chain's token, at most $0.05 a call and $1 for the session
    policy = Policy(
        networks=[chain.network], assets={chain.asset: chain.decimals}, max_per_call="0.05", max_per_session="1.00"
    )
    print(
        f"clawrouter demo: {len(router.catalogue)} simulated models; {chain.description} "
        f"({time.perf_counter() - started:.1f} s to start)\n"
        f"  agent {chain.agent} holds {AGENT_FUNDS / 1e6:.2f} USDC, pays at most $0.05 a call and $1.00 in all;\n"
        f"  the router pays to {chain.operator}\n"
    )
    rows: list[tuple[str, ...]] = []
    failures = 0
    with (
        BackgroundServer(router.app) as server,
        Client(
            policy=policy, signers=[chain.signer()], router=router_key.address, base_url=server.url + "/v1", timeout=60
        ) as client,
    ):
        for model, prompt, stream in PROMPTS:
            body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 64}
            if stream:
                body["stream"] = True
                body["stream_options"] = {"include_usage": True}
                with client.stream("POST", "/chat/completions", json=body) as response:
                    text = "".join(response.iter_text())
                usage = _stream_usage(text)
                kind = "stream"
            else:
                response = client.post("/chat/completions", json=body)
                usage = response.json().get("usage", {}) if response.status_code == 200 else {}
                kind = "json"
            status, answered = response.status_code, response.headers.get("x-clawrouter-model", "-")
            record = client.calls[-1]  # the authorization the client signed for this call
            if status != 200:
                failures += 1
                answered = f"failed ({status})"
            settled = record.state == "settled" and record.settlement is not None
            rows.append(
                (
                    model,
                    answered,
                    kind,
                    str(usage.get("prompt_tokens", "-")),
                    str(usage.get("completion_tokens", "-")),
                    f"{record.amount / 1e6:.6f}",
                    f"{record.amount / 1e6:.6f}" if settled else "0.000000",
                    _short(record.settlement.transaction if settled and record.settlement else ""),
                    "verified" if record.verified else "-",
                )
            )
        spend = client.spend
    header = ("REQUESTED", "ANSWERED BY", "MODE", "IN", "OUT", "QUOTE USDC", "CHARGED", "TRANSACTION", "RECEIPT")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(
        f"\nagent spend: {spend.paid_calls} paid calls, ${spend.charged} charged, ${spend.open} signed but "
        "unsettled (a failed call's authorization, void once it expires)"
    )
    ok = _reconcile(router, chain)
    print(f"\n{len(rows)} calls ({failures} failed, not charged) served by {server.url}; ledger at {workdir}")
    return 0 if ok else 1


def _stream_usage(text: str) -> dict[str, Any]:
    usage: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("data: {"):
            usage = json.loads(line[6:]).get("usage") or usage
    return usage


def _short(tx: str) -> str:
    return f"{tx[:10]}…{tx[-6:]}" if len(tx) > 20 else (tx or "-")


def _reconcile(router: Router, chain: DemoChain) -> bool:
    import asyncio

    async def settled() -> list[Any]:
        return await router.ledger.intents("settled")

    intents = asyncio.run(settled())
    ledger_total = sum(i.amount for i in intents)
    received = chain.balance(chain.operator)
    spent = AGENT_FUNDS - chain.balance(chain.agent)
    mined = all(chain.confirmed(i.transaction) for i in intents)
    ok = ledger_total == received == spent and mined and len({i.transaction for i in intents}) == len(intents)
    print(
        f"\nledger: {len(intents)} settlements, {ledger_total / 1e6:.6f} USDC; chain: operator received "
        f"{received / 1e6:.6f}, agent spent {spent / 1e6:.6f}; every transaction confirmed: {mined}"
    )
    print("ledger == chain ✓" if ok else "ledger != chain ✗")
    return ok
