"""The ``exact`` scheme on Solana, without a network: build a payment, check one.

A payment is a partially signed versioned transaction (x402 SVM spec): the
client signs as the token authority and leaves signature slot 0, the fee
payer's, empty for the facilitator (here: the router's Solana key) to fill.

:func:`build_transfer` is the client half: SetComputeUnitLimit,
SetComputeUnitPrice, SPL ``TransferChecked`` of exactly the amount to the
associated token account of ``payTo``, and a Memo (``extra.memo`` or a random
16-byte nonce, hex-encoded, so identical payments stay distinct transactions).

:func:`check_transaction` is every rule of the spec that needs no chain:
instruction layout and order, compute unit price cap, token program (Token or
Token-2022), mint, destination ATA, amount equality, memo rules, the signature
of every signer but the fee payer, and the fee payer's safety: it must be the
one the requirements name and one this router manages, it may not be the
transfer authority, and it may appear in no instruction's accounts (so it can
only ever pay the fee). Each refusal is a
:class:`~clawrouter.payments.PaymentRejected` whose ``code`` is the reason the
x402 reference implementations answer with. Blockhash validity, balances and
replays need the chain and are the facilitator's.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Collection
from dataclasses import dataclass

from solders.hash import Hash
from solders.instruction import AccountMeta, CompiledInstruction, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import SanitizeError, VersionedTransaction

from clawrouter.payments import PaymentPayload, PaymentRejected, PaymentRequirements

from . import constants as c
from .accounts import associated_token_address

__all__ = [
    "CheckedTransfer",
    "build_transfer",
    "check_transaction",
    "cosign",
    "decode_transaction",
    "encode_transaction",
    "message_bytes",
]

_COMPUTE_BUDGET = Pubkey.from_string(c.COMPUTE_BUDGET_PROGRAM)
_MEMO = Pubkey.from_string(c.MEMO_PROGRAM)
_OPTIONAL = frozenset({c.MEMO_PROGRAM, c.LIGHTHOUSE_PROGRAM})
_UNKNOWN_OPTIONAL = (c.ERR_UNKNOWN_FOURTH, c.ERR_UNKNOWN_FIFTH, c.ERR_UNKNOWN_SIXTH)
_MAX_TRANSACTION_BYTES = 1232  # a Solana packet


@dataclass(frozen=True)
class CheckedTransfer:
    """A payment transaction that passed every local rule."""

    transaction: VersionedTransaction
    payer: str  # the transfer authority (the token owner who signed)
    fee_payer: str
    source: str  # the payer's token account
    destination: str
    mint: str
    token_program: str
    amount: int
    decimals: int
    blockhash: str

    @property
    def payment_id(self) -> str:
        """The payer's signature: unique to this transaction (a new blockhash or memo is a new payment)."""
        return str(self.transaction.signatures[self._payer_slot])

    @property
    def _payer_slot(self) -> int:
        keys = self.transaction.message.account_keys
        return next(i for i, k in enumerate(keys) if str(k) == self.payer)


def message_bytes(message: MessageV0) -> bytes:
    """The bytes a signer signs: a v0 message is prefixed with its version byte (0x80)."""
    return b"\x80" + bytes(message)


def encode_transaction(tx: VersionedTransaction) -> str:
    return base64.b64encode(bytes(tx)).decode("ascii")


def decode_transaction(value: object) -> VersionedTransaction:
    if not isinstance(value, str) or not value:
        raise PaymentRejected("payload.transaction must be a base64 string", code=c.ERR_DECODE)
    if len(value) > _MAX_TRANSACTION_BYTES * 2:
        raise PaymentRejected("payload.transaction is longer than a Solana transaction", code=c.ERR_DECODE)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PaymentRejected(f"payload.transaction is not base64: {exc}", code=c.ERR_DECODE) from None
    if len(raw) > _MAX_TRANSACTION_BYTES:
        raise PaymentRejected(
            f"payload.transaction is {len(raw)} bytes; a Solana transaction is at most {_MAX_TRANSACTION_BYTES}",
            code=c.ERR_DECODE,
        )
    try:
        return VersionedTransaction.from_bytes(raw)
    except ValueError as exc:
        raise PaymentRejected(
            f"payload.transaction is not a serialized transaction: {exc}", code=c.ERR_DECODE
        ) from None


