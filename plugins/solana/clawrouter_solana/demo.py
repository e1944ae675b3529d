"""``clawrouter demo --network solana``: the paid demo on a local Solana chain.

LiteSVM in process, behind the JSON-RPC facade on 127.0.0.1 (so the rail and
the agent's signer use their real RPC clients), with USDC at
:data:`~clawrouter_solana.networks.LOCAL_USDC_MINT`. The router's Solana key
pays transaction fees; the agent holds USDC and no SOL at all.
"""

from __future__ import annotations

from typing import Any

from solders.keypair import Keypair

from clawrouter.keys import RouterKey

from .networks import LOCALNET

__all__ = ["SolanaDemo"]

FEE_PAYER_LAMPORTS = 10_000_000_000  # 10 SOL for fees


class _Chain:
    def __init__(self, funds: int) -> None:
        from .localnet import LocalSolana, RpcFacade

        self.local = LocalSolana()
        self.facade = RpcFacade(self.local)
        self.facade.start()
        self.router_key = RouterKey.generate()  # signs receipts
        self._fee_payer, self._agent, operator = Keypair(), Keypair(), Keypair()
        self.local.airdrop(str(self._fee_payer.pubkey()), FEE_PAYER_LAMPORTS)
        self.agent, self.operator = str(self._agent.pubkey()), str(operator.pubkey())
        self.local.fund(self.agent, funds, lamports=0)
        self.local.create_ata(self.operator)
        self.network, self.asset, self.decimals = LOCALNET.network, LOCALNET.usdc, LOCALNET.decimals
        self.description = f"LiteSVM Solana chain {self.network}, JSON-RPC at {self.facade.url}"

    def rail(self) -> Any:
        from .facilitator import EmbeddedSvmFacilitator
        from .rail import ExactSvmRail
        from .rpc import SolanaRpc

        facilitator = EmbeddedSvmFacilitator(LOCALNET, SolanaRpc(self.facade.url), [self._fee_payer])
        return ExactSvmRail(LOCALNET, self.operator, facilitator)

    def signer(self) -> Any:
        from .client import SolanaExactSigner

        return SolanaExactSigner(self._agent, rpc_urls={self.network: self.facade.url})

    def balance(self, address: str) -> int:
        return self.local.token_balance(address)

    def confirmed(self, transaction: str) -> bool:
        status = self.local.status(transaction)
        return status is not None and status.get("err") is None

    def close(self) -> None:
        self.facade.stop()


class SolanaDemo:
    name = "solana"
    description = "LiteSVM (in solders) behind a loopback JSON-RPC facade, with local USDC"

    def start(self, funds: int) -> Any:
        return _Chain(funds)
