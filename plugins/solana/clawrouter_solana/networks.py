"""Solana networks the rail knows: CAIP-2 ids, x402 v1 names and USDC mints.

Mainnet and devnet come from the x402 SVM spec. ``solana:localnet`` is this
project's local network (LiteSVM behind :mod:`clawrouter_solana.localnet`),
for tests and ``clawrouter demo --network solana``; its USDC is a mint at a
fixed address created by the local chain.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LOCAL_USDC_MINT", "NETWORKS", "SolanaNetwork", "network_for"]

#: the mint the local chain creates, at a fixed address (like the EVM test token)
LOCAL_USDC_MINT = "6Xid6v7E9GLg2cxXtAJVfYaytgDfJfEFP5LMNCJdz2Yy"  # sha256(b"clawrouter local USDC mint")


@dataclass(frozen=True)
class SolanaNetwork:
    network: str  # CAIP-2 id
    v1: str  # the x402 v1 network name
    usdc: str  # the USDC mint
    rpc_url: str = ""  # a public default ("" for the local network)
    decimals: int = 6
    label: str = ""

    @property
    def genesis(self) -> str:
        return self.network.split(":", 1)[1]


MAINNET = SolanaNetwork(
    "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
    "solana",
    "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
    "https://api.mainnet-beta.solana.com",
    label="Solana",
)
DEVNET = SolanaNetwork(
    "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
    "solana-devnet",
    "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
    "https://api.devnet.solana.com",
    label="Solana devnet",
)
LOCALNET = SolanaNetwork("solana:localnet", "solana-localnet", LOCAL_USDC_MINT, label="Solana local")

NETWORKS: dict[str, SolanaNetwork] = {n.network: n for n in (MAINNET, DEVNET, LOCALNET)}
_BY_V1 = {n.v1: n for n in NETWORKS.values()}


def network_for(name: str) -> SolanaNetwork | None:
    """The built-in network with CAIP-2 id or x402 v1 name ``name``."""
    return NETWORKS.get(name) or _BY_V1.get(name)
