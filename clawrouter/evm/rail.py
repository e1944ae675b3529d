"""The ``exact`` payment rail on an EVM network (EIP-3009 USDC).

:meth:`ExactEvmRail.verify` is on every paid request's path and touches no
chain by default: the payload checks and signature recovery are local, and
with the embedded facilitator the payer's balance comes from a cache with
in-flight reservations (:class:`~clawrouter.balances.BalanceBook`).
``simulate=True`` adds an ``eth_call`` of the transfer per request. With a
remote facilitator the local checks run first (a bad payment never costs a
round trip), then the facilitator's ``/verify``.
"""

from __future__ import annotations

from typing import Any

from ..facilitator import Facilitator, verify_remotely
from ..payments import (
    PaymentPayload,
    PaymentRejected,
    PaymentRequirements,
    SettlementResponse,
    VerifiedPayment,
    as_v2,
    chain_unavailable,
)
from .chain import ChainError
from .exact import CheckedPayment, check_payment
from .facilitator import EmbeddedEvmFacilitator
from .networks import EvmNetwork

__all__ = ["ExactEvmRail", "local_rail"]


class ExactEvmRail:
    scheme = "exact"

    def __init__(
        self,
        network: EvmNetwork,
        pay_to: str,
        facilitator: Facilitator,
        *,
        max_timeout_seconds: int = 60,
    ) -> None:
        self.evm = network
        self.network = network.network
        self.pay_to = pay_to
        self.facilitator = facilitator
        self.embedded = facilitator if isinstance(facilitator, EmbeddedEvmFacilitator) else None
        self.max_timeout_seconds = max_timeout_seconds
        self._extra: dict[str, Any] = {"name": network.name, "version": network.version}

    def requirements(self, amount: int, resource: str) -> PaymentRequirements:
        return PaymentRequirements(
            self.scheme,
            self.network,
            str(amount),
            self.evm.asset,
            self.pay_to,
            self.max_timeout_seconds,
            dict(self._extra),
        )

    async def verify(self, payment: PaymentPayload, requirements: PaymentRequirements) -> VerifiedPayment:
        embedded = self.embedded
        if embedded is not None:
            checked = embedded.check(payment, requirements)
            try:
                if embedded.simulate:
                    await embedded.simulate_or_raise(checked)
                reserved = await embedded.book.reserve(checked.payer, int(requirements.amount))
            except ChainError as exc:  # fail closed: nothing is served unverified, nothing charged
                raise chain_unavailable(self.network, exc) from None
            if not reserved:
                raise PaymentRejected(
                    f"{checked.payer} holds less than {requirements.amount} {self.evm.label or self.network} "
                    "USDC units not already committed to payments in flight",
                    code="insufficient_funds",
                )
        else:
            checked = check_payment(payment, requirements, self.evm)
            await verify_remotely(self.facilitator, payment, requirements, "invalid_payload")
        return self._verified(checked, payment, requirements)

    def _verified(
        self, checked: CheckedPayment, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> VerifiedPayment:
        return VerifiedPayment(
            self.scheme,
            self.network,
            checked.payer,
            int(requirements.amount),
            checked.payment_id,
            requirements,
            payment,
            expires=int(checked.authorization.validBefore),
        )

    async def settle(self, payment: VerifiedPayment, charge: int) -> SettlementResponse:
        """Settle the authorized amount (``exact`` charges what was signed; ``charge``
        is the actual cost, recorded by the ledger). Raises when the chain or the
        facilitator cannot be reached, so the caller retries."""
        response = await self.facilitator.settle(as_v2(payment.payload, payment.requirements), payment.requirements)
        if self.embedded is not None and response.success:
            self.embedded.book.spent(payment.payer, payment.amount)
        return response  # a failure is released once, by the settler

    def release(self, payment: VerifiedPayment) -> None:
        """The request failed: its reservation goes back to the payer's available balance."""
        if self.embedded is not None:
            self.embedded.book.release(payment.payer, payment.amount)

    async def aclose(self) -> None:
        close = getattr(self.facilitator, "aclose", None)
        if close is not None:
            await close()
        if self.embedded is not None:
            self.embedded.chain.close()

    def __repr__(self) -> str:
        return f"<ExactEvmRail {self.network} payTo={self.pay_to}>"


def local_rail(
    w3: Any,
    network: EvmNetwork,
    pay_to: str,
    key: Any,
    *,
    simulate: bool = False,
    balance_ttl: float = 30.0,
    max_timeout_seconds: int = 60,
) -> ExactEvmRail:
    """A rail settling with ``key`` over an existing ``web3.Web3`` (an in-process
    chain, or any node): for the demo, tests and programmatic set-ups."""
    from .chain import EvmChain

    chain = EvmChain(w3, network.asset, key=key)
    facilitator = EmbeddedEvmFacilitator(network, chain, simulate=simulate, balance_ttl=balance_ttl)
    return ExactEvmRail(network, pay_to, facilitator, max_timeout_seconds=max_timeout_seconds)
