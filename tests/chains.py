"""Local EVM chains with the project's TestUSDC, as pytest fixtures, and signing helpers.

Bind the fixtures in a test module (``import chains`` then
``inprocess_chain = chains.inprocess_chain``; a ``from chains import`` of a
fixture trips ruff's F811 on every test that takes it):

* ``inprocess_chain`` — a fresh eth-tester chain per test (~60 ms);
* ``anvil_chain`` — one anvil process per test module, at chain 84532 with the
  token at the Base Sepolia USDC address; stopped after the module.

When a tool is missing (web3/eth-tester, or anvil from ``npm ci``), tests using
these fixtures are skipped with the reason, except under ``CI=true``, where the
missing tool fails them: CI must run everything.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

__all__ = [
    "TRANSFER_TYPES",
    "anvil_chain",
    "authorization_args",
    "authorization_typed_data",
    "inprocess_chain",
    "missing",
    "send_as",
    "sign_authorization",
]

TRANSFER_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]
TRANSFER_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "TransferWithAuthorization": TRANSFER_FIELDS,
    "ReceiveWithAuthorization": TRANSFER_FIELDS,
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> NoReturn:
    """Skip the test for a missing tool; under CI=true fail it instead."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: every test must run)", pytrace=False)
    pytest.skip(reason)


def _require_evm_packages() -> None:
    for module in ("web3", "eth_tester", "eth"):
        if importlib.util.find_spec(module) is None:
            missing(f"{module} is not installed (pip install web3 'eth-tester[py-evm]')")


@pytest.fixture
def inprocess_chain() -> Any:
    """A fresh in-process chain with TestUSDC deployed (clawrouter.evm.localchain.InProcessChain)."""
    _require_evm_packages()
    from clawrouter.evm.localchain import InProcessChain

    return InProcessChain()


@pytest.fixture(scope="module")
def anvil_chain() -> Iterator[Any]:
    """One anvil (chain 84532, TestUSDC at Base Sepolia's USDC address) for the test module."""
    _require_evm_packages()
    from clawrouter.evm.localchain import AnvilChain, find_anvil

    anvil = find_anvil()
    if anvil is None:
        missing("anvil not found: run `npm ci` at the repository root, or set CLAWROUTER_ANVIL")
    with AnvilChain(anvil) as chain:
        yield chain


@pytest.fixture
def anvil_wallets(anvil_chain: Any) -> tuple[Any, Any, Any]:
    """Fresh (router key, agent, operator) on ``anvil_chain``; the agent holds 2 USDC."""
    from clawrouter.keys import RouterKey

    router_key, agent, operator = RouterKey.generate(), RouterKey.generate(), RouterKey.generate()
    anvil_chain.fund(router_key.address, 0)
    anvil_chain.fund(agent.address, 2_000_000)
    return router_key, agent, operator


def authorization_typed_data(
    chain: Any,
    payer: str,
    to: str,
    value: int,
    *,
    valid_after: int | None = None,
    valid_before: int | None = None,
    nonce: bytes | None = None,
    primary_type: str = "TransferWithAuthorization",
    domain_name: str = "USDC",
    domain_version: str = "2",
) -> dict[str, Any]:
    """The full EIP-712 message of an EIP-3009 authorization on ``chain``'s token.

    Defaults follow the x402 SDK client: valid from 10 minutes ago, for 5 minutes.
    """
    now = int(time.time())
    return {
        "types": {"EIP712Domain": TRANSFER_TYPES["EIP712Domain"], primary_type: TRANSFER_TYPES[primary_type]},
        "primaryType": primary_type,
        "domain": {
            "name": domain_name,
            "version": domain_version,
            "chainId": chain.chain_id,
            "verifyingContract": chain.token,
        },
        "message": {
            "from": payer,
            "to": to,
            "value": value,
            "validAfter": now - 600 if valid_after is None else valid_after,
            "validBefore": now + 300 if valid_before is None else valid_before,
            "nonce": os.urandom(32) if nonce is None else nonce,
        },
    }


def sign_authorization(private_key: Any, typed_data: dict[str, Any]) -> Any:
    """``Account.sign_typed_data`` over the full message (a ``SignedMessage``: v, r, s, signature)."""
    from eth_account import Account

    return Account.sign_typed_data(private_key, full_message=typed_data)


def authorization_args(typed_data: dict[str, Any]) -> list[Any]:
    """from, to, value, validAfter, validBefore, nonce: the leading arguments of the token calls."""
    m = typed_data["message"]
    return [m["from"], m["to"], m["value"], m["validAfter"], m["validBefore"], m["nonce"]]


def send_as(chain: Any, account: Any, call: Any, *, gas: int = 300_000) -> Any:
    """Sign ``call`` (a bound contract function) with ``account``, send it raw, return the receipt.

    ``gas`` is fixed so a reverting call is still mined (status 0) rather than
    rejected by gas estimation.
    """
    w3 = chain.w3
    tx = call.build_transaction(
        {"from": account.address, "gas": gas, "nonce": w3.eth.get_transaction_count(account.address, "pending")}
    )
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.02)
