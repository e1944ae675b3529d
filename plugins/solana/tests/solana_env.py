"""Test helpers: a local Solana chain (LiteSVM), its JSON-RPC facade, funded keys and a paid router.

The fixtures are registered by ``conftest.py``; tests import the helpers from here.

``rpc`` is parametrised by the tests that take it: ``"http"`` goes through the
facade on 127.0.0.1 (the RPC client's real path: sockets, JSON-RPC over
HTTP/1.1), ``"inproc"`` hands the same JSON-RPC bodies to the facade in
process (LiteSVM with no socket in between).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from clawrouter_solana.facilitator import EmbeddedSvmFacilitator
from clawrouter_solana.localnet import InProcessTransport, LocalSolana, RpcFacade
from clawrouter_solana.networks import LOCALNET
from clawrouter_solana.rail import ExactSvmRail
from clawrouter_solana.rpc import SolanaRpc
from solders.keypair import Keypair

from clawrouter import hookimpl
from clawrouter.config import load_config
from clawrouter.keys import RouterKey
from clawrouter.router import Router

FUNDS = 1_000_000  # the agent's USDC (atomic)


@pytest.fixture
def local() -> LocalSolana:
    return LocalSolana()


@pytest.fixture
def facade(local: LocalSolana) -> Iterator[RpcFacade]:
    with RpcFacade(local) as served:
        yield served


@dataclass
class Keys:
    fee_payer: Keypair
    agent: Keypair
    operator: Keypair
    router: RouterKey  # signs receipts

    @property
    def agent_address(self) -> str:
        return str(self.agent.pubkey())

    @property
    def operator_address(self) -> str:
        return str(self.operator.pubkey())


@pytest.fixture
def keys(local: LocalSolana) -> Keys:
    """Fresh keys: the fee payer holds SOL, the agent FUNDS of USDC (and no SOL), the operator an empty ATA."""
    made = Keys(Keypair(), Keypair(), Keypair(), RouterKey.generate())
    local.airdrop(str(made.fee_payer.pubkey()), 10_000_000_000)
    local.fund(made.agent_address, FUNDS, lamports=0)
    local.create_ata(made.operator_address)
    return made


class Rails:
    __name__ = "solana_test_rails"

    def __init__(self, *rails: Any) -> None:
        self.rails = rails

    @hookimpl
    def register_payment_rails(self, config: Any) -> list[Any]:
        return list(self.rails)


def solana_rpc(facade: RpcFacade, rpc: str) -> SolanaRpc:
    return SolanaRpc(facade.url, transport=InProcessTransport(facade.handle) if rpc == "inproc" else None)


def make_rail(facade: RpcFacade, keys: Keys, rpc: str = "http", **options: Any) -> ExactSvmRail:
    facilitator = EmbeddedSvmFacilitator(LOCALNET, solana_rpc(facade, rpc), [keys.fee_payer], **options)
    return ExactSvmRail(LOCALNET, keys.operator_address, facilitator)


def make_router(*rails: Any, keys: Keys, fail_models: tuple[str, ...] = (), settlement: str = "before") -> Router:
    data = {
        "ledger": {"backend": "memory"},
        "payments": {"settlement": settlement},
        "providers": {"simulated": {"kind": "simulated", "fail_models": list(fail_models)}},
    }
    env = {"CLAWROUTER_KEY": keys.router.private_key.hex()}
    return Router(load_config(data=data, env={}), plugins=[Rails(*rails)], env=env, entry_points=False)
