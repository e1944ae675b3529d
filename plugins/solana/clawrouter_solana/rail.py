"""The ``exact`` payment rail on a Solana network (SPL ``TransferChecked``).

:meth:`ExactSvmRail.verify` is on every paid request's path: the spec's local
rules (:mod:`clawrouter_solana.exact`), then with the embedded facilitator one
RPC batch (a replay look-up, the block height and latest blockhash for the
payment blockhash's age, and, unless ``simulate=False``, the simulation) and a
balance reservation from the cache. With a remote facilitator the local rules
run first (a bad payment never costs a round trip), then its ``/verify``.
:meth:`ExactSvmRail.refresh`, awaited before a challenge, reads the blockhash
the challenge offers (``extra.recentBlockhash``).

The in-flight lock and the "settled" marker are the router's, in its state
backend, shared with every other rail: a payment id is the payer's signature,
unique to the transaction.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from clawrouter.facilitator import Facilitator, verify_remotely
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
from .rpc import RpcError, RpcUnavailable

__all__ = ["ExactSvmRail"]

log = logging.getLogger("clawrouter_solana")


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
        max_unit_limit: int = c.MAX_COMPUTE_UNIT_LIMIT,
        max_priority_fee: int = c.MAX_PRIORITY_FEE_LAMPORTS,
    ) -> None:
        self.solana = network
        self.network = network.network
        self.pay_to = pay_to
        self.facilitator = facilitator
        self.embedded = facilitator if isinstance(facilitator, EmbeddedSvmFacilitator) else None
        if self.embedded is not None:
            if asset is not None and asset != self.embedded.asset:
                raise ValueError(f"the rail's asset {asset} is not its facilitator's ({self.embedded.asset})")
            asset = self.embedded.asset
        self.asset = asset or network.usdc
        if fee_payer is None:
            if self.embedded is None:
                raise ValueError("a rail with a remote facilitator needs its fee payer's address")
            fee_payer = self.embedded.fee_payer
        self.fee_payer = fee_payer
        self.max_timeout_seconds = max_timeout_seconds
        self._limits = {
            "max_unit_price": max_unit_price,
            "max_unit_limit": max_unit_limit,
            "max_priority_fee": max_priority_fee,
        }
        #: payments verified (and reserved in the balance book) by this process, not yet settled
        #: or released: settling one needs no second check, and only these are released
        self._held: dict[str, CheckedTransfer] = {}

    def requirements(self, amount: int, resource: str) -> PaymentRequirements:
        extra: dict[str, Any] = {"feePayer": self.fee_payer}
        if self.embedded is not None:  # a recent blockhash to sign with (read by refresh())
            extra.update(self.embedded.blockhashes.hint(c.BLOCKHASH_HINT_SECONDS * 5))
        return PaymentRequirements(
            self.scheme, self.network, str(amount), self.asset, self.pay_to, self.max_timeout_seconds, extra
        )

    async def refresh(self) -> None:
        """Before a challenge is built: read the latest blockhash if the one known is stale,
        so that ``requirements`` can offer it (``extra.recentBlockhash``)."""
        if self.embedded is not None:
            try:
                await self.embedded.refresh_blockhash()
            except (RpcUnavailable, RpcError) as exc:  # the challenge goes out without the hint
                log.warning("cannot read %s's latest blockhash: %s", self.network, exc)

    async def verify(self, payment: PaymentPayload, requirements: PaymentRequirements) -> VerifiedPayment:
        embedded = self.embedded
        if embedded is not None:
            checked = embedded.check(payment, requirements)
            try:
                await embedded.preflight(checked, payment.accepted.extra if payment.accepted else None)
                await embedded.reserve(checked)
            except (RpcUnavailable, RpcError) as exc:  # fail closed: nothing is served unverified, nothing charged
                raise chain_unavailable(self.network, exc) from None
            self._held[checked.payment_id] = checked
        else:
            checked = check_transaction(payment, requirements, {self.fee_payer}, **self._limits)
            await verify_remotely(self.facilitator, payment, requirements, c.ERR_INVALID_PAYLOAD)
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
        checked = self._held.get(payment.payment_id)
        if checked is None:  # recovered from the outbox (another process verified it): check it again
            try:
                checked = embedded.check(payment.payload, payment.requirements)
            except PaymentRejected as exc:  # e.g. its fee payer is no longer one of this router's keys
                return SettlementResponse(False, self.network, "", payment.payer, exc.code, errorMessage=exc.message)
        response = await embedded.submit(checked)
        if response.success and self._held.pop(payment.payment_id, None) is not None:
            embedded.book.spent(checked.source, checked.amount)
        return response  # a failure is released once, by the settler

    def release(self, payment: VerifiedPayment) -> None:
        """The request failed: its reservation goes back to the payer's available balance."""
        checked = self._held.pop(payment.payment_id, None)
        if self.embedded is not None and checked is not None:  # a recovered payment was never reserved here
            self.embedded.book.release(checked.source, checked.amount)

    async def aclose(self) -> None:
        close: Any = getattr(self.facilitator, "aclose", None)
        if close is not None:
            await close()
        if self.embedded is not None:
            await self.embedded.rpc.aclose()

    def __repr__(self) -> str:
        return f"<ExactSvmRail {self.network} payTo={self.pay_to}>"
