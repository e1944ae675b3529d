"""Verify stage: quote, check and lock the payment (x402).

With no payment rail registered the stage is left out of the stack. Otherwise
a request without a payment header gets **402**: the v2 ``PaymentRequired``
document in the ``PAYMENT-REQUIRED`` header (base64 JSON) and the v1 document
(``accepts`` with ``maxAmountRequired``) in the body, one ``accepts`` entry per
rail. Each entry carries a quote id in ``extra.quote``: an HMAC binding the
amount, ``payTo``, asset, network, the SHA-256 of the request body and an
expiry, so the router checks statelessly that a v2 payment answers a quote it
issued for this very request. (v1 payments do not echo their requirements;
they must match the quote recomputed now.)

The payment (``PAYMENT-SIGNATURE``, or v1 ``X-PAYMENT``) is verified by the
rail registered for its ``(scheme, network)`` and locked in the state backend,
so a concurrent copy is refused with 409 and a settled one with 402. A request
that ends without settlement releases its lock.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING

import msgspec

from ..context import get_context
from ..errors import ClawError, Conflict, PaymentRequired
from ..ledger import LedgerEntry
from ..limits import key_name
from ..payments import (
    PaymentRail,
    PaymentRejected,
    PaymentRequirements,
    ResourceInfo,
    decode_payment_header,
    encode_header,
    requirements_v1,
)
from ..payments import PaymentRequired as PaymentRequiredMessage
from ..quotes import QuoteError
from ..settlement import SETTLED, lock_key
from ..types import ASGIApp, Receive, Scope, Send
from ..wire import RouteConstraints, encode
from .route import bound_output, header_constraints

if TYPE_CHECKING:
    from ..context import RequestContext
    from ..limits import Reservation
    from ..payments import VerifiedPayment
    from ..router import Router

log = logging.getLogger("clawrouter.verify")

_HEADERS = (b"payment-signature", b"x-payment")


def _payment_header(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name in _HEADERS:
            return bytes(value)
    return None


def _resource(scope: Scope) -> str:
    host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "localhost")
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{scope['path']}"


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
        amount = 0
        resource = ""
        digest = b""
        trace = ctx.trace
        started = time.time_ns() if trace is not None else 0
        try:
            request = await ctx.chat_request(scope, receive)
            constraints = header_constraints(scope)
            if ctx.decision is None:
                ctx.decision = router.decide(request, constraints)
                if trace is not None:
                    trace.route(ctx.decision)
            bound_output(request, router.config.routing.default_max_tokens)
            amount = router.quote(request, ctx.decision)
            resource = _resource(scope)
            assert ctx.body is not None
            digest = hashlib.sha256(ctx.body).digest()
            header = _payment_header(scope)
            if header is None:
                await self._refresh()
                raise self._challenge(amount, resource, digest, "payment required")
            payload = decode_payment_header(header)
            check = getattr(router.ledger, "check", None)
            if check is not None:  # a ledger that can be down (PostgreSQL): never serve what could not be settled
                await check()
            rail = router.rails.get(payload.pair())
            if rail is None:
                raise PaymentRejected(
                    f"no rail for scheme/network {payload.pair()}; accepted: {sorted(router.rails)}",
                    code="unsupported_scheme",
                )
            accepted = payload.accepted
            if accepted is not None:  # v2: the quote id makes the echoed amount authoritative
                expected = self._quoted(rail, accepted, digest, resource)
                quoted = int(expected.amount)
                if quoted < amount:  # live figures moved since the quote: route within what was paid
                    ctx.decision = router.decide(request, _within(constraints, quoted))
                    if trace is not None:
                        trace.route(ctx.decision)
                    amount = router.quote(request, ctx.decision)
                amount = quoted
            else:
                expected = rail.requirements(amount, resource)
            verified = await rail.verify(payload, expected)
            key = lock_key(verified.network, verified.payment_id)
            if not await router.state.acquire(key, router.config.payments.lock_ttl_seconds):
                _release(rail, verified)
                if await router.state.get(key) == SETTLED:
                    raise PaymentRejected(
                        "this payment was already settled; sign a new authorization",
                        code=getattr(rail, "replay_reason", "invalid_exact_evm_nonce_already_used"),
                    )
                raise Conflict("this payment is already being used by another request", code="payment_in_flight")
            if router.limits is not None:
                try:
                    ctx.budget = await self._budget(ctx, verified)
                except BaseException:  # 429, 402, the state backend down (503): nothing held stays held
                    _release(rail, verified)
                    await router.state.release(key)
                    raise
        except PaymentRejected as exc:
            await self._refresh()
            if trace is not None:
                trace.stage("verify", started, {"error.type": exc.code or "payment_rejected"})
            await ctx.fail(self._challenge(amount, resource, digest, exc.message, exc.code), send)
            return
        except ClawError as exc:
            if trace is not None:
                trace.stage("verify", started, {"error.type": exc.code or str(exc.status)})
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
                    "quote": expected.extra.get("quote"),
                    "model": ctx.decision.primary.id,
                },
            )
        )
        if trace is not None:
            trace.stage(
                "verify",
                started,
                {
                    "clawrouter.payment.network": verified.network,
                    "clawrouter.payment.scheme": verified.scheme,
                    "clawrouter.payment.payer": verified.payer,
                    "clawrouter.quote_usd": verified.amount / 1e6,
                },
            )
        try:
            await self.app(scope, receive, send)
        finally:
            if router.limits is not None:
                settled = ctx.settlement is not None and ctx.settlement.success
                try:
                    await router.limits.settle(ctx.budget, spent=settled)
                except Exception as exc:  # the state backend down: the reservation stays counted
                    log.error(
                        "request %s: budget reservation not %s: %s",
                        ctx.request_id,
                        "committed" if settled else "released",
                        exc,
                    )
            if ctx.settlement is None or not ctx.settlement.success:
                if ctx.settlement is None:  # a failed settlement was released by the settler
                    await router.state.release(key)
                    _release(rail, verified)
                await ledger.record(LedgerEntry(ctx.request_id, "released", {"payment_id": verified.payment_id}))

    def _quoted(
        self, rail: PaymentRail, accepted: PaymentRequirements, digest: bytes, resource: str
    ) -> PaymentRequirements:
        token = accepted.extra.get("quote") if isinstance(accepted.extra, dict) else None
        if not isinstance(token, str):
            raise PaymentRejected(
                "the payment's accepted requirements carry no quote id (extra.quote)", code="invalid_quote"
            )
        try:
            amount = int(accepted.amount)
        except ValueError:
            raise PaymentRejected("accepted.amount is not an integer", code="invalid_payment_requirements") from None
        expected = rail.requirements(amount, resource)
        if accepted.payTo.lower() != expected.payTo.lower() or accepted.asset.lower() != expected.asset.lower():
            raise PaymentRejected(
                f"the payment answers requirements for {accepted.asset} to {accepted.payTo}; this router asks "
                f"{expected.asset} to {expected.payTo}",
                code="invalid_payment_requirements",
            )
        try:
            self.router.quotes.check(
                token, digest=digest, amount=amount, pay_to=expected.payTo, asset=expected.asset, network=rail.network
            )
        except QuoteError as exc:
            raise PaymentRejected(f"{exc}", code=exc.code) from None
        expected.extra["quote"] = token
        return expected

    async def _budget(self, ctx: RequestContext, verified: VerifiedPayment) -> Reservation | None:
        """The payer's (and the API key's) rate limit and budgets: 429 / 402 when over."""
        limits = self.router.limits
        assert limits is not None
        subjects = [("payer", verified.payer)]
        if ctx.actor.kind == "api_key":
            subjects.append(("key", key_name(ctx.actor)))
        return await limits.admit(verified.payer, subjects, verified.amount)

    async def _refresh(self) -> None:
        """Let rails that put live chain data in their requirements (a Solana blockhash)
        read it first: ``requirements`` is synchronous; their optional ``refresh`` is not."""
        for rail in self.router.refreshing_rails:
            await rail.refresh()  # type: ignore[attr-defined]

    def _challenge(
        self, amount: int, resource: str, digest: bytes, message: str, code: str | None = None
    ) -> PaymentChallenge:
        quotes = self.router.quotes
        accepts = []
        for rail in self.router.rails.values():
            requirements = rail.requirements(amount, resource)
            requirements.extra["quote"] = quotes.issue(
                digest=digest,
                amount=amount,
                pay_to=requirements.payTo,
                asset=requirements.asset,
                network=requirements.network,
            )
            accepts.append(requirements)
        return PaymentChallenge(
            message, PaymentRequiredMessage(2, accepts, ResourceInfo(resource), code or message), resource, code
        )


def _release(rail: PaymentRail, payment: object) -> None:
    release = getattr(rail, "release", None)
    if release is not None:
        release(payment)


def _within(constraints: RouteConstraints | None, amount: int) -> RouteConstraints:
    """``constraints`` with ``max_price`` lowered to ``amount`` atomic USDC units."""
    limit = amount / 1e6
    if constraints is None:
        return RouteConstraints(max_price=limit)
    current = constraints.max_price
    return msgspec.structs.replace(constraints, max_price=limit if current is None else min(current, limit))


class PaymentChallenge(PaymentRequired):
    """A 402 carrying the x402 v2 ``PaymentRequired`` document in its header and
    the v1 document (plus an OpenAI-shaped error) in its body."""

    def __init__(
        self, message: str, document: PaymentRequiredMessage, resource: str = "", code: str | None = None
    ) -> None:
        super().__init__(message, code=code, headers=[(b"payment-required", encode_header(document))])
        self.document = document
        self.resource = resource

    def body(self) -> bytes:
        return encode(
            {
                "x402Version": 1,
                "error": self.code or self.message,
                "accepts": [requirements_v1(r, self.resource) for r in self.document.accepts],
                "message": self.message,
                "type": self.type,
                "code": self.code,
            }
        )


__all__ = ["PaymentChallenge", "VerifyMiddleware"]
