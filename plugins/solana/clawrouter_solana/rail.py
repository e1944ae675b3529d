"""The ``exact`` payment rail on a Solana network (SPL ``TransferChecked``).

:meth:`ExactSvmRail.verify` is on every paid request's path: the spec's local
rules (:mod:`clawrouter_solana.exact`), then with the embedded facilitator one
RPC batch (simulation and a replay look-up, unless ``simulate=False``) and a
balance reservation from the cache. With a remote facilitator the local rules
run first (a bad payment never costs a round trip), then its ``/verify``.

The in-flight lock and the "settled" marker are the router's, in its state
backend, shared with every other rail: a payment id is the payer's signature,
unique to the transaction.
"""

from __future__ import annotations

import time
from typing import Any

from clawrouter.facilitator import Facilitator
from clawrouter.payments import (
    PaymentPayload,
    PaymentRejected,
    PaymentRequirements,
    SettlementResponse,
    VerifiedPayment,
    as_v2,
    chain_unavailable,
)

from . import constants as c
from .exact import CheckedTransfer, check_transaction
from .facilitator import EmbeddedSvmFacilitator
from .networks import SolanaNetwork
from .rpc import RpcUnavailable

__all__ = ["ExactSvmRail"]


class ExactSvmRail:
    scheme = "exact"
    #: the x402 reason for a payment that was already settled
    replay_reason = c.ERR_DUPLICATE_SETTLEMENT

    def __init__(
        self,
        network: SolanaNetwork,
        pay_to: str,
        facilitator: Facilitator,
        *,
        fee_payer: str | None = None,
        asset: str | None = None,
        max_timeout_seconds: int = 60,
        max_unit_price: int = c.MAX_COMPUTE_UNIT_PRICE,
    ) -> None:
        self.solana = network
        self.network = network.network
        self.pay_to = pay_to
        self.asset = asset or network.usdc
        self.facilitator = facilitator
        self.embedded = facilitator if isinstance(facilitator, EmbeddedSvmFacilitator) else None
        if fee_payer is None:
            if self.embedded is None:
                raise ValueError("a rail with a remote facilitator needs its fee payer's address")
            fee_payer = self.embedded.fee_payer
        self.fee_payer = fee_payer
        self.max_timeout_seconds = max_timeout_seconds
        self.max_unit_price = max_unit_price

    def requirements(self, amount: int, resource: str) -> PaymentRequirements:
        return PaymentRequirements(
            self.scheme,
            self.network,
            str(amount),
            self.asset,
            self.pay_to,
            self.max_timeout_seconds,
            {"feePayer": self.fee_payer},
        )

    async def verify(self, payment: PaymentPayload, requirements: PaymentRequirements) -> VerifiedPayment:
        embedded = self.embedded
        if embedded is not None:
            checked = embedded.check(payment, requirements)
            try:
                if embedded.simulate:
                    await embedded.preflight(checked)
                await embedded.reserve(checked)
            except RpcUnavailable as exc:  # fail closed: nothing is served unverified, nothing charged
                raise chain_unavailable(self.network, exc) from None
        else:
            checked = check_transaction(payment, requirements, {self.fee_payer}, max_unit_price=self.max_unit_price)
            answer = await self.facilitator.verify(as_v2(payment, requirements), requirements)
            if not answer.isValid:
                raise PaymentRejected(
                    answer.invalidMessage or f"facilitator refused the payment: {answer.invalidReason}",
                    code=answer.invalidReason or c.ERR_INVALID_PAYLOAD,
                )
        return self._verified(checked, payment, requirements)

    def _verified(
        self, checked: CheckedTransfer, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> VerifiedPayment:
        return VerifiedPayment(
            self.scheme,
            self.network,
            checked.payer,
            checked.amount,
            checked.payment_id,
            requirements,
            payment,
            # a blockhash lives ~60-90 s; past this the transaction can no longer land
            expires=int(time.time()) + c.SETTLEMENT_TTL_SECONDS,
        )

    async def settle(self, payment: VerifiedPayment, charge: int) -> SettlementResponse:
        """Settle the signed amount (``exact``; ``charge``, the actual cost, goes to the
        ledger). Idempotent; raises when the node or facilitator cannot be reached."""
        embedded = self.embedded
        if embedded is None:
            return await self.facilitator.settle(as_v2(payment.payload, payment.requirements), payment.requirements)
        try:
            checked = embedded.check(payment.payload, payment.requirements)
        except PaymentRejected as exc:  # e.g. its fee payer is no longer one of this router's keys
            return SettlementResponse(False, self.network, "", payment.payer, exc.code, errorMessage=exc.message)
        response = await embedded.submit(checked)
        if response.success:
            embedded.book.spent(checked.source, checked.amount)
        return response  # a failure is released once, by the settler

    def release(self, payment: VerifiedPayment) -> None:
        """The request failed: its reservation goes back to the payer's available balance."""
        if self.embedded is not None:
            try:
                checked = self.embedded.check(payment.payload, payment.requirements)
            except PaymentRejected:  # never reserved by this process (a recovered payment)
                return
            self.embedded.book.release(checked.source, checked.amount)

    async def aclose(self) -> None:
        close: Any = getattr(self.facilitator, "aclose", None)
        if close is not None:
            await close()
        if self.embedded is not None:
            await self.embedded.rpc.aclose()

    def __repr__(self) -> str:
        return f"<ExactSvmRail {self.network} payTo={self.pay_to}>"
