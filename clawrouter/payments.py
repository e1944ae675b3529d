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

from .errors import BadRequest, ClawError

__all__ = [
    "PaymentPayload",
    "PaymentRail",
    "PaymentRejected",
    "PaymentRequired",
    "PaymentRequirements",
    "ResourceInfo",
    "SettlementResponse",
    "VerifiedPayment",
    "decode_payment_header",
    "encode_header",
]


class PaymentRequirements(Struct, omit_defaults=True):
    scheme: str
    network: str
    amount: str
    asset: str
    payTo: str
    maxTimeoutSeconds: int = 60
    extra: dict[str, Any] = {}


class ResourceInfo(Struct, omit_defaults=True):
    url: str
    description: str = ""
    mimeType: str = "application/json"


class PaymentRequired(Struct, omit_defaults=True):
    x402Version: int
    accepts: list[PaymentRequirements]
    resource: ResourceInfo | None = None
    error: str | None = None


class PaymentPayload(Struct, omit_defaults=True):
    """A client's payment. v2 carries ``accepted`` (the requirements it answers);
    v1 carries ``scheme`` and ``network`` at the top level."""

    x402Version: int
    payload: dict[str, Any]
    accepted: PaymentRequirements | None = None
    scheme: str | None = None
    network: str | None = None
    resource: ResourceInfo | None = None

    def pair(self) -> tuple[str, str]:
        if self.accepted is not None:
            return self.accepted.scheme, self.accepted.network
        if self.scheme and self.network:
            return self.scheme, self.network
        raise BadRequest("payment names no scheme/network", code="invalid_payload")


class SettlementResponse(Struct, omit_defaults=True):
    success: bool
    network: str
    transaction: str = ""
    payer: str | None = None
    errorReason: str | None = None


class VerifiedPayment(Struct):
    """What a rail returns from ``verify``: enough to settle later."""

    scheme: str
    network: str
    payer: str
    amount: int
    payment_id: str
    requirements: PaymentRequirements
    payload: PaymentPayload


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
        """Collect ``charge`` (≤ ``payment.amount``) atomic units."""
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
