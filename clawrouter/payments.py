"""Payment rails and the x402 message envelope.

A *rail* handles one ``(scheme, network)`` pair, e.g. ``("exact", "eip155:8453")``.
The verify stage asks every rail for its :class:`PaymentRequirements` for the
request's quote (one ``accepts`` entry each), and hands a client's payment to the
rail registered for the pair the client chose. The settle stage calls
:meth:`PaymentRail.settle` once the response completed, with ``charge`` never
above the authorized amount.

Headers (x402 v2): the challenge travels base64-encoded in ``PAYMENT-REQUIRED``,
the payment in ``PAYMENT-SIGNATURE`` and the result in ``PAYMENT-RESPONSE``; v1
clients send ``X-PAYMENT`` and read ``X-PAYMENT-RESPONSE``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Protocol, runtime_checkable

import msgspec
from msgspec import Struct

from .errors import BadRequest, ClawError, ServiceUnavailable

__all__ = [
    "PaymentPayload",
    "PaymentRail",
    "PaymentRejected",
    "PaymentRequired",
    "PaymentRequirements",
    "PaymentRequirementsV1",
    "ResourceInfo",
    "SettlementResponse",
    "VerifiedPayment",
    "as_v2",
    "chain_unavailable",
    "decode_payment_header",
    "encode_header",
    "network_caip2",
    "network_v1",
    "requirements_v1",
]


class PaymentRequirements(Struct, omit_defaults=True):
    scheme: str
    network: str
    amount: str
    asset: str
    payTo: str
    maxTimeoutSeconds: int  # required by the spec: never omitted
    extra: dict[str, Any] = {}


class PaymentRequirementsV1(Struct, omit_defaults=True):
    """x402 v1 requirements, as v1 clients read them from the 402 body."""

    scheme: str
    network: str
    maxAmountRequired: str
    resource: str
    payTo: str
    maxTimeoutSeconds: int
    asset: str
    description: str = ""
    mimeType: str = "application/json"
    extra: dict[str, Any] = {}


_V1_NETWORKS = {
    "eip155:8453": "base",
    "eip155:84532": "base-sepolia",
    "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp": "solana",
    "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1": "solana-devnet",
    "solana:4uhcVJyU9pJkvQyS88uRDiswHXSCkY3z": "solana-testnet",
}
_V1_IDS = {v: k for k, v in _V1_NETWORKS.items()}


def network_v1(network: str) -> str:
    """The x402 v1 name of a CAIP-2 network (``eip155:8453`` -> ``base``, Solana's genesis
    ids -> ``solana``, ``solana-devnet``); unknown ids unchanged."""
    return _V1_NETWORKS.get(network, network)


def network_caip2(network: str) -> str:
    """The CAIP-2 id of an x402 v1 network name (``base`` -> ``eip155:8453``); unknown names unchanged."""
    return _V1_IDS.get(network, network)


def requirements_v1(requirements: PaymentRequirements, resource: str) -> PaymentRequirementsV1:
    """The v1 form of ``requirements`` (v1 names networks ``base``, ``solana-devnet``, ...)."""
    return PaymentRequirementsV1(
        requirements.scheme,
        network_v1(requirements.network),
        requirements.amount,
        resource,
        requirements.payTo,
        requirements.maxTimeoutSeconds,
        requirements.asset,
        extra=requirements.extra,
    )


class ResourceInfo(Struct, omit_defaults=True):
    url: str
    description: str | None = None
    mimeType: str | None = None


class PaymentRequired(Struct, omit_defaults=True):
    x402Version: int
    accepts: list[PaymentRequirements]
    resource: ResourceInfo | None = None
    error: str | None = None
    extensions: dict[str, Any] | None = None


class PaymentPayload(Struct, omit_defaults=True):
    """A client's payment. v2 carries ``accepted`` (the requirements it answers);
    v1 carries ``scheme`` and ``network`` at the top level."""

    x402Version: int
    payload: dict[str, Any]
    accepted: PaymentRequirements | None = None
    scheme: str | None = None
    network: str | None = None
    resource: ResourceInfo | None = None
    extensions: dict[str, Any] | None = None

    def pair(self) -> tuple[str, str]:
        if self.accepted is not None:
            return self.accepted.scheme, self.accepted.network
        if self.scheme and self.network:
            return self.scheme, network_caip2(self.network)
        raise BadRequest("payment names no scheme/network", code="invalid_payload")


class SettlementResponse(Struct, omit_defaults=True):
    """The settlement result (``PAYMENT-RESPONSE``). ``transaction`` is always
    present (empty when settlement failed), as the spec requires."""

    success: bool
    network: str
    transaction: str
    payer: str | None = None
    errorReason: str | None = None
    amount: str | None = None
    errorMessage: str | None = None
    extensions: dict[str, Any] | None = None


class VerifiedPayment(Struct):
    """What a rail returns from ``verify``: enough to settle later."""

    scheme: str
    network: str
    payer: str
    amount: int
    payment_id: str
    requirements: PaymentRequirements
    payload: PaymentPayload
    #: unix time after which the payment can no longer be settled (0: unknown);
    #: once settled, its "settled" marker in the state backend is kept this long
    expires: int = 0


class PaymentRejected(ClawError):
    """The payment is invalid; ``code`` is an x402 error reason (e.g. ``invalid_signature``)."""

    status = 402
    type = "payment_rejected"


@runtime_checkable
class PaymentRail(Protocol):
    """A payment rail, returned by the ``register_payment_rails`` hook."""

    scheme: str
    network: str

    def requirements(self, amount: int, resource: str) -> PaymentRequirements:
        """The ``accepts`` entry for a quote of ``amount`` atomic units."""
        ...

    async def verify(self, payment: PaymentPayload, requirements: PaymentRequirements) -> VerifiedPayment:
        """Check the payment answers ``requirements``; raise :class:`PaymentRejected` if not."""
        ...

    async def settle(self, payment: VerifiedPayment, charge: int) -> SettlementResponse:
        """Collect ``charge`` (≤ ``payment.amount``) atomic units. Answer ``success=False``
        with an x402 error reason for a payment that cannot be settled; *raise* for a
        transient failure (node or facilitator unreachable): the settler retries, and
        a retried settle must be idempotent.

        A rail may also define ``release(payment)`` (called when a verified request
        fails unsettled), ``async aclose()``, ``replay_reason``: the x402 error
        reason for a payment that was already settled (default
        ``invalid_exact_evm_nonce_already_used``), and ``async refresh()``, awaited
        before a challenge asks for its requirements (to read live chain data,
        e.g. a recent Solana blockhash, that ``requirements`` then offers)."""
        ...


_payload_decoder = msgspec.json.Decoder(PaymentPayload)
_encoder = msgspec.json.Encoder()


def decode_payment_header(value: bytes) -> PaymentPayload:
    """Decode a ``PAYMENT-SIGNATURE`` / ``X-PAYMENT`` header; malformed input is a 400."""
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("payment header is not valid base64", code="invalid_payload") from None
    try:
        return _payload_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"payment header: {exc}", code="invalid_payload") from None
    except msgspec.DecodeError:
        raise BadRequest("payment header is not valid JSON", code="invalid_payload") from None


def encode_header(message: Struct) -> bytes:
    return base64.b64encode(_encoder.encode(message))


def as_v2(payment: PaymentPayload, requirements: PaymentRequirements) -> PaymentPayload:
    """A v1 payment restated as v2 (the same signed payload) for a v2 facilitator."""
    if payment.accepted is not None:
        return payment
    return PaymentPayload(2, payment.payload, accepted=requirements, resource=payment.resource)


def chain_unavailable(network: str, detail: object) -> ServiceUnavailable:
    """The 503 of a rail that cannot reach its chain to verify: it fails closed (nothing
    served unverified, nothing charged) and asks the client to retry."""
    return ServiceUnavailable(
        f"cannot reach {network} to check the payment ({detail}); retry later",
        code="chain_unavailable",
        headers=[(b"retry-after", b"5")],
    )
