"""The hooks this distribution registers (entry point ``solana`` in the group ``clawrouter``).

Router side, ``register_payment_rails``: one ``exact`` rail per network in
``[plugins.solana] networks``::

    [plugins.solana]
    pay_to = "<the operator's Solana address>"       # owner of the receiving USDC account
    networks = ["solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"]
    key_env = "CLAWROUTER_SOLANA_KEY"                # the fee payer's key (embedded facilitator)

    [plugins.solana.rpc_urls]
    "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp" = "https://api.mainnet-beta.solana.com"

Client side, ``register_payment_signers``: a :class:`~clawrouter_solana.client.SolanaExactSigner`
when an agent wallet is found (``$CLAWROUTER_SOLANA_WALLET_KEY`` or the wallet
file), so :class:`clawrouter.client.Client` pays Solana requirements too.

``register_demo_networks``: ``clawrouter demo --network solana``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import msgspec

from clawrouter.config import Config, ConfigError
from clawrouter.hookspecs import hookimpl
from clawrouter.telemetry.logs import register_secret

from . import constants as c

__all__ = ["SolanaSettings", "register_demo_networks", "register_payment_rails", "register_payment_signers", "settings"]


class SolanaSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    #: the owner (a Solana address) whose associated USDC account receives payments
    pay_to: str = ""
    #: CAIP-2 ids: solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp (mainnet), solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1
    #: (devnet), solana:localnet, or another solana:<genesis> with its asset set in ``assets``
    networks: list[str] = []
    #: the RPC endpoint of each network (mainnet and devnet default to the public ones)
    rpc_urls: dict[str, str] = {}
    #: the mint accepted on a network, when not the network's USDC
    assets: dict[str, str] = {}
    #: the variable holding the fee payer's key (base58, or the JSON array of a Solana CLI key file)
    key_env: str = "CLAWROUTER_SOLANA_KEY"
    #: "embedded" (the router's key pays fees and settles) or the URL of an x402 facilitator
    facilitator: str = "embedded"
    facilitator_api_key_env: str = ""
    #: with a remote facilitator: the fee payer it names in /supported (extra.feePayer)
    fee_payer: str = ""
    #: simulate each payment at verification (one RPC round trip per paid request)
    simulate: bool = True
    balance_cache_seconds: float = 30.0
    #: caps on what the fee payer pays per payment (micro-lamports per unit; units; lamports)
    max_compute_unit_price: int = c.MAX_COMPUTE_UNIT_PRICE
    max_compute_unit_limit: int = c.MAX_COMPUTE_UNIT_LIMIT
    max_priority_fee_lamports: int = c.MAX_PRIORITY_FEE_LAMPORTS
    #: slots (~0.4 s) a payment's blockhash must still live when verified: the call and its settlement fit in them
    min_blockhash_slots: int = c.MIN_BLOCKHASH_SLOTS
    #: "refuse" a blockhash the router did not hand out or read (its age is unknown), or "accept" it
    unknown_blockhash: str = "refuse"
    max_timeout_seconds: int = 60
    confirm_timeout_seconds: float = 60.0


def settings(config: Config) -> SolanaSettings:
    try:
        return msgspec.convert(config.plugins.get("solana", {}), SolanaSettings)
    except msgspec.ValidationError as exc:
        path = str(exc).rsplit("at `$", 1)
        where = f"plugins.solana{path[1].rstrip('`')}" if len(path) == 2 else "plugins.solana"
        raise ConfigError(f"config key '{where}': {path[0].removesuffix(' - ').strip()}") from None


def _address(value: str, key: str) -> str:
    from solders.pubkey import Pubkey

    try:
        return str(Pubkey.from_string(value))
    except ValueError:
        raise ConfigError(f"config key '{key}': {value!r} is not a Solana address (base58, 32 bytes)") from None


@hookimpl
def register_payment_rails(config: Config) -> Iterable[Any]:
    chosen = settings(config)
    if not chosen.networks:
        return []
    pay_to = _address(chosen.pay_to, "plugins.solana.pay_to") if chosen.pay_to else ""
    if not pay_to:
        raise ConfigError("config key 'plugins.solana.pay_to': required (the Solana address that receives payments)")
    from .facilitator import EmbeddedSvmFacilitator
    from .networks import SolanaNetwork, network_for
    from .rail import ExactSvmRail
    from .rpc import SolanaRpc
    from .wallet import load_keypair

    rails = []
    for name in chosen.networks:
        network = network_for(name)
        asset = chosen.assets.get(name, "")
        if network is None:
            if not name.startswith("solana:") or not asset:
                raise ConfigError(
                    f"config key 'plugins.solana.networks': {name!r} is not a built-in Solana network; use a "
                    "solana:<genesis> id and set its mint in plugins.solana.assets"
                )
            network = SolanaNetwork(name, name, asset)
        if asset:
            _address(asset, f"plugins.solana.assets.{name}")
        if chosen.facilitator == "embedded":
            url = chosen.rpc_urls.get(name) or network.rpc_url
            if not url:
                raise ConfigError(f"config key 'plugins.solana.rpc_urls.\"{name}\"': required for {name}")
            value = os.environ.get(chosen.key_env, "").strip()
            if not value:
                raise ConfigError(
                    f"config key 'plugins.solana.key_env': ${chosen.key_env} must hold the fee payer's Solana key "
                    "(it pays transaction fees and co-signs settlements)"
                )
            try:
                key = load_keypair(value)
            except ValueError as exc:
                raise ConfigError(f"config key 'plugins.solana.key_env': ${chosen.key_env}: {exc}") from None
            register_secret(value)  # the logs hide it should it ever reach them
            register_secret(str(key))
            if chosen.unknown_blockhash not in ("refuse", "accept"):
                raise ConfigError("config key 'plugins.solana.unknown_blockhash': expected 'refuse' or 'accept'")
            facilitator: Any = EmbeddedSvmFacilitator(
                network,
                SolanaRpc(url),
                [key],
                simulate=chosen.simulate,
                balance_ttl=chosen.balance_cache_seconds,
                max_unit_price=chosen.max_compute_unit_price,
                max_unit_limit=chosen.max_compute_unit_limit,
                max_priority_fee=chosen.max_priority_fee_lamports,
                min_blockhash_slots=chosen.min_blockhash_slots,
                unknown_blockhash=chosen.unknown_blockhash,
                asset=asset or None,
                confirm_timeout=chosen.confirm_timeout_seconds,
            )
            fee_payer = None
        else:
            from clawrouter.facilitator import RemoteFacilitator

            if not chosen.fee_payer:
                raise ConfigError(
                    "config key 'plugins.solana.fee_payer': required with a remote facilitator (the address it "
                    "names as extra.feePayer in /supported)"
                )
            fee_payer = _address(chosen.fee_payer, "plugins.solana.fee_payer")
            headers = {}
            token = os.environ.get(chosen.facilitator_api_key_env, "") if chosen.facilitator_api_key_env else ""
            if token:
                register_secret(token)
                headers["Authorization"] = f"Bearer {token}"
            facilitator = RemoteFacilitator(chosen.facilitator, headers=headers)
        rails.append(
            ExactSvmRail(
                network,
                pay_to,
                facilitator,
                fee_payer=fee_payer,
                asset=asset or None,
                max_timeout_seconds=chosen.max_timeout_seconds,
                max_unit_price=chosen.max_compute_unit_price,
                max_unit_limit=chosen.max_compute_unit_limit,
                max_priority_fee=chosen.max_priority_fee_lamports,
            )
        )
    return rails


@hookimpl
def register_payment_signers() -> Iterable[Any]:
    from .client import SolanaExactSigner
    from .wallet import SolanaWallet

    wallet = SolanaWallet.resolve()
    if wallet is None:
        return []
    return [SolanaExactSigner(wallet.keypair)]


@hookimpl
def register_demo_networks() -> Iterable[Any]:
    from .demo import SolanaDemo

    return [SolanaDemo()]
