"""Paying an ``exact`` EVM requirement: sign EIP-3009 and build the x402 payload.

The agent side's smallest piece, used by ``clawrouter demo`` and the tests
(the budgeted client builds on it). The validity window follows the x402 SDKs:
from a little in the past (clock skew) to ``maxTimeoutSeconds`` ahead.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..payments import PaymentPayload, PaymentRequirements, ResourceInfo, encode_header
from .eip3009 import sign_authorization

__all__ = ["pay_exact", "payment_header"]


def pay_exact(
    requirements: PaymentRequirements | dict[str, Any],
    private_key: bytes,
    *,
    chain_id: int | None = None,
    resource: str | None = None,
    now: float | None = None,
    skew: int = 600,
    nonce: bytes | None = None,
) -> PaymentPayload:
    """A v2 payment answering ``requirements`` (an ``accepts`` entry), signed with ``private_key``."""
    if isinstance(requirements, dict):
        requirements = msgspec.convert(requirements, PaymentRequirements)
    network = requirements.network
    if chain_id is None:
        if not network.startswith("eip155:"):
            raise ValueError(f"{network!r} is not an EVM (eip155) network")
        chain_id = int(network.split(":", 1)[1])
    extra = requirements.extra
    if not isinstance(extra.get("name"), str) or not isinstance(extra.get("version"), str):
        raise ValueError("requirements.extra lacks the token's EIP-712 domain (name, version)")
    start = int(time.time() if now is None else now)
    authorization, signature = sign_authorization(
        private_key,
        name=extra["name"],
        version=extra["version"],
        chain_id=chain_id,
        asset=requirements.asset,
        to=requirements.payTo,
        value=int(requirements.amount),
        valid_after=start - skew,
        valid_before=start + requirements.maxTimeoutSeconds,
        nonce=nonce,
    )
    return PaymentPayload(
        2,
        {"signature": signature, "authorization": msgspec.to_builtins(authorization)},
        accepted=requirements,
        resource=ResourceInfo(resource) if resource else None,
    )


def payment_header(payload: PaymentPayload) -> str:
    """The ``PAYMENT-SIGNATURE`` header value for ``payload``."""
    return encode_header(payload).decode()
