"""Stateless quote tokens: the router's signed word on what a request costs.

A 402 challenge asks for an amount the router computed for one request body.
The client pays in a second request, and the router must know the payment
answers *its* quote for *that* body without having stored anything between
the two (the second request may reach another replica, or the same one after
a restart). So the quote travels with the client: ``issue`` returns a token
that goes out in ``PaymentRequirements.extra["quote"]``, the client echoes it
in the v2 payment's ``accepted.extra``, and ``check`` verifies it.

A token is ``"<expires>.<mac>"``: ``expires`` a unix time in decimal seconds
and ``mac`` the first 16 bytes of an HMAC-SHA256 (unpadded base64url, 22
characters) over the expiry, the amount, ``payTo``, the asset, the network
and the request digest. 128 bits is ample for a tag that lives minutes and
that an attacker can only test by sending paid requests. The expiry is in
clear so an expired token is reported as such, but it is covered by the MAC,
so moving it is tampering. Replicas that share the secret (derive it from the
router key) accept each other's quotes.

A quote binds the price, not the payment: replaying a token only lets a client
pay the same amount again for the same body, which the payment's own nonce
and the settlement bound.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

__all__ = ["QuoteError", "QuoteSigner"]

#: MAC context: the same secret used for anything else never yields a valid quote tag
_CONTEXT = b"clawrouter/quote/v1\x00"
_MAC_BYTES = 16
_MAC_CHARS = 22  # base64url of 16 bytes, unpadded
_MAX_EXPIRY_DIGITS = 12


class QuoteError(Exception):
    """A quote token the router cannot honour; ``code`` is ``invalid_quote`` or ``quote_expired``."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class QuoteSigner:
    """Issues and checks quote tokens with one secret; a token is valid for ``ttl_seconds``.

    Both operations are one HMAC over a short message (~2 µs): the keyed
    SHA-256 state is computed once here and copied per token.
    """

    __slots__ = ("_hmac", "ttl_seconds")

    def __init__(self, secret: bytes, ttl_seconds: int = 300) -> None:
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValueError("the quote secret must be at least 16 bytes")
        if not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be a positive integer, got {ttl_seconds!r}")
        self._hmac = hmac.new(secret, _CONTEXT, hashlib.sha256)
        self.ttl_seconds = ttl_seconds

    def __repr__(self) -> str:
        return f"QuoteSigner(ttl_seconds={self.ttl_seconds})"

    def _mac(self, expires: int, digest: bytes, amount: int, pay_to: str, asset: str, network: str) -> str:
        # Each string is length-prefixed and the digest comes last, so no two
        # field tuples share a message. Addresses are compared case-insensitively.
        pay_to = pay_to.lower()
        asset = asset.lower()
        fields = f"{expires}.{amount}.{len(pay_to)}:{pay_to}{len(asset)}:{asset}{len(network)}:{network}"
        mac = self._hmac.copy()
        mac.update(fields.encode("utf-8", "surrogatepass") + digest)
        return base64.urlsafe_b64encode(mac.digest()[:_MAC_BYTES])[:_MAC_CHARS].decode()

    def issue(
        self,
        *,
        digest: bytes,
        amount: int,
        pay_to: str,
        asset: str,
        network: str,
        now: float | None = None,
    ) -> str:
        """A token binding this quote (``digest`` is the router's sha256 of the request body)."""
        expires = int(time.time() if now is None else now) + self.ttl_seconds
        return f"{expires}.{self._mac(expires, digest, amount, pay_to, asset, network)}"

    def check(
        self,
        token: object,
        *,
        digest: bytes,
        amount: int,
        pay_to: str,
        asset: str,
        network: str,
        now: float | None = None,
    ) -> None:
        """Raise :class:`QuoteError` unless ``token`` was issued by this secret for exactly these values.

        ``token`` is whatever the client echoed (typed ``object``: it comes from
        JSON); anything malformed, foreign or tampered with is ``invalid_quote``,
        never another exception. The MAC is checked (in constant time) before
        the expiry, so only genuine tokens are ever reported as expired.
        """
        if not isinstance(token, str):
            raise QuoteError("the quote token must be a string", "invalid_quote")
        expires_text, dot, mac_text = token.partition(".")
        if (
            not dot
            or not 0 < len(expires_text) <= _MAX_EXPIRY_DIGITS
            or not expires_text.isascii()
            or not expires_text.isdigit()
            or expires_text[0] == "0"  # one spelling per token
            or not mac_text.isascii()
        ):
            raise QuoteError("the quote token is malformed", "invalid_quote")
        expires = int(expires_text)
        expected = self._mac(expires, digest, amount, pay_to, asset, network)
        if not hmac.compare_digest(mac_text, expected):
            raise QuoteError(
                "the quote token was not issued by this router for this request, amount and payment terms",
                "invalid_quote",
            )
        if (time.time() if now is None else now) >= expires:
            raise QuoteError("the quote has expired; request a new one", "quote_expired")
