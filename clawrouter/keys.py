"""The router's own secp256k1 key.

One key gives the router its on-chain identity: it signs receipts (so a client
can prove what it was charged for), settles EIP-3009 authorizations when the
router is its own facilitator, and seeds the secrets the router needs
elsewhere through :meth:`RouterKey.derive` (the quote HMAC secret, for one).
Deriving rather than generating those secrets means replicas configured with
the same key agree on them with nothing else to share.

The raw key never appears in ``repr``/``str``, so it cannot leak through logs,
tracebacks or the debug endpoints that print objects.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Self

from coincurve import PrivateKey

from .evm.eip3009 import address_of, sign_digest

__all__ = ["RouterKey"]


class RouterKey:
    """A secp256k1 private key with its checksummed ``address``.

    The coincurve ``PrivateKey`` is built once: constructing it derives the
    public key (~40 µs), which would otherwise be paid on every signature.
    """

    __slots__ = ("_key", "address")
    #: what error messages call the key (a subclass names its own kind)
    kind = "router key"

    def __init__(self, private_key: bytes) -> None:
        if not isinstance(private_key, bytes) or len(private_key) != 32:
            raise ValueError(f"a {self.kind} is 32 bytes")
        try:
            self._key = PrivateKey(private_key)
        except ValueError:
            raise ValueError(f"a {self.kind} must be a secp256k1 scalar in [1, n)") from None
        #: the key's EIP-55 checksummed address
        self.address: str = address_of(self._key)

    @classmethod
    def from_hex(cls, value: str) -> Self:
        """A key from 64 hex digits, with or without ``0x`` (surrounding whitespace ignored)."""
        text = value.strip()
        if text[:2] in ("0x", "0X"):
            text = text[2:]
        try:
            raw = bytes.fromhex(text) if len(text) == 64 else b""
        except ValueError:
            raw = b""
        if len(raw) != 32:  # fromhex skips whitespace, so 64 characters may give fewer bytes
            # never echo the value: it is (nearly) a private key
            raise ValueError(f"a {cls.kind} is 64 hex digits (32 bytes), optionally 0x-prefixed")
        key = cls(raw)
        from .telemetry.logs import register_secret  # the logs hide it (any case, 0x or not) should it reach them

        register_secret(text)
        return key

    @classmethod
    def generate(cls) -> Self:
        """A fresh random key (for tests, demos and first runs)."""
        return cls(PrivateKey().secret)

    @classmethod
    def from_env(cls, var: str) -> Self | None:
        """The key in environment variable ``var``, or ``None`` when it is unset or empty.

        A malformed value raises ``ValueError`` naming the variable but not its content.
        """
        value = os.environ.get(var, "").strip()
        if not value:
            return None
        try:
            return cls.from_hex(value)
        except ValueError as exc:
            raise ValueError(f"${var}: {exc}") from None

    @property
    def private_key(self) -> bytes:
        """The raw 32-byte secret (for the settlement client that signs transactions)."""
        return self._key.secret

    def sign(self, digest: bytes) -> bytes:
        """A 65-byte ``r ‖ s ‖ v`` signature of a 32-byte digest (``v`` in {27, 28}, low ``s``)."""
        return sign_digest(self._key, digest)

    def derive(self, label: bytes) -> bytes:
        """A 32-byte secret for ``label``: HMAC-SHA256 keyed by the private key.

        One-way, so a derived secret (which may be handed to less careful code,
        such as the quote signer) never exposes the key; deterministic, so
        replicas sharing the key derive the same secret.
        """
        return hmac.digest(self._key.secret, label, hashlib.sha256)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(address={self.address!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RouterKey):
            return NotImplemented
        return hmac.compare_digest(self._key.secret, other._key.secret)

    def __hash__(self) -> int:
        return hash(self.address)