def build_transfer(
    requirements: PaymentRequirements,
    owner: Keypair,
    *,
    blockhash: Hash | str,
    decimals: int,
    token_program: str = c.TOKEN_PROGRAM,
    memo: bytes | None = None,
    unit_price: int = c.DEFAULT_COMPUTE_UNIT_PRICE,
    unit_limit: int = c.DEFAULT_COMPUTE_UNIT_LIMIT,
) -> VersionedTransaction:
    """The client's payment for ``requirements``: a v0 transaction signed by ``owner``
    as token authority, with the fee payer (``extra.feePayer``) slot left empty."""
    extra = requirements.extra or {}
    fee_payer = extra.get("feePayer")
    if not isinstance(fee_payer, str) or not fee_payer:
        raise ValueError("the requirements name no fee payer (extra.feePayer)")
    if memo is None:
        wanted = extra.get("memo")
        if isinstance(wanted, str) and wanted:
            memo = wanted.encode()
            if len(memo) > c.MAX_MEMO_BYTES:
                raise ValueError(f"extra.memo is longer than {c.MAX_MEMO_BYTES} bytes")
        else:
            memo = binascii.hexlify(os.urandom(c.MEMO_NONCE_BYTES))
    mint = requirements.asset
    authority = owner.pubkey()  # derived from the secret on each call (~25 µs): once per transaction
    source = associated_token_address(str(authority), mint, token_program)
    destination = associated_token_address(requirements.payTo, mint, token_program)
    amount = int(requirements.amount)
    instructions = [
        Instruction(_COMPUTE_BUDGET, bytes([c.SET_COMPUTE_UNIT_LIMIT]) + unit_limit.to_bytes(4, "little"), []),
        Instruction(_COMPUTE_BUDGET, bytes([c.SET_COMPUTE_UNIT_PRICE]) + unit_price.to_bytes(8, "little"), []),
        Instruction(
            Pubkey.from_string(token_program),
            bytes([c.TRANSFER_CHECKED]) + amount.to_bytes(8, "little") + bytes([decimals]),
            [
                AccountMeta(Pubkey.from_string(source), is_signer=False, is_writable=True),
                AccountMeta(Pubkey.from_string(mint), is_signer=False, is_writable=False),
                AccountMeta(Pubkey.from_string(destination), is_signer=False, is_writable=True),
                AccountMeta(authority, is_signer=True, is_writable=False),
            ],
        ),
        Instruction(_MEMO, memo, []),
    ]
    recent = blockhash if isinstance(blockhash, Hash) else Hash.from_string(blockhash)
    message = MessageV0.try_compile(Pubkey.from_string(fee_payer), instructions, [], recent)
    signed = owner.sign_message(message_bytes(message))
    keys = message.account_keys
    signatures = [signed if keys[i] == authority else Signature.default() for i in range(len(keys))]
    return VersionedTransaction.populate(message, signatures[: message.header.num_required_signatures])


def cosign(tx: VersionedTransaction, fee_payer: Keypair) -> VersionedTransaction:
    """``tx`` with the fee payer's signature in slot 0 (ed25519 is deterministic: the
    same transaction, hence the same transaction id, however often it is co-signed)."""
    message = tx.message
    signatures = list(tx.signatures)
    signatures[0] = fee_payer.sign_message(message_bytes(message))  # type: ignore[arg-type]
    return VersionedTransaction.populate(message, signatures)


def _reject(reason: str, message: str) -> PaymentRejected:
    return PaymentRejected(message, code=reason)


