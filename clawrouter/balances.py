"""Payers' balances, cached, minus the payments they have in flight.

A :class:`BalanceBook` keeps each holder's token balance, read from the chain
once and cached for ``ttl`` seconds, minus the payments of that holder that are
verified but not yet settled (*reservations*). Verifying a payment therefore
costs no chain round trip once the holder is known, yet two concurrent payments
cannot both spend the same balance. A refusal for lack of funds re-reads the
chain first, so a payer who topped up is not refused on a stale figure.

Rails of any chain use it: the source is anything with an async
``balance_of(holder) -> int`` (an EVM token contract, a Solana token account).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["BalanceBook", "BalanceSource"]


class BalanceSource(Protocol):
    async def balance_of(self, holder: str) -> int:
        """The holder's balance in atomic units, read from the chain."""
        ...


class BalanceBook:
    """Cached balances with per-holder in-flight reservations (process-local)."""

    def __init__(self, chain: BalanceSource, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
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
