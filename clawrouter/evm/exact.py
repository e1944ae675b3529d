"""The checks of the ``exact`` scheme on EVM that need no chain (x402 spec).

:func:`check_payment` parses an EIP-3009 payload and checks it against the
requirements: scheme, network, asset, ``payTo``, amount equality, the time
window (``validAfter ≤ now`` and ``validBefore ≥ now + 6 s``) and the signature,
recovered against the EIP-712 domain of the token. It raises
:class:`~clawrouter.payments.PaymentRejected` with the spec's error reason.
Balance, nonce and simulation need the chain and live in the facilitator.
"""

from __future__ import annotations

import time

import msgspec

from ..payments import PaymentPayload, PaymentRejected, PaymentRequirements
from .eip3009 import Authorization, domain_separator, recover, transfer_digest
from .networks import EvmNetwork

__all__ = ["VALID_BEFORE_MARGIN", "CheckedPayment", "check_payment"]

#: Seconds an authorization must stay valid beyond now: time to settle it.
VALID_BEFORE_MARGIN = 6


class CheckedPayment(msgspec.Struct, frozen=True):
    authorization: Authorization
    signature: bytes
    payer: str  # lowercase hex, as recovered

    @property
    def payment_id(self) -> str:
        return f"{self.payer}:{self.authorization.nonce.lower()}"


class _ExactPayload(msgspec.Struct):
    signature: str
    authorization: Authorization


_convert_payload = msgspec.convert

def _reject(message: str, code: str) -> PaymentRejected:
    return PaymentRejected(message, code=code)


def check_payment(
    payment: PaymentPayload,
    requirements: PaymentRequirements,
    network: EvmNetwork,
    now: float | None = None,
    *,
    window: bool = True,
) -> CheckedPayment:
    """Everything about ``payment`` that can be checked without the chain
    (``window=False``: leave the time window to the chain, as at settlement)."""
    scheme, name = payment.pair()
    if scheme != requirements.scheme or scheme != "exact":
        raise _reject(f"scheme {scheme!r} is not accepted here; expected 'exact'", "unsupported_scheme")
    if name != requirements.network:  # pair() already names v1 networks by their CAIP-2 id
        raise _reject(f"network {name!r} does not match {requirements.network!r}", "invalid_network")
    accepted = payment.accepted
    if accepted is not None and accepted.asset.lower() != requirements.asset.lower():
        raise _reject(f"asset {accepted.asset} is not {requirements.asset}", "invalid_payment_requirements")
    try:
        body = _convert_payload(payment.payload, _ExactPayload)
    except msgspec.ValidationError as exc:
        raise _reject(f"payload: {exc}", "invalid_payload") from None
    auth = body.authorization
    try:
        value = int(auth.value)
        valid_after = int(auth.validAfter)
        valid_before = int(auth.validBefore)
        signature = bytes.fromhex(body.signature.removeprefix("0x"))
        nonce = bytes.fromhex(auth.nonce.removeprefix("0x"))
    except ValueError:
        raise _reject("authorization fields must be decimal integers and 0x-hex bytes", "invalid_payload") from None
    if len(nonce) != 32:
        raise _reject("authorization.nonce must be 32 bytes", "invalid_payload")
    if auth.to.lower() != requirements.payTo.lower():
        raise _reject(
            f"authorization pays {auth.to}, not {requirements.payTo}", "invalid_exact_evm_payload_recipient_mismatch"
        )
    if value != int(requirements.amount):
        raise _reject(
            f"authorization value {value} does not equal the required amount {requirements.amount}",
            "invalid_exact_evm_payload_authorization_value_mismatch",
        )
    if now is None:
        now = time.time()
    if window and valid_after > now:
        raise _reject(
            f"authorization is not valid before {valid_after} (now {int(now)})",
            "invalid_exact_evm_payload_authorization_valid_after",
        )
    if window and valid_before < now + VALID_BEFORE_MARGIN:
        raise _reject(
            f"authorization expires at {valid_before}, less than {VALID_BEFORE_MARGIN} s from now ({int(now)})",
            "invalid_exact_evm_payload_authorization_valid_before",
        )
    domain = domain_separator(network.name, network.version, network.chain_id, requirements.asset)
    try:
        digest = transfer_digest(domain, auth.from_, auth.to, value, valid_after, valid_before, nonce)
        signer = recover(digest, signature)
    except ValueError as exc:
        raise _reject(f"signature: {exc}", "invalid_exact_evm_payload_signature") from None
    if signer != auth.from_.lower():
        raise _reject(
            f"signature was made by {signer}, not by authorization.from {auth.from_}",
            "invalid_exact_evm_payload_signature",
        )
    return CheckedPayment(auth, signature, signer)
