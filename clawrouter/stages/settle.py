"""Settle stage: collect the payment only after the response succeeded.

For a JSON response the stage holds the response start until the body is
complete, settles, and adds ``PAYMENT-RESPONSE`` (v2; ``X-PAYMENT-RESPONSE``
for v1) before releasing it; a failed settlement replaces the response with a
402. For a stream it settles after the last event and reports the result as a
final SSE event (``event: payment``) before ``[DONE]``. Failed requests are
never settled. With no payment on the request the stage passes straight
through.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..context import SCOPE_KEY, RequestContext
from ..errors import PaymentRequired
from ..ledger import LedgerEntry
from ..payments import SettlementResponse, encode_header
from ..pricing import micro_usd, usd
from ..types import ASGIApp, Message, Receive, Scope, Send
from ..wire import encode

if TYPE_CHECKING:
    from ..router import Router

log = logging.getLogger("clawrouter.settle")


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
        streaming = False

        async def send_wrapper(message: Message) -> None:
            nonlocal held, streaming
            if message["type"] == "http.response.start":
                if message["status"] >= 400:
                    await send(message)
                    return
                content_type = next((v for k, v in message["headers"] if k == b"content-type"), b"")
                if content_type.startswith(b"text/event-stream"):
                    streaming = True
                    await send(message)
                else:
                    held = message
                return
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                if streaming and ctx.succeeded:
                    settlement = await self._settle(ctx)
                    event = b"event: payment\ndata: " + encode(settlement) + b"\n\n"
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                elif held is not None:
                    start, held = held, None
                    if ctx.succeeded:
                        settlement = await self._settle(ctx)
                        if not settlement.success:
                            await PaymentRequired(
                                f"settlement failed: {settlement.errorReason}", code=settlement.errorReason
                            ).send(send)
                            return
                        name = (
                            b"x-payment-response"
                            if ctx.payment is not None and ctx.payment.payload.x402Version == 1
                            else b"payment-response"
                        )
                        start["headers"] = [*start["headers"], (name, encode_header(settlement))]
                    await send(start)
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _settle(self, ctx: RequestContext) -> SettlementResponse:
        payment = ctx.payment
        assert payment is not None
        charge = min(payment.amount, micro_usd(ctx.cost_pico))
        ledger = self.router.ledger
        await ledger.record(
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
        rail = self.router.rails[(payment.scheme, payment.network)]
        try:
            settlement = await rail.settle(payment, charge)
        except Exception as exc:
            log.exception("settlement of %s failed", ctx.request_id)
            settlement = SettlementResponse(False, payment.network, payer=payment.payer, errorReason=type(exc).__name__)
        ctx.settlement = settlement
        await ledger.record(
            LedgerEntry(
                ctx.request_id,
                "settlement",
                {
                    "success": settlement.success,
                    "transaction": settlement.transaction,
                    "network": settlement.network,
                    "payer": settlement.payer,
                    "charge": charge,
                    "error": settlement.errorReason,
                },
            )
        )
        return settlement
