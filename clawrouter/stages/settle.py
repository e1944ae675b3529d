"""Settle stage: collect the payment only after the response succeeded.

For a JSON response the stage holds the response (start and body) until it is
complete, settles through the router's :class:`~clawrouter.settlement.Settler`,
and adds ``PAYMENT-RESPONSE`` (v2; ``X-PAYMENT-RESPONSE`` for v1) and the signed
receipt (``x-clawrouter-receipt``) before releasing it; a payment that cannot
be settled replaces the response with a 402. For a stream it settles after the
last event and reports the result as final SSE events — ``event: payment``
(the settlement response) and ``event: receipt`` — before ``data: [DONE]``.
Failed requests are never settled. With no payment on the request the stage
passes straight through.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

from ..context import SCOPE_KEY, RequestContext
from ..errors import PaymentRequired
from ..ledger import LedgerEntry
from ..payments import SettlementResponse, encode_header
from ..pricing import micro_usd, usd
from ..receipts import encode_receipt_header
from ..types import ASGIApp, Message, Receive, Scope, Send
from ..wire import encode

if TYPE_CHECKING:
    from ..router import Router


class SettleMiddleware:
    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext | None = scope.get(SCOPE_KEY)
        if scope["type"] != "http" or ctx is None or ctx.payment is None:
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        chunks: list[bytes] = []
        digest = hashlib.sha256()
        streaming = False
        passthrough = False

        async def send_wrapper(message: Message) -> None:
            nonlocal held, streaming, passthrough
            if passthrough:
                await send(message)
                return
            if message["type"] == "http.response.start":
                if message["status"] >= 400:
                    passthrough = True
                    await send(message)
                    return
                content_type = next((v for k, v in message["headers"] if k == b"content-type"), b"")
                if content_type.startswith(b"text/event-stream"):
                    streaming = True
                    await send(message)
                else:
                    held = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body = message.get("body", b"")
            final = not message.get("more_body", False)
            if streaming:
                if not final:
                    digest.update(body)
                    await send(message)
                    return
                if ctx.succeeded:
                    settlement = await self._settle(ctx)
                    events = b"event: payment\ndata: " + encode(settlement) + b"\n\n"
                    if settlement.success:
                        receipt = await self.router.receipts.issue(ctx, settlement, digest.hexdigest())
                        events += b"event: receipt\ndata: " + encode(receipt) + b"\n\n"
                    await send({"type": "http.response.body", "body": events, "more_body": True})
                await send(message)
                return
            chunks.append(body)
            if not final:
                return
            start, held = held, None
            whole = b"".join(chunks)
            assert start is not None
            if ctx.succeeded:
                settlement = await self._settle(ctx)
                if not settlement.success:
                    error = PaymentRequired(
                        f"settlement failed: {settlement.errorReason}; nothing was charged",
                        code=settlement.errorReason,
                        headers=[(self._response_header(ctx), encode_header(settlement))],
                    )
                    await error.send(send)
                    return
                receipt = await self.router.receipts.issue(ctx, settlement, hashlib.sha256(whole).hexdigest())
                start["headers"] = [
                    *start["headers"],
                    (self._response_header(ctx), encode_header(settlement)),
                    (b"x-clawrouter-receipt", encode_receipt_header(receipt)),
                ]
            await send(start)
            await send({"type": "http.response.body", "body": whole, "more_body": False})

        await self.app(scope, receive, send_wrapper)

    @staticmethod
    def _response_header(ctx: RequestContext) -> bytes:
        v1 = ctx.payment is not None and ctx.payment.payload.x402Version == 1
        return b"x-payment-response" if v1 else b"payment-response"

    async def _settle(self, ctx: RequestContext) -> SettlementResponse:
        payment = ctx.payment
        assert payment is not None
        charge = min(payment.amount, micro_usd(ctx.cost_pico))
        await self.router.ledger.record(
            LedgerEntry(
                ctx.request_id,
                "execution",
                {
                    "model": ctx.model.id if ctx.model is not None else None,
                    "provider": ctx.model.provider if ctx.model is not None else None,
                    "prompt_tokens": ctx.usage.prompt_tokens if ctx.usage else None,
                    "completion_tokens": ctx.usage.completion_tokens if ctx.usage else None,
                    "cost_usd": usd(ctx.cost_pico),
                    "charge": charge,
                },
            )
        )
        trace = ctx.trace
        started = time.time_ns() if trace is not None else 0
        settlement = await self.router.settler.settle(payment, charge, ctx.request_id)
        ctx.settlement = settlement
        if trace is not None:
            attributes: dict[str, object] = {
                "clawrouter.payment.network": settlement.network,
                "clawrouter.payment.settled": settlement.success,
                # exact settles the signed amount, not the (lower) actual cost
                "clawrouter.charged_usd": payment.amount / 1e6 if settlement.success else 0.0,
                "clawrouter.cost_usd": charge / 1e6,
            }
            if settlement.transaction:
                attributes["clawrouter.payment.transaction"] = settlement.transaction
            if not settlement.success:
                attributes["error.type"] = settlement.errorReason or "settlement_failed"
            trace.stage("settle", started, attributes)
        return settlement