def check_transaction(
    payment: PaymentPayload,
    requirements: PaymentRequirements,
    managed: Collection[str],
    *,
    max_unit_price: int = c.MAX_COMPUTE_UNIT_PRICE,
    max_unit_limit: int = c.MAX_COMPUTE_UNIT_LIMIT,
    max_priority_fee: int = c.MAX_PRIORITY_FEE_LAMPORTS,
) -> CheckedTransfer:
    """Check ``payment`` against ``requirements`` (see the module docstring);
    ``managed`` holds the fee-payer keys this router (or facilitator) signs with.

    The fee payer pays the base fee per signature and ``unit price x unit limit``
    (the priority fee), so besides the spec's price cap the limit and the priority
    fee (in lamports) are capped, and exactly two signers are accepted."""
    if requirements.scheme != "exact":
        raise _reject("unsupported_scheme", f"scheme {requirements.scheme!r} is not 'exact'")
    fee_payer = (requirements.extra or {}).get("feePayer")
    if not isinstance(fee_payer, str) or not fee_payer:
        raise _reject(c.ERR_MISSING_FEE_PAYER, "the requirements name no fee payer (extra.feePayer)")
    if fee_payer not in managed:
        raise _reject(c.ERR_FEE_PAYER_NOT_MANAGED, f"fee payer {fee_payer} is not a key this facilitator signs with")
    for name, value in (("payTo", requirements.payTo), ("asset", requirements.asset)):
        try:
            Pubkey.from_string(value)
        except ValueError:
            raise _reject(
                c.ERR_INVALID_REQUIREMENTS, f"requirements.{name} {value!r} is not a Solana address"
            ) from None
    tx = decode_transaction(payment.payload.get("transaction"))
    message = tx.message
    if not isinstance(message, MessageV0):
        raise _reject(c.ERR_INVALID_PAYLOAD, "the payment must be a versioned (v0) transaction")
    if message.address_table_lookups:
        raise _reject(c.ERR_INVALID_PAYLOAD, "address lookup tables are not accepted: every account must be listed")
    keys = [str(k) for k in message.account_keys]
    header = message.header
    signers = header.num_required_signatures
    if not keys or signers < 1 or len(tx.signatures) != signers or signers > len(keys):
        raise _reject(c.ERR_INVALID_PAYLOAD, "the transaction's signatures do not match its signers")
    if len(set(keys)) != len(keys):
        # Solana refuses such a message (AccountLoadedTwice); refusing it here also keeps every
        # rule below sound, since each compares account indexes (the fee payer is index 0 only)
        raise _reject(c.ERR_INVALID_PAYLOAD, "an account is listed twice in the message")
    try:
        tx.sanitize()  # Solana's own structural rules: header counts (a writable fee payer), indices
    except SanitizeError as exc:
        raise _reject(c.ERR_INVALID_PAYLOAD, f"the transaction is malformed: {exc}") from None
    if keys[0] != fee_payer:
        raise _reject(c.ERR_FEE_PAYER_MISMATCH, f"the transaction's fee payer is {keys[0]}, not {fee_payer}")
    instructions = list(message.instructions)
    if not 3 <= len(instructions) <= 6:
        raise _reject(c.ERR_INSTRUCTION_COUNT, f"{len(instructions)} instructions; the scheme allows 3 to 6")
    for ix in instructions:
        if ix.program_id_index >= len(keys) or any(a >= len(keys) for a in bytes(ix.accounts)):
            raise _reject(c.ERR_INVALID_PAYLOAD, "an instruction refers to an account the message does not list")
    _check_compute(keys, instructions[0], instructions[1], max_unit_price, max_unit_limit, max_priority_fee)
    transfer = instructions[2]
    token_program = keys[transfer.program_id_index]
    if token_program not in c.TOKEN_PROGRAMS:
        raise _reject(c.ERR_NO_TRANSFER, f"the third instruction runs {token_program}, not an SPL token program")
    data = bytes(transfer.data)
    accounts = bytes(transfer.accounts)
    if len(data) != 10 or data[0] != c.TRANSFER_CHECKED or len(accounts) != 4:
        raise _reject(c.ERR_NOT_TRANSFER_CHECKED, "the third instruction is not an SPL TransferChecked")
    source, mint, destination, authority = (keys[i] for i in accounts)
    memos = _check_optional(keys, instructions[3:])
    if authority in managed or source in {associated_token_address(k, mint, token_program) for k in managed}:
        raise _reject(c.ERR_FEE_PAYER_TRANSFERRING, "the transfer moves funds of a fee-payer key of this facilitator")
    if any(ix.program_id_index == 0 or 0 in bytes(ix.accounts) for ix in instructions):
        raise _reject(
            c.ERR_FEE_PAYER_IN_ACCOUNTS, "the fee payer appears in an instruction's accounts: it may only pay the fee"
        )
    if authority not in keys[1:signers]:
        raise _reject(c.ERR_MISSING_SIGNATURE, "the transfer authority is not a signer of the transaction")
    if signers != 2:  # each signature is a base fee the fee payer would pay
        raise _reject(c.ERR_INVALID_PAYLOAD, f"{signers} signers; only the fee payer and the token authority may sign")
    if mint != requirements.asset:
        raise _reject(c.ERR_MINT_MISMATCH, f"the transfer moves mint {mint}, not {requirements.asset}")
    expected = associated_token_address(requirements.payTo, requirements.asset, token_program)
    if destination != expected:
        raise _reject(
            c.ERR_RECIPIENT_MISMATCH,
            f"the transfer goes to {destination}, not {expected} (the token account of {requirements.payTo})",
        )
    amount = int.from_bytes(data[1:9], "little")
    if str(amount) != requirements.amount:
        raise _reject(
            c.ERR_AMOUNT_MISMATCH, f"the transfer moves {amount} units; the requirements ask {requirements.amount}"
        )
    wanted = (requirements.extra or {}).get("memo")
    if isinstance(wanted, str) and wanted:
        if len(memos) != 1:
            raise _reject(c.ERR_MEMO_COUNT, f"{len(memos)} memo instructions; exactly one must carry extra.memo")
        if memos[0] != wanted.encode():
            raise _reject(c.ERR_MEMO_MISMATCH, "the memo differs from extra.memo")
    _check_signatures(tx, keys, signers)
    return CheckedTransfer(
        tx,
        authority,
        fee_payer,
        source,
        destination,
        mint,
        token_program,
        amount,
        data[9],
        str(message.recent_blockhash),
    )


