"""EVM networks clawrouter accepts payments on, and their USDC.

Keys are CAIP-2 ids (``eip155:<chain id>``). The EIP-712 domain ``name`` and
``version`` are the token's own (they differ between Base and Base Sepolia
USDC), and travel to clients in ``PaymentRequirements.extra``.
"""

from __future__ import annotations

from msgspec import Struct

__all__ = ["BASE", "BASE_SEPOLIA", "NETWORKS", "EvmNetwork", "network_for"]


class EvmNetwork(Struct, frozen=True):
    network: str  # CAIP-2, e.g. "eip155:8453"
    chain_id: int
    asset: str  # token contract address, checksummed
    name: str  # EIP-712 domain name of the token
    version: str  # EIP-712 domain version of the token
    decimals: int = 6
    label: str = ""
    explorer: str = ""  # transaction URL prefix, "" if none

    def tx_url(self, tx: str) -> str:
        return f"{self.explorer}{tx}" if self.explorer and tx else ""


BASE = EvmNetwork(
    "eip155:8453",
    8453,
    "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    "USD Coin",
    "2",
    label="Base",
    explorer="https://basescan.org/tx/",
)
BASE_SEPOLIA = EvmNetwork(
    "eip155:84532",
    84532,
    "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
    "USDC",
    "2",
    label="Base Sepolia",
    explorer="https://sepolia.basescan.org/tx/",
)

NETWORKS: dict[str, EvmNetwork] = {n.network: n for n in (BASE, BASE_SEPOLIA)}


def network_for(network: str) -> EvmNetwork | None:
    """The built-in entry for a CAIP-2 id, or ``None``."""
    return NETWORKS.get(network)
