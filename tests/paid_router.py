"""A router that takes ``exact`` payments on an in-process chain (eth-tester), for tests.

Bind the fixtures in a test module as ``chain = paid_router.chain`` and
``wallets = paid_router.wallets``. ``make_router(chain, wallets)``: the settler key signs
settlements and receipts, the operator is ``payTo``; the models are the
simulated provider's (``fail_models`` fail with a 502).
"""

from __future__ import annotations

import pytest
from web3 import Web3

from clawrouter import hookimpl
from clawrouter.config import load_config
from clawrouter.evm.localchain import InProcessChain
from clawrouter.evm.networks import EvmNetwork
from clawrouter.evm.rail import local_rail
from clawrouter.keys import RouterKey
from clawrouter.router import Router

__all__ = ["FUNDS", "Rails", "chain", "make_router", "wallets"]

FUNDS = 1_000_000  # the agent's USDC (atomic) in ``wallets``


@pytest.fixture(scope="module")
def chain():
    """One in-process chain for the module that binds it (``chain = paid_router.chain``)."""
    return InProcessChain()


@pytest.fixture
def wallets(chain):
    """Fresh (settler, agent, operator) keys; the agent holds FUNDS."""
    settler, agent, operator = RouterKey.generate(), RouterKey.generate(), RouterKey.generate()
    chain.fund(settler.address, 0)
    chain.fund(agent.address, FUNDS)
    return settler, agent, operator


class Rails:
    __name__ = "test_rails"

    def __init__(self, rail):
        self.rail = rail

    @hookimpl
    def register_payment_rails(self, config):
        return [self.rail]


def make_router(chain, wallets, *, simulate=False, settlement="before", extra=None, fail_models=(), sections=None):
    """``extra``: more ``[payments]`` keys; ``sections``: more top-level config sections."""
    settler, _, operator = wallets
    network = EvmNetwork(chain.network, chain.chain_id, chain.token, "USDC", "2")
    rail = local_rail(Web3(chain.provider), network, operator.address, settler, simulate=simulate)
    data = {
        "ledger": {"backend": "memory"},
        "payments": {"settlement": settlement, **(extra or {})},
        "providers": {"simulated": {"kind": "simulated", "fail_models": list(fail_models)}},
        **(sections or {}),
    }
    env = {"CLAWROUTER_KEY": settler.private_key.hex()}
    return Router(load_config(data=data, env={}), plugins=[Rails(rail)], env=env, entry_points=False)