def _check_compute(
    keys: list[str], limit: CompiledInstruction, price: CompiledInstruction, cap: int, limit_cap: int, fee_cap: int
) -> None:
    data = bytes(limit.data)
    if (
        keys[limit.program_id_index] != c.COMPUTE_BUDGET_PROGRAM
        or len(data) != 5
        or data[0] != c.SET_COMPUTE_UNIT_LIMIT
    ):
        raise _reject(c.ERR_COMPUTE_LIMIT, "the first instruction must be ComputeBudget SetComputeUnitLimit")
    units = int.from_bytes(data[1:5], "little")
    if units > limit_cap:
        raise _reject(c.ERR_COMPUTE_LIMIT_TOO_HIGH, f"compute unit limit {units} is above the cap of {limit_cap}")
    data = bytes(price.data)
    if (
        keys[price.program_id_index] != c.COMPUTE_BUDGET_PROGRAM
        or len(data) != 9
        or data[0] != c.SET_COMPUTE_UNIT_PRICE
    ):
        raise _reject(c.ERR_COMPUTE_PRICE, "the second instruction must be ComputeBudget SetComputeUnitPrice")
    micro_lamports = int.from_bytes(data[1:9], "little")
    if micro_lamports > cap:
        raise _reject(
            c.ERR_COMPUTE_PRICE_TOO_HIGH,
            f"compute unit price {micro_lamports} micro-lamports is above the cap of {cap}",
        )
    priority_fee = -(-micro_lamports * units // 1_000_000)  # lamports, rounded up as Solana does
    if priority_fee > fee_cap:
        raise _reject(
            c.ERR_COMPUTE_PRICE_TOO_HIGH,
            f"a priority fee of {priority_fee} lamports (price x limit) is above the cap of {fee_cap}",
        )


def _check_optional(keys: list[str], optional: list[CompiledInstruction]) -> list[bytes]:
    """Instructions 4 and 5 may be Lighthouse or Memo, the 6th only Memo (the spec's layout)."""
    memos = []
    for position, ix in enumerate(optional):
        program = keys[ix.program_id_index]
        allowed = _OPTIONAL if position < 2 else {c.MEMO_PROGRAM}
        if program not in allowed:
            wanted = "Memo or Lighthouse" if position < 2 else "Memo"
            raise _reject(_UNKNOWN_OPTIONAL[position], f"instruction {position + 4} runs {program}, not {wanted}")
        if program == c.MEMO_PROGRAM:
            memos.append(bytes(ix.data))
    return memos


def _check_signatures(tx: VersionedTransaction, keys: list[str], signers: int) -> None:
    """Every required signature but the fee payer's (slot 0) must be present and valid."""
    results = tx.verify_with_results()
    for slot in range(1, signers):
        if tx.signatures[slot] == Signature.default() or not results[slot]:
            raise _reject(c.ERR_MISSING_SIGNATURE, f"the signature of {keys[slot]} is missing or invalid")
