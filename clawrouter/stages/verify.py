"""Verify stage: quote, check and lock the payment (x402).

With no payment rail registered the stage passes requests straight through.
Otherwise a request without a payment header gets **402** with one ``accepts``
entry per rail (``PAYMENT-REQUIRED`` header, base64 JSON; the same document in
the body for v1 clients). A payment (``PAYMENT-SIGNATURE``, or v1
``X-PAYMENT``) must answer the quote this router computes for the request, is
verified by the rail registered for its ``(scheme, network)``, and is locked in
the state backend so that a concurrent copy is refused with 409. A request that
ends without settlement releases its lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..context import get_context
from ..errors import ClawError, Conflict, PaymentRequired
from ..ledger import LedgerEntry
from ..payments import (
    PaymentRejected,
    PaymentRequirements,
    ResourceInfo,
    decode_payment_header,
    encode_header,
)
from ..payments import PaymentRequired as PaymentRequiredMessage
from ..types import ASGIApp, Receive, Scope, Send
from ..wire import encode
from .route import header_constraints

if TYPE_CHECKING:
    from ..router import Router

_HEADERS = (b"payment-signature", b"x-payment")


def _payment_header(scope: Scope) -> tuple[bytes, bytes] | None:
    for name, value in scope["headers"]:
        if name in _HEADERS:
            return name, value
    return None


def _resource(scope: Scope) -> str:
    host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "localhost")
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{scope['path']}"


def _matches(offered: PaymentRequirements, expected: PaymentRequirements) -> bool:
    return (
        offered.amount == expected.amount
        and offered.payTo.lower() == expected.payTo.lower()
        and offered.asset.lower() == expected.asset.lower()
    )


class VerifyMiddleware:
    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = self.router
        if scope["type"] != "http" or not router.rails:
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope, router)
        try:
            request = await ctx.chat_request(scope, receive)
            if ctx.decision is None:
                ctx.decision = router.decide(request, header_constraints(scope))
            amount = router.quote(request, ctx.decision)
            resource = _resource(scope)
            header = _payment_header(scope)
            if header is None:
                raise self._challenge(amount, resource, "payment required")
            payload = decode_payment_header(header[1])
            rail = router.rails.get(payload.pair())
            if rail is None:
                raise PaymentRejected(
                    f"no rail for scheme/network {payload.pair()}; accepted: {sorted(router.rails)}",
                    code="unsupported_scheme",
                )
            expected = rail.requirements(amount, resource)
            if payload.accepted is not None and not _matches(payload.accepted, expected):
                raise PaymentRejected(
                    f"payment does not answer this request's quote of {expected.amount} {expected.asset} "
                    f"to {expected.payTo}",
                    code="invalid_payment_requirements",
                )
            verified = await rail.verify(payload, expected)
            key = f"payment:{verified.network}:{verified.payment_id}"
            if not await router.state.acquire(key, router.config.payments.lock_ttl_seconds):
                raise Conflict("this payment is already being used by another request", code="payment_in_flight")
        except PaymentRejected as exc:
            await ctx.fail(self._challenge(amount, resource, exc.message, exc.code), send)
            return
        except ClawError as exc:
            await ctx.fail(exc, send)
            return
        ctx.payment = verified
        ledger = router.ledger
        await ledger.record(
            LedgerEntry(
                ctx.request_id,
                "authorization",
                {
                    "scheme": verified.scheme,
                    "network": verified.network,
                    "payer": verified.payer,
                    "amount": verified.amount,
                    "payment_id": verified.payment_id,
                    "quote": amount,
                },
            )
        )
        try:
            await self.app(scope, receive, send)
        finally:
            if ctx.settlement is None or not ctx.settlement.success:
                await router.state.release(key)
                await ledger.record(LedgerEntry(ctx.request_id, "released", {"payment_id": verified.payment_id}))

    def _challenge(self, amount: int, resource: str, message: str, code: str | None = None) -> PaymentChallenge:
        accepts = [rail.requirements(amount, resource) for rail in self.router.rails.values()]
        return PaymentChallenge(
            message, PaymentRequiredMessage(2, accepts, ResourceInfo(resource), code or message), code
        )


class PaymentChallenge(PaymentRequired):
    """A 402 carrying the x402 ``PaymentRequired`` document (header and body)."""

    def __init__(self, message: str, document: PaymentRequiredMessage, code: str | None = None) -> None:
        super().__init__(message, code=code, headers=[(b"payment-required", encode_header(document))])
        self.document = document

    def body(self) -> bytes:
        """OpenAI-shaped error plus the x402 fields v1 clients read from the body."""
        return encode(
            {
                "error": {"message": self.message, "type": self.type, "code": self.code},
                "x402Version": self.document.x402Version,
                "accepts": self.document.accepts,
            }
        )


__all__ = ["PaymentChallenge", "VerifyMiddleware"]
