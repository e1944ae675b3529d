"""Signed receipts: what the router did for a payment, in a form anyone can check.

Every paid response carries a :class:`Receipt` naming the model and provider
that answered, the tokens, the quote the payer authorized, the amount actually
charged, the settlement transaction and the SHA-256 of the response body,
signed by the router's key. A client (or an auditor it hands the receipt to)
can then prove what it was charged for, and that the body it holds is the one
the router sent, without trusting the router's logs.

Signature scheme, chosen so that any Ethereum tool verifies it:

1. canonical bytes = the receipt as JSON **without** its ``signature`` member,
   keys sorted by code point, no whitespace, UTF-8, integers as JSON numbers
   (``msgspec.json.encode(..., order="sorted")``; byte-identical to Python's
   ``json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``);
2. ``h = sha256(canonical bytes)`` (32 bytes);
3. ``signature`` = EIP-191 ``personal_sign`` of the 32 bytes ``h`` by the key
   whose address is ``router``, i.e. a secp256k1 signature of
   ``keccak256("\\x19Ethereum Signed Message:\\n32" ‖ h)``, as 0x hex
   ``r ‖ s ‖ v`` (``v`` in {27, 28}).

With eth-account: ``Account.recover_message(encode_defunct(primitive=h),
signature=receipt.signature) == receipt.router``; with ethers:
``verifyMessage(getBytes(h), signature)``.

``router`` is inside the signed bytes, so a receipt cannot be re-attributed to
another key. In a response header a receipt travels as standard
base64 of its JSON (:func:`encode_receipt_header`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

import msgspec

from .evm.eip3009 import decode_signature, keccak, recover
from .keys import RouterKey

__all__ = [
    "Receipt",
    "ReceiptError",
    "body_sha256",
    "decode_receipt_header",
    "encode_receipt_header",
    "receipt_hash",
    "sign_receipt",
    "verify_receipt",
]

_EIP191_PREFIX = b"\x19Ethereum Signed Message:\n32"
#: a receipt is a few hundred bytes; anything far bigger in the header is not one
_MAX_HEADER_BYTES = 16 * 1024


class ReceiptError(Exception):
    """A receipt that is malformed or does not verify; the message says which check failed."""


class Receipt(msgspec.Struct, kw_only=True, omit_defaults=False, frozen=True):
    """A signed record of one paid call (amounts are atomic units of ``asset``, as decimal strings)."""

    id: str  # the router sets it to the request id (GET /-/receipts/{id})
    request_id: str
    issued_at: int  # unix seconds
    model: str  # the model that answered
    provider: str
    prompt_tokens: int
    completion_tokens: int
    quote: str  # atomic units the payer authorized
    charged: str  # atomic units actually charged (<= quote)
    cost_usd: str  # decimal string, e.g. "0.001234"
    asset: str  # token contract address
    payer: str  # the payer's address
    network: str  # CAIP-2, e.g. "eip155:8453"
    transaction: str  # settlement transaction hash; "" when settlement is deferred
    response_sha256: str  # hex SHA-256 of the response body bytes
    router: str = ""  # the signing router's address (set by sign_receipt)
    signature: str = ""  # 0x hex EIP-191 signature (set by sign_receipt)


_canonical_encoder = msgspec.json.Encoder(order="sorted")


def receipt_hash(receipt: Receipt) -> bytes:
    """The 32-byte SHA-256 of the receipt's canonical JSON (``signature`` left out): the personal-signed message."""
    fields = msgspec.structs.asdict(receipt)
    del fields["signature"]
    return hashlib.sha256(_canonical_encoder.encode(fields)).digest()


def body_sha256(body: bytes) -> str:
    """The ``response_sha256`` of a response body (lowercase hex)."""
    return hashlib.sha256(body).hexdigest()


def sign_receipt(receipt: Receipt, key: RouterKey) -> Receipt:
    """A copy of ``receipt`` with ``router`` set to ``key``'s address and signed by it."""
    unsigned = msgspec.structs.replace(receipt, router=key.address, signature="")
    signature = key.sign(keccak(_EIP191_PREFIX + receipt_hash(unsigned)))
    return msgspec.structs.replace(unsigned, signature="0x" + signature.hex())


def verify_receipt(receipt: Receipt, *, body: bytes | None = None, router: str | None = None) -> None:
    """Raise :class:`ReceiptError` unless ``receipt`` is signed by ``receipt.router``.

    With ``router``, the receipt must also come from that address (compared
    case-insensitively): without it, a signature only proves *some* key signed.
    With ``body``, its SHA-256 must be ``response_sha256``.
    """
    if router is not None and router.lower() != receipt.router.lower():
        raise ReceiptError(f"receipt is from router {receipt.router!r:.60}, expected {router!r:.60}")
    if not receipt.signature:
        raise ReceiptError("receipt is not signed")
    try:
        signature = decode_signature(receipt.signature)
        signer = recover(keccak(_EIP191_PREFIX + receipt_hash(receipt)), signature)
    except ValueError as exc:
        raise ReceiptError(f"receipt signature is invalid: {exc}") from None
    if signer != receipt.router.lower():
        raise ReceiptError(
            f"receipt signature does not match its router {receipt.router!r:.60}: "
            "the receipt was altered or signed by another key"
        )
    if body is not None and body_sha256(body) != receipt.response_sha256.lower():
        raise ReceiptError("response body does not match the receipt's response_sha256")


def encode_receipt_header(receipt: Receipt) -> bytes:
    """The receipt as a header value: standard base64 of its JSON."""
    return base64.b64encode(msgspec.json.encode(receipt))


def decode_receipt_header(value: bytes | str) -> Receipt:
    """The receipt in a header value from :func:`encode_receipt_header`; ``ReceiptError`` when malformed.

    Decoding does not verify: call :func:`verify_receipt` on the result.
    """
    if not isinstance(value, (bytes, str)):
        raise ReceiptError(f"receipt header must be bytes or str, got {type(value).__name__}")
    if len(value) > _MAX_HEADER_BYTES:
        raise ReceiptError(f"receipt header is too long ({len(value)} > {_MAX_HEADER_BYTES})")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ReceiptError("receipt header is not valid base64") from None
    try:
        return msgspec.json.decode(raw, type=Receipt)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise ReceiptError(f"receipt header is not a valid receipt: {exc}") from None
