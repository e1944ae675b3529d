"""The embedded EVM facilitator: the router's own key settles on chain.

:class:`BalanceBook` keeps each payer's token balance, read from the chain
once and cached, minus the payments of that payer that are verified but not yet
settled (*reservations*). Verifying a payment therefore costs no chain round
trip once the payer is known, yet two concurrent payments cannot both spend
the same balance. A refusal for lack of funds re-reads the chain first, so a
payer who topped up is not refused on a stale figure.

:class:`EmbeddedEvmFacilitator` implements the x402 facilitator calls
(:class:`clawrouter.facilitator.Facilitator`) for one network; the rail uses it
directly, and ``[payments] serve_facilitator`` exposes it to other x402
servers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..facilitator import SupportedKind, SupportedResponse, VerifyResponse
from ..payments import PaymentPayload, PaymentRejected, PaymentRequirements, SettlementResponse
from .chain import ChainError, EvmChain, revert_reason
from .exact import CheckedPayment, check_payment
from .networks import EvmNetwork

__all__ = ["BalanceBook", "EmbeddedEvmFacilitator"]


class BalanceBook:
    """Cached balances with per-payer in-flight reservations (process-local)."""

    def __init__(self, chain: EvmChain, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.chain = chain
        self.ttl = ttl
        self.clock = clock
        self._balances: dict[str, tuple[int, float]] = {}
        self._reserved: dict[str, int] = {}
        self._refreshing = asyncio.Lock()  # chain reads go one at a time (one worker thread anyway)

    async def _refresh(self, payer: str) -> int:
        balance = await self.chain.balance_of(payer)
        now = self.clock()
        if len(self._balances) >= 10_000:  # bounded: forget stale payers with nothing in flight
            self._balances = {
                p: v for p, v in self._balances.items() if now - v[1] <= self.ttl or p in self._reserved
            }
        self._balances[payer] = (balance, now)
        return balance

    async def available(self, payer: str, *, fresh: bool = False) -> int:
        cached = self._balances.get(payer)
        if fresh or cached is None or self.clock() - cached[1] > self.ttl:
            balance = await self._refresh(payer)
        else:
            balance = cached[0]
        return balance - self._reserved.get(payer, 0)

    async def covers(self, payer: str, amount: int) -> bool:
        """Whether ``payer`` holds ``amount`` beyond its reservations; a cached figure
        that falls short is read again from the chain before saying no."""
        cached = self._balances.get(payer)
        if (
            cached is not None
            and self.clock() - cached[1] <= self.ttl
            and cached[0] - self._reserved.get(payer, 0) >= amount
        ):
            return True  # the hot path: no await, no chain
        async with self._refreshing:
            return await self.available(payer, fresh=True) >= amount

    async def reserve(self, payer: str, amount: int) -> bool:
        """Hold ``amount`` of ``payer``'s balance for a payment in flight; ``False`` if it lacks it."""
        if not await self.covers(payer, amount):
            return False
        self._reserved[payer] = self._reserved.get(payer, 0) + amount  # no await since covers(): atomic
        return True

    def release(self, payer: str, amount: int) -> None:
        left = self._reserved.get(payer, 0) - amount
        if left > 0:
            self._reserved[payer] = left
        else:
            self._reserved.pop(payer, None)

    def spent(self, payer: str, amount: int) -> None:
        """A reserved payment was settled: the balance went down by ``amount``."""
        self.release(payer, amount)
        cached = self._balances.get(payer)
        if cached is not None:
            self._balances[payer] = (cached[0] - amount, cached[1])


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
