"""Default plugin: the ``exact`` EVM rail for each network in ``[payments] networks``.

Nothing is imported from :mod:`clawrouter.evm` (and so from web3) unless a
network is configured. Each rail uses the embedded facilitator (the router's
key, from ``[payments] key_env``, pays gas and settles over the network's
``rpc_url``) or, with ``[payments] facilitator = "https://…"``, a remote x402
facilitator.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from .config import Config, ConfigError
from .hookspecs import hookimpl
from .payments import PaymentRail

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


@hookimpl(trylast=True)
def register_payment_rails(config: Config) -> Iterable[PaymentRail]:
    payments = config.payments
    if not payments.networks:
        return []
    if not _ADDRESS.fullmatch(payments.pay_to):
        raise ConfigError("config key 'payments.pay_to': expected a 0x-prefixed 20-byte EVM address")
    from .evm.networks import EvmNetwork, network_for
    from .evm.rail import ExactEvmRail
    from .facilitator import Facilitator
    from .keys import RouterKey

    rails: list[PaymentRail] = []
    for name in payments.networks:
        settings = payments.evm.get(name)
        known = network_for(name)
        if known is None:
            if settings is None or not settings.asset or not settings.name or not settings.version:
                raise ConfigError(
                    f"config key 'payments.evm.\"{name}\"': {name} is not a built-in network; "
                    "set asset, name and version (the token's EIP-712 domain)"
                )
            known = EvmNetwork(name, int(name.split(":")[1]), settings.asset, settings.name, settings.version)
        elif settings is not None and settings.asset:
            known = EvmNetwork(
                name, known.chain_id, settings.asset, settings.name or known.name, settings.version or known.version
            )
        facilitator: Facilitator
        if payments.facilitator == "embedded":
            if settings is None or not settings.rpc_url:
                raise ConfigError(f"config key 'payments.evm.\"{name}\".rpc_url': required by the embedded facilitator")
            key = RouterKey.from_env(payments.key_env)
            if key is None:
                raise ConfigError(
                    f"config key 'payments.key_env': ${payments.key_env} must hold the router's private key "
                    "(it pays gas for settlements and signs receipts)"
                )
            from .evm.chain import EvmChain
            from .evm.facilitator import EmbeddedEvmFacilitator

            chain = EvmChain.from_url(settings.rpc_url, known.asset, key=key)
            facilitator = EmbeddedEvmFacilitator(
                known, chain, simulate=payments.simulate, balance_ttl=payments.balance_cache_seconds
            )
        else:
            from .facilitator import RemoteFacilitator

            headers = {}
            if payments.facilitator_api_key_env:
                token = os.environ.get(payments.facilitator_api_key_env, "")
                if token:
                    from .telemetry.logs import register_secret

                    register_secret(token)
                    headers["Authorization"] = f"Bearer {token}"
            facilitator = RemoteFacilitator(payments.facilitator, headers=headers)
        rails.append(
            ExactEvmRail(known, payments.pay_to, facilitator, max_timeout_seconds=payments.max_timeout_seconds)
        )
    return rails
