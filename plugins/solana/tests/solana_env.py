"""Test helpers: a local Solana chain (LiteSVM), its JSON-RPC facade, funded keys and a paid router.

The fixtures are registered by ``conftest.py``; tests import the helpers from here.

``rpc`` is parametrised by the tests that take it: ``"http"`` goes through the
facade on 127.0.0.1 (the RPC client's real path: sockets, JSON-RPC over
HTTP/1.1), ``"inproc"`` hands the same JSON-RPC bodies to the facade in
process (LiteSVM with no socket in between).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from clawrouter_solana.facilitator import EmbeddedSvmFacilitator
from clawrouter_solana.localnet import LocalSolana, RpcFacade
from clawrouter_solana.networks import LOCALNET
from clawrouter_solana.rail import ExactSvmRail
from clawrouter_solana.rpc import SolanaRpc
from solders.keypair import Keypair

from clawrouter import hookimpl
from clawrouter.config import load_config
from clawrouter.keys import RouterKey
from clawrouter.router import Router
from clawrouter.upstream import Timeouts

FUNDS = 1_000_000  # the agent's USDC (atomic)


class _Answer:
    def __init__(self, body: bytes) -> None:
        self.status = 200
        self.headers: Mapping[str, str] = {"content-type": "application/json"}
        self._body = body

    async def read(self) -> bytes:
        return self._body

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        yield self._body

    async def aclose(self) -> None:
        pass


class InProcessRpc:
    """An upstream transport that hands JSON-RPC bodies to the facade without a socket."""

    def __init__(self, facade: RpcFacade) -> None:
        self.facade = facade

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def prewarm(self, url: str) -> None:
        pass

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, timeouts: Timeouts) -> Any:
        return _Answer(self.facade.handle(body))


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
    return SolanaRpc(facade.url, transport=InProcessRpc(facade) if rpc == "inproc" else None)


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
