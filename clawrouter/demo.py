"""``clawrouter demo``: the embedded default, paid end to end, offline.

Starts an in-process EVM chain (eth-tester/py-evm) with the project's test USDC
(:mod:`clawrouter.evm.localchain`), funds a demo agent wallet, and serves the
router on 127.0.0.1 with the simulated provider and the ``exact`` EVM rail. The
agent sends a few chat completions through :class:`clawrouter.client.Client`,
which pays each 402 challenge with an EIP-3009 authorization within its policy
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
from typing import Any

import msgspec

from .config import load_config
from .hookspecs import hookimpl
from .router import Router
from .server import BackgroundServer

__all__ = ["run_demo"]

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


def run_demo(config_path: str | Path | None = None) -> int:
    try:
        from web3 import Web3

        from .evm.localchain import InProcessChain
    except ImportError as exc:
        print(f"clawrouter demo needs the local chain: pip install 'clawrouter[demo]' ({exc})")
        return 2
    from .client import Client, Policy
    from .evm.networks import EvmNetwork
    from .evm.rail import local_rail
    from .keys import RouterKey

    started = time.perf_counter()
    chain = InProcessChain()
    router_key, agent, operator = RouterKey.generate(), RouterKey.generate(), RouterKey.generate()
    chain.fund(router_key.address, 0)  # gas for settlements
    chain.fund(agent.address, AGENT_FUNDS)
    network = EvmNetwork(chain.network, chain.chain_id, chain.token, "USDC", "2", label="local")
    rail = local_rail(Web3(chain.provider), network, operator.address, router_key)
    workdir = Path(tempfile.mkdtemp(prefix="clawrouter-demo-"))
    config = load_config(config_path) if config_path is not None else _demo_config(workdir / "ledger.sqlite3")
    router = Router(
        config, plugins=[_DemoRails(rail)], env={"CLAWROUTER_KEY": router_key.private_key.hex()}, entry_points=False
    )
    # the agent's policy: the local chain's token, at most $0.05 a call and $1 for the session
    policy = Policy(networks=[chain.network], assets={chain.token: 6}, max_per_call="0.05", max_per_session="1.00")
    print(
        f"clawrouter demo: {len(router.catalogue)} simulated models; in-process chain {chain.network} "
        f"({time.perf_counter() - started:.1f} s to start)\n"
        f"  agent {agent.address} holds {AGENT_FUNDS / 1e6:.2f} USDC, pays at most $0.05 a call and $1.00 in all;\n"
        f"  the router pays to {operator.address}\n"
    )
    rows: list[tuple[str, ...]] = []
    failures = 0
    with (
        BackgroundServer(router.app) as server,
        Client(agent, policy, router=router_key.address, base_url=server.url + "/v1", timeout=60) as client,
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
    ok = _reconcile(router, chain, agent.address, operator.address)
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


def _reconcile(router: Router, chain: Any, agent: str, operator: str) -> bool:
    import asyncio

    async def settled() -> list[Any]:
        return await router.ledger.intents("settled")

    intents = asyncio.run(settled())
    ledger_total = sum(i.amount for i in intents)
    received = chain.usdc_balance(operator)
    spent = AGENT_FUNDS - chain.usdc_balance(agent)
    mined = all(int(chain.w3.eth.get_transaction_receipt(i.transaction)["status"]) == 1 for i in intents)
    ok = ledger_total == received == spent and mined and len({i.transaction for i in intents}) == len(intents)
    print(
        f"\nledger: {len(intents)} settlements, {ledger_total / 1e6:.6f} USDC; chain: operator received "
        f"{received / 1e6:.6f}, agent spent {spent / 1e6:.6f}; every transaction mined: {mined}"
    )
    print("ledger == chain ✓" if ok else "ledger != chain ✗")
    return ok
