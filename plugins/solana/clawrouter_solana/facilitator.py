"""The embedded Solana facilitator: the router's Solana key pays the fee and settles.

Verification (:meth:`EmbeddedSvmFacilitator.preflight`) runs the local rules of
:func:`~clawrouter_solana.exact.check_transaction`, then, in **one** JSON-RPC
batch, simulates the co-signed transaction (signatures verified, the
blockhash still valid, the source account funded and existing) and asks
whether the transaction already landed (a replay). Balances are held in a
:class:`~clawrouter.balances.BalanceBook` keyed by the payer's token account,
so concurrent payments cannot spend the same funds.

Settlement (:meth:`EmbeddedSvmFacilitator.submit`) co-signs, sends and
confirms. It is idempotent: a transaction that already landed is reported as
settled, so the settler may retry after a timeout. The x402 facilitator call
:meth:`EmbeddedSvmFacilitator.settle` (served to other x402 servers) adds the
spec's duplicate-settlement guard: a transaction being settled, settled in
the last two minutes, or found on chain is refused with
``duplicate_settlement``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from solders.keypair import Keypair

from clawrouter.balances import BalanceBook
from clawrouter.facilitator import SupportedKind, SupportedResponse, VerifyResponse
from clawrouter.payments import PaymentPayload, PaymentRejected, PaymentRequirements, SettlementResponse

from . import constants as c
from .exact import CheckedTransfer, check_transaction, cosign, encode_transaction
from .networks import SolanaNetwork
from .rpc import RpcError, RpcUnavailable, SolanaRpc

__all__ = ["EmbeddedSvmFacilitator", "TokenAccounts", "simulation_reason"]

log = logging.getLogger("clawrouter_solana")


class TokenAccounts:
    """Token account balances over RPC (a :class:`~clawrouter.balances.BalanceSource`)."""

    def __init__(self, rpc: SolanaRpc) -> None:
        self.rpc = rpc

    async def balance_of(self, holder: str) -> int:
        return await self.rpc.token_balance(holder)


def simulation_reason(error: Any) -> tuple[str, str]:
    """The x402 reason and a message for a transaction error from simulation or preflight."""
    if error == "BlockhashNotFound":
        return c.ERR_SIMULATION_FAILED, "the transaction's blockhash expired (BlockhashNotFound); sign it again"
    if error == "AlreadyProcessed":
        return c.ERR_DUPLICATE_SETTLEMENT, "this transaction was already processed"
    if error == "AccountNotFound":
        return c.ERR_SIMULATION_FAILED, "an account of the transaction does not exist (AccountNotFound)"
    if isinstance(error, dict) and "InstructionError" in error:
        index, detail = error["InstructionError"]
        if index == 2 and detail == {"Custom": 1}:  # spl-token TokenError::InsufficientFunds
            return c.ERR_INSUFFICIENT_FUNDS, "the payer's token account holds less than the amount"
        if index == 2 and detail in ("InvalidAccountData", "UninitializedAccount", "IncorrectProgramId"):
            return c.ERR_SENDER_ATA_NOT_FOUND, f"the transfer's token accounts are not usable ({detail})"
    return c.ERR_SIMULATION_FAILED, f"simulation failed: {error}"


class EmbeddedSvmFacilitator:
    """Verify and settle the ``exact`` scheme on one Solana network with the router's key(s).

    :param fee_payers: the keys that pay transaction fees (the first is offered in
        ``extra.feePayer``; all are refused as transfer authorities).
    :param simulate: simulate each payment at verification (one RPC round trip per
        paid request; without it an expired blockhash or a replay is only caught
        at settlement).
    """

    scheme = "exact"

    def __init__(
        self,
        network: SolanaNetwork,
        rpc: SolanaRpc,
        fee_payers: Sequence[Keypair],
        *,
        simulate: bool = True,
        balance_ttl: float = 30.0,
        max_unit_price: int = c.MAX_COMPUTE_UNIT_PRICE,
        confirm_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not fee_payers:
            raise ValueError("an embedded Solana facilitator needs at least one fee-payer key")
        self.network = network
        self.rpc = rpc
        self.keys = {str(k.pubkey()): k for k in fee_payers}
        self.fee_payer = str(fee_payers[0].pubkey())
        self.simulate = simulate
        self.max_unit_price = max_unit_price
        self.confirm_timeout = confirm_timeout
        self.book = BalanceBook(TokenAccounts(rpc), balance_ttl)
        self.clock = clock
        self._settling: set[str] = set()
        self._settled: dict[str, float] = {}  # payment id -> when (the duplicate-settlement guard)

    def __repr__(self) -> str:
        return f"<EmbeddedSvmFacilitator {self.network.network} feePayer={self.fee_payer}>"

    def check(self, payload: PaymentPayload, requirements: PaymentRequirements) -> CheckedTransfer:
        return check_transaction(payload, requirements, self.keys, max_unit_price=self.max_unit_price)

    def signed(self, checked: CheckedTransfer) -> tuple[str, str]:
        """The transaction with the fee payer's signature (base64), and its id: that
        signature, the same however often it is signed (ed25519 is deterministic)."""
        tx = cosign(checked.transaction, self.keys[checked.fee_payer])
        return encode_transaction(tx), str(tx.signatures[0])

    async def preflight(self, checked: CheckedTransfer) -> None:
        """Simulate the co-signed transaction and look for it on chain, in one round trip.
        Raises :class:`PaymentRejected`, or :class:`RpcUnavailable` when the node fails."""
        transaction, tx_id = self.signed(checked)
        simulation, statuses = await self.rpc.batch(
            [self.rpc.simulate_call(transaction), self.rpc.statuses_call([tx_id], history=True)]
        )
        for answer in (simulation, statuses):
            if isinstance(answer, RpcError):
                raise RpcUnavailable(f"Solana RPC {self.rpc.url}: {answer}")
        try:
            landed, error = statuses["value"][0], simulation["value"].get("err")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise RpcUnavailable(f"Solana RPC {self.rpc.url}: an answer of an unexpected shape") from None
        if landed is not None:
            raise PaymentRejected("this transaction was already settled", code=c.ERR_DUPLICATE_SETTLEMENT)
        if error is not None:
            reason, message = simulation_reason(error)
            raise PaymentRejected(message, code=reason)

    async def reserve(self, checked: CheckedTransfer) -> None:
        if not await self.book.reserve(checked.source, checked.amount):
            raise PaymentRejected(
                f"{checked.payer}'s token account holds less than {checked.amount} units not already committed "
                "to payments in flight",
                code=c.ERR_INSUFFICIENT_FUNDS,
            )

    async def submit(self, checked: CheckedTransfer) -> SettlementResponse:
        """Co-sign, send and confirm ``checked`` (idempotent: a transaction that already
        landed answers as settled). Raises :class:`RpcUnavailable` when the outcome is
        unknown (the node failed, or confirmation timed out): retry later."""
        transaction, tx_id = self.signed(checked)
        network = self.network.network
        landed = await self._landed(tx_id)
        if landed is None:
            try:
                await self.rpc.send(transaction)
            except RpcError as exc:
                if exc.transaction_error is None:
                    raise RpcUnavailable(f"Solana RPC {self.rpc.url}: {exc}") from None
                if exc.transaction_error != "AlreadyProcessed":
                    reason, message = simulation_reason(exc.transaction_error)
                    return SettlementResponse(False, network, "", checked.payer, reason, errorMessage=message)
            landed = await self._confirm(tx_id, checked.blockhash)
        if landed is None:
            return SettlementResponse(
                False,
                network,
                "",
                checked.payer,
                c.ERR_TRANSACTION_FAILED,
                errorMessage="the blockhash expired before the transaction landed",
            )
        error = landed.get("err")
        if error is not None:
            return SettlementResponse(
                False, network, tx_id, checked.payer, c.ERR_TRANSACTION_FAILED, errorMessage=f"failed on chain: {error}"
            )
        return SettlementResponse(True, network, tx_id, checked.payer, amount=str(checked.amount))

    async def _landed(self, tx_id: str) -> dict[str, Any] | None:
        try:
            status = (await self.rpc.statuses([tx_id], history=True))[0]
        except (KeyError, IndexError, TypeError):
            raise RpcUnavailable(
                f"Solana RPC {self.rpc.url}: getSignatureStatuses answer of an unexpected shape"
            ) from None
        if not isinstance(status, dict) or status.get("confirmationStatus") not in ("confirmed", "finalized"):
            return None
        return status

    async def _confirm(self, tx_id: str, blockhash: str) -> dict[str, Any] | None:
        """The transaction's status once confirmed; ``None`` once its blockhash expired unlanded."""
        deadline = self.clock() + self.confirm_timeout
        delay = 0.05
        while True:
            landed = await self._landed(tx_id)
            if landed is not None:
                return landed
            if not await self.rpc.is_blockhash_valid(blockhash):
                return await self._landed(tx_id)  # one last look: it may have landed meanwhile
            if self.clock() > deadline:
                raise RpcUnavailable(f"{tx_id} not confirmed within {self.confirm_timeout:.0f} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # --- the x402 facilitator calls (for [payments] serve_facilitator) -----------------

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        payer: str | None = None
        try:
            checked = self.check(payload, requirements)
            payer = checked.payer
            await self.preflight(checked)
            if not await self.book.covers(checked.source, checked.amount):
                raise PaymentRejected("the payer's token balance is below the amount", code=c.ERR_INSUFFICIENT_FUNDS)
        except PaymentRejected as exc:
            return VerifyResponse(False, exc.code, payer, exc.message)
        except RpcUnavailable as exc:
            return VerifyResponse(False, "unexpected_verify_error", payer, str(exc))
        return VerifyResponse(True, payer=payer)

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettlementResponse:
        """Verify again, then settle once: the duplicate-settlement guard of the spec."""
        network = self.network.network
        try:
            checked = self.check(payload, requirements)
        except PaymentRejected as exc:
            return SettlementResponse(False, network, "", None, exc.code, errorMessage=exc.message)
        key = checked.payment_id
        now = self.clock()
        self._settled = {k: t for k, t in self._settled.items() if now - t < c.SETTLEMENT_TTL_SECONDS}
        if key in self._settling or key in self._settled:
            return SettlementResponse(False, network, "", checked.payer, c.ERR_DUPLICATE_SETTLEMENT)
        self._settling.add(key)
        try:
            try:
                await self.preflight(checked)
            except PaymentRejected as exc:
                return SettlementResponse(False, network, "", checked.payer, exc.code, errorMessage=exc.message)
            response = await self.submit(checked)
            if response.success:
                self._settled[key] = self.clock()
            return response
        finally:
            self._settling.discard(key)

    async def supported(self) -> SupportedResponse:
        return SupportedResponse(
            [SupportedKind(2, self.scheme, self.network.network, {"feePayer": self.fee_payer})],
            [],
            {"solana:*": sorted(self.keys)},
        )
