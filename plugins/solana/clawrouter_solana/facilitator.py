"""The embedded Solana facilitator: the router's Solana key pays the fee and settles.

Verification (:meth:`EmbeddedSvmFacilitator.preflight`) runs the local rules of
:func:`~clawrouter_solana.exact.check_transaction`, then **one** JSON-RPC batch:
whether the transaction already landed (a replay), the block height and the
latest blockhash (the payment's blockhash must outlive the call it pays for,
:class:`Blockhashes`), and the simulation of the co-signed transaction
(signatures, the blockhash, the source account funded and existing). Balances
are held in a :class:`~clawrouter.balances.BalanceBook` keyed by the payer's
token account, so concurrent payments cannot spend the same funds.

Settlement (:meth:`EmbeddedSvmFacilitator.submit`) co-signs, sends and
confirms. It is idempotent: a transaction that already landed is reported as
settled, so the settler may retry after a timeout. The x402 facilitator call
:meth:`EmbeddedSvmFacilitator.settle` (served to other x402 servers) adds the
spec's duplicate-settlement guard: a transaction being settled, settled in
the last two minutes, or found on chain is refused with
``duplicate_settlement`` (unless this process sent it and its caller never
heard back), and it sponsors transfers of its own asset only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
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
from .rpc import RpcError, RpcUnavailable, SolanaRpc, shown_url

__all__ = ["Blockhashes", "EmbeddedSvmFacilitator", "TokenAccounts", "simulation_reason"]

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


class Blockhashes:
    """The blockhashes this facilitator has read from its node, with their ``lastValidBlockHeight``.

    A Solana transaction carries no expiry of its own: it can land while its
    blockhash is among the last 150, and nothing in it says how old that blockhash
    is. Knowing the blockhashes it read (and handed out as ``extra.recentBlockhash``)
    lets the facilitator refuse a payment that would expire before the call it
    pays for is over. The latest one read is the hint challenges offer; a hint is
    signed (``extra.blockhashProof``, an HMAC under a key derived from the fee
    payer's) so that a replica that never read it can still trust its height.
    """

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.monotonic, keep: int = 1024) -> None:
        self._key = hashlib.sha256(b"clawrouter-solana/blockhash-hint/v1" + secret).digest()
        self.clock = clock
        self.keep = keep
        self._valid: dict[str, int] = {}
        self.latest: tuple[str, int, float] | None = None  # (blockhash, last valid height, read at)

    def saw(self, blockhash: str, last_valid: int) -> None:
        self._valid[blockhash] = last_valid
        if len(self._valid) > self.keep:  # oldest first (insertion order)
            for old in list(self._valid)[: len(self._valid) - self.keep]:
                del self._valid[old]
        self.latest = (blockhash, last_valid, self.clock())

    def proof(self, blockhash: str, last_valid: int) -> str:
        return hmac.new(self._key, f"{blockhash}:{last_valid}".encode(), hashlib.sha256).hexdigest()[:32]

    def last_valid(self, blockhash: str, claimed: dict[str, Any] | None = None) -> int | None:
        """``blockhash``'s last valid height: read by this process, or vouched for by a signed
        hint in ``claimed`` (the ``extra`` the payment echoes); ``None`` when unknown."""
        known = self._valid.get(blockhash)
        if known is not None or not claimed or claimed.get("recentBlockhash") != blockhash:
            return known
        height, proof = claimed.get("lastValidBlockHeight"), claimed.get("blockhashProof")
        try:
            height = int(str(height))
        except ValueError:
            return None
        if isinstance(proof, str) and hmac.compare_digest(proof, self.proof(blockhash, height)):
            return height
        return None

    def hint(self, max_age: float) -> dict[str, Any]:
        """``extra`` fields offering the latest blockhash, if it was read within ``max_age`` seconds."""
        if self.latest is None or self.clock() - self.latest[2] > max_age:
            return {}
        blockhash, last_valid, _ = self.latest
        return {
            "recentBlockhash": blockhash,
            "lastValidBlockHeight": str(last_valid),
            "blockhashProof": self.proof(blockhash, last_valid),
        }


class EmbeddedSvmFacilitator:
    """Verify and settle the ``exact`` scheme on one Solana network with the router's key(s).

    :param fee_payers: the keys that pay transaction fees (the first is offered in
        ``extra.feePayer``; all are refused as transfer authorities).
    :param simulate: simulate each payment at verification. Either way one RPC
        batch per paid request looks the transaction up (a replay), reads the
        block height and the latest blockhash; without simulation a payer short of
        funds is only caught by the balance cache, a bad account at settlement.
    :param min_blockhash_slots: slots the payment's blockhash must still live at
        verification (~0.4 s each): the call and its settlement must fit in them.
    :param unknown_blockhash: ``"refuse"`` (default) a blockhash this facilitator
        has not read nor signed as a hint (its age cannot be known), or ``"accept"``
        it (a payer could then sign with one about to expire: the call is served,
        its settlement fails).
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
        max_unit_limit: int = c.MAX_COMPUTE_UNIT_LIMIT,
        max_priority_fee: int = c.MAX_PRIORITY_FEE_LAMPORTS,
        min_blockhash_slots: int = c.MIN_BLOCKHASH_SLOTS,
        unknown_blockhash: str = "refuse",
        asset: str | None = None,
        confirm_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if unknown_blockhash not in ("refuse", "accept"):
            raise ValueError(f"unknown_blockhash must be 'refuse' or 'accept', not {unknown_blockhash!r}")
        if not fee_payers:
            raise ValueError("an embedded Solana facilitator needs at least one fee-payer key")
        self.network = network
        self.rpc = rpc
        self.keys = {str(k.pubkey()): k for k in fee_payers}
        self.fee_payer = str(fee_payers[0].pubkey())
        self.simulate = simulate
        self.max_unit_price = max_unit_price
        self.max_unit_limit = max_unit_limit
        self.max_priority_fee = max_priority_fee
        self.min_blockhash_slots = min_blockhash_slots
        self.unknown_blockhash = unknown_blockhash
        #: the only mint this facilitator sponsors fees for (the served API included)
        self.asset = asset or network.usdc
        self.confirm_timeout = confirm_timeout
        self.book = BalanceBook(TokenAccounts(rpc), balance_ttl)
        self.blockhashes = Blockhashes(bytes(fee_payers[0]), clock)
        self._refreshing = asyncio.Lock()
        self.clock = clock
        self._settling: set[str] = set()
        self._settled: dict[str, float] = {}  # payment id -> when (the duplicate-settlement guard)
        self._sent: dict[str, float] = {}  # payment id -> when this process sent it
        self._cosigned: dict[str, tuple[str, str]] = {}  # payment id -> (signed transaction, its id)

    def __repr__(self) -> str:
        return f"<EmbeddedSvmFacilitator {self.network.network} feePayer={self.fee_payer}>"

    def check(self, payload: PaymentPayload, requirements: PaymentRequirements) -> CheckedTransfer:
        if requirements.asset != self.asset:
            raise PaymentRejected(
                f"this facilitator sponsors transfers of {self.asset} only, not {requirements.asset}",
                code=c.ERR_INVALID_REQUIREMENTS,
            )
        return check_transaction(
            payload,
            requirements,
            self.keys,
            max_unit_price=self.max_unit_price,
            max_unit_limit=self.max_unit_limit,
            max_priority_fee=self.max_priority_fee,
        )

    async def refresh_blockhash(self, max_age: float = c.BLOCKHASH_HINT_SECONDS) -> None:
        """Read the latest blockhash if the one known is older than ``max_age`` seconds."""
        if self.blockhashes.hint(max_age):
            return
        async with self._refreshing:  # one read however many challenges wait for it
            if not self.blockhashes.hint(max_age):
                self.blockhashes.saw(*await self.rpc.latest_blockhash())

    def signed(self, checked: CheckedTransfer) -> tuple[str, str]:
        """The transaction with the fee payer's signature (base64), and its id: that
        signature, the same however often it is signed (ed25519 is deterministic), so it is
        signed once, at verification, and reused at settlement."""
        found = self._cosigned.get(checked.payment_id)
        if found is None:
            if len(self._cosigned) >= 10_000:  # bounded: a payment settles within minutes of its verification
                self._cosigned.clear()
            tx = cosign(checked.transaction, self.keys[checked.fee_payer])
            found = self._cosigned[checked.payment_id] = (encode_transaction(tx), str(tx.signatures[0]))
        return found

    async def preflight(self, checked: CheckedTransfer, claimed: dict[str, Any] | None = None) -> None:
        """One RPC batch: look the transaction up (a replay), read the block height and the
        latest blockhash, and (with ``simulate``) simulate it co-signed. ``claimed`` is the
        ``extra`` the payment echoes (a signed blockhash hint). Raises :class:`PaymentRejected`,
        or :class:`RpcUnavailable` when the node fails."""
        transaction, tx_id = self.signed(checked)
        rpc = self.rpc
        calls = [rpc.statuses_call([tx_id], history=True), rpc.blockhash_call(), ("getBlockHeight", [])]
        if self.simulate:
            calls.append(rpc.simulate_call(transaction))
        answers = await rpc.batch(calls)
        for answer in answers:
            if isinstance(answer, RpcError):
                raise RpcUnavailable(f"Solana RPC {shown_url(rpc.url)}: {answer}")
        try:
            landed = answers[0]["value"][0]
            self.blockhashes.saw(*rpc.blockhash_result(answers[1]))
            height = int(answers[2])
            error = answers[3]["value"].get("err") if self.simulate else None
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise RpcUnavailable(f"Solana RPC {shown_url(rpc.url)}: an answer of an unexpected shape") from None
        if landed is not None:
            raise PaymentRejected("this transaction was already settled", code=c.ERR_DUPLICATE_SETTLEMENT)
        if error is not None:
            reason, message = simulation_reason(error)
            raise PaymentRejected(message, code=reason)
        last_valid = self.blockhashes.last_valid(checked.blockhash, claimed)
        if last_valid is None:
            if self.unknown_blockhash == "refuse":
                raise PaymentRejected(
                    f"blockhash {checked.blockhash} is not one this router handed out or read, so its age is "
                    "unknown; sign with the challenge's extra.recentBlockhash",
                    code=c.ERR_BLOCKHASH_UNKNOWN,
                )
        elif last_valid - height < self.min_blockhash_slots:
            raise PaymentRejected(
                f"the transaction's blockhash expires in {max(last_valid - height, 0)} slots; the call and its "
                f"settlement need {self.min_blockhash_slots}: sign with the challenge's extra.recentBlockhash",
                code=c.ERR_BLOCKHASH_EXPIRING,
            )

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
            self._forget_old()
            self._sent[checked.payment_id] = self.clock()
            try:
                await self.rpc.send(transaction)
            except RpcError as exc:
                if exc.transaction_error is None and exc.code not in (-32602, -32003):
                    raise RpcUnavailable(f"Solana RPC {shown_url(self.rpc.url)}: {exc}") from None
                # refused (malformed, a bad signature, a failing preflight): unless an earlier
                # attempt is on chain (one last look, at any commitment), it failed: nothing charged
                if exc.transaction_error != "AlreadyProcessed" and await self._status(tx_id) is None:
                    reason, message = simulation_reason(exc.transaction_error or exc.message)
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

    def _forget_old(self) -> None:
        """Drop what the guards remember past a blockhash's life (after it, nothing can land)."""
        now = self.clock()
        for memory in (self._settled, self._sent):
            for key in [k for k, t in memory.items() if now - t >= c.SETTLEMENT_TTL_SECONDS]:
                del memory[key]

    async def _status(self, tx_id: str) -> dict[str, Any] | None:
        """The transaction's status at any commitment (``processed`` included), or ``None``."""
        try:
            status = (await self.rpc.statuses([tx_id], history=True))[0]
        except (KeyError, IndexError, TypeError):
            raise RpcUnavailable(
                f"Solana RPC {shown_url(self.rpc.url)}: getSignatureStatuses answer of an unexpected shape"
            ) from None
        return status if isinstance(status, dict) else None

    async def _landed(self, tx_id: str) -> dict[str, Any] | None:
        """The transaction's status once confirmed (or finalized), else ``None``."""
        status = await self._status(tx_id)
        if status is None or status.get("confirmationStatus") not in ("confirmed", "finalized"):
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
            # expired and nowhere on chain (at any commitment): it never will be
            if not await self.rpc.is_blockhash_valid(blockhash) and await self._status(tx_id) is None:
                return None
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
            await self.preflight(checked, payload.accepted.extra if payload.accepted else None)
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
        self._forget_old()
        if key in self._settling or key in self._settled:
            return SettlementResponse(False, network, "", checked.payer, c.ERR_DUPLICATE_SETTLEMENT)
        self._settling.add(key)
        try:
            try:
                await self.preflight(checked, payload.accepted.extra if payload.accepted else None)
            except PaymentRejected as exc:
                # on chain because this process sent it and its caller never heard back (a retry):
                # it is settled, and says so; anyone else's copy is a duplicate
                if not (exc.code == c.ERR_DUPLICATE_SETTLEMENT and key in self._sent):
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
