"""The embedded EVM facilitator: the router's own key settles on chain.

Payers' balances are kept by a :class:`~clawrouter.balances.BalanceBook`
(cached, minus the payments in flight), so verifying costs no chain round trip
once a payer is known. :class:`EmbeddedEvmFacilitator` implements the x402 facilitator calls
(:class:`clawrouter.facilitator.Facilitator`) for one network; the rail uses it
directly, and ``[payments] serve_facilitator`` exposes it to other x402
servers.
"""

from __future__ import annotations

from ..balances import BalanceBook
from ..facilitator import SupportedKind, SupportedResponse, VerifyResponse
from ..payments import PaymentPayload, PaymentRejected, PaymentRequirements, SettlementResponse
from .chain import ChainError, EvmChain, revert_reason
from .exact import CheckedPayment, check_payment
from .networks import EvmNetwork

__all__ = ["BalanceBook", "EmbeddedEvmFacilitator"]  # BalanceBook: re-exported from its old home


class EmbeddedEvmFacilitator:
    """Verify and settle the ``exact`` scheme on one EVM network with the router's key.

    :param simulate: also run ``transferWithAuthorization`` as an ``eth_call``
        on every verification (a chain round trip per request; off by default).
    """

    scheme = "exact"

    def __init__(
        self,
        network: EvmNetwork,
        chain: EvmChain,
        *,
        simulate: bool = False,
        balance_ttl: float = 30.0,
    ) -> None:
        self.network = network
        self.chain = chain
        self.simulate = simulate
        self.book = BalanceBook(chain, balance_ttl)

    def check(self, payload: PaymentPayload, requirements: PaymentRequirements) -> CheckedPayment:
        return check_payment(payload, requirements, self.network)

    async def simulate_or_raise(self, checked: CheckedPayment) -> None:
        reason = await self.chain.simulate(checked.authorization, checked.signature)
        if reason is not None:
            raise PaymentRejected(f"simulated transfer reverts: {reason}", code=revert_reason(reason))

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        payer: str | None = None
        try:
            checked = self.check(payload, requirements)
            payer = checked.payer
            if not await self.book.covers(payer, int(requirements.amount)):
                raise PaymentRejected("payer's balance is below the amount", code="insufficient_funds")
            if await self.chain.authorization_used(payer, bytes.fromhex(checked.authorization.nonce[2:])):
                raise PaymentRejected("authorization nonce already used", code="invalid_exact_evm_nonce_already_used")
            if self.simulate:
                await self.simulate_or_raise(checked)
        except PaymentRejected as exc:
            return VerifyResponse(False, exc.code, payer, exc.message)
        except ChainError as exc:
            return VerifyResponse(False, "unexpected_verify_error", payer, str(exc))
        return VerifyResponse(True, payer=checked.payer)

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettlementResponse:
        """Submit the transfer. Raises :class:`ChainError` when the node fails (retry later)."""
        try:
            checked = check_payment(payload, requirements, self.network, window=False)  # the chain judges time
        except PaymentRejected as exc:
            return SettlementResponse(False, self.network.network, "", None, exc.code)
        outcome = await self.chain.settle(checked.authorization, checked.signature)
        return SettlementResponse(
            outcome.success,
            self.network.network,
            outcome.transaction,
            checked.payer,
            outcome.error,
            None if outcome.error else requirements.amount,
        )

    async def supported(self) -> SupportedResponse:
        signers = [self.chain.key.address] if self.chain.key is not None else []
        return SupportedResponse(
            [SupportedKind(2, self.scheme, self.network.network)],
            [],
            {"eip155:*": signers},
        )
