"""The ``exact`` scheme's local checks (:mod:`clawrouter_solana.exact`), without a chain.

A payment built by :func:`build_transfer` passes :func:`check_transaction` and is read
back faithfully; every rule of the x402 SVM spec that needs no chain then gets a
transaction built by hand (solders) that breaks exactly that rule, and the test asserts
the x402 reason code the refusal carries. Sections:

* helpers: keys, requirements, instruction builders, compile-and-sign;
* valid payments (Token, Token-2022, optional instructions, cosign);
* decoding and transaction shape;
* requirements (scheme, fee payer);
* instruction layout and compute budget;
* fee-payer safety;
* transfer intent (mint, recipient, amount);
* memo;
* signatures;
* properties (hypothesis).
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Sequence
from typing import Any

import msgspec
import pytest
from clawrouter_solana import constants as c
from clawrouter_solana.accounts import associated_token_address
from clawrouter_solana.exact import (
    CheckedTransfer,
    build_transfer,
    check_transaction,
    cosign,
    decode_transaction,
    encode_transaction,
    message_bytes,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.hash import Hash
from solders.instruction import AccountMeta, CompiledInstruction, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageAddressTableLookup, MessageHeader, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction, VersionedTransaction

from clawrouter.payments import PaymentPayload, PaymentRejected, PaymentRequirements

# ---------------------------------------------------------------- helpers

FEE_PAYER = Keypair.from_seed(bytes([1]) * 32)  # the router's key, named in extra.feePayer
OTHER_MANAGED = Keypair.from_seed(bytes([2]) * 32)  # another key the same router signs with
OWNER = Keypair.from_seed(bytes([3]) * 32)  # the client: token authority
STRANGER = Keypair.from_seed(bytes([4]) * 32)
PAY_TO = str(Keypair.from_seed(bytes([5]) * 32).pubkey())
MINT = str(Keypair.from_seed(bytes([6]) * 32).pubkey())
OTHER_MINT = str(Keypair.from_seed(bytes([7]) * 32).pubkey())
FEE_PAYER_KEY = FEE_PAYER.pubkey()
OWNER_KEY = OWNER.pubkey()
MANAGED = frozenset({str(FEE_PAYER_KEY)})
BLOCKHASH = Hash(bytes(range(32)))
AMOUNT = 1000
DECIMALS = 6
NETWORK = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"

COMPUTE_BUDGET = Pubkey.from_string(c.COMPUTE_BUDGET_PROGRAM)
MEMO = Pubkey.from_string(c.MEMO_PROGRAM)
LIGHTHOUSE = Pubkey.from_string(c.LIGHTHOUSE_PROGRAM)
UNKNOWN_PROGRAM = Pubkey.from_string("Stake11111111111111111111111111111111111111")


def ata(owner: Keypair | str, mint: str = MINT, program: str = c.TOKEN_PROGRAM) -> str:
    key = str(owner.pubkey()) if isinstance(owner, Keypair) else owner
    return associated_token_address(key, mint, program)


def requirements(
    amount: int | str = AMOUNT,
    *,
    scheme: str = "exact",
    asset: str = MINT,
    pay_to: str = PAY_TO,
    fee_payer: object = str(FEE_PAYER_KEY),
    memo: str | None = None,
) -> PaymentRequirements:
    extra: dict[str, Any] = {"feePayer": fee_payer}
    if memo is not None:
        extra["memo"] = memo
    return PaymentRequirements(scheme, NETWORK, str(amount), asset, pay_to, 60, extra)


def payload(tx: VersionedTransaction | str | None, accepted: PaymentRequirements | None = None) -> PaymentPayload:
    value = encode_transaction(tx) if isinstance(tx, VersionedTransaction) else tx
    return PaymentPayload(2, {"transaction": value}, accepted=accepted or requirements())


def check(
    tx: VersionedTransaction, req: PaymentRequirements | None = None, managed: Collection[str] = MANAGED, **kw: Any
) -> CheckedTransfer:
    req = req or requirements()
    return check_transaction(payload(tx, req), req, managed, **kw)


def reason(
    tx: VersionedTransaction | PaymentPayload,
    req: PaymentRequirements | None = None,
    managed: Collection[str] = MANAGED,
    **kw: Any,
) -> str | None:
    """The x402 reason ``check_transaction`` refuses ``tx`` with (fails the test if it accepts it)."""
    req = req or requirements()
    payment = tx if isinstance(tx, PaymentPayload) else payload(tx, req)
    with pytest.raises(PaymentRejected) as exc:
        check_transaction(payment, req, managed, **kw)
    assert exc.value.status == 402
    return exc.value.code


# --- instructions


def limit_ix(units: int = c.DEFAULT_COMPUTE_UNIT_LIMIT, metas: Sequence[AccountMeta] = ()) -> Instruction:
    return Instruction(COMPUTE_BUDGET, bytes([c.SET_COMPUTE_UNIT_LIMIT]) + units.to_bytes(4, "little"), list(metas))


def price_ix(micro_lamports: int = c.DEFAULT_COMPUTE_UNIT_PRICE, metas: Sequence[AccountMeta] = ()) -> Instruction:
    data = bytes([c.SET_COMPUTE_UNIT_PRICE]) + micro_lamports.to_bytes(8, "little")
    return Instruction(COMPUTE_BUDGET, data, list(metas))


def transfer_ix(
    *,
    source: str | None = None,
    mint: str = MINT,
    destination: str | None = None,
    authority: Pubkey = OWNER_KEY,
    amount: int = AMOUNT,
    decimals: int = DECIMALS,
    program: str = c.TOKEN_PROGRAM,
    discriminator: int = c.TRANSFER_CHECKED,
    extra_metas: Sequence[AccountMeta] = (),
) -> Instruction:
    """An SPL TransferChecked (by default: OWNER pays AMOUNT of MINT to PAY_TO's ATA)."""
    source = source or associated_token_address(str(authority), mint, program)
    destination = destination or associated_token_address(PAY_TO, mint, program)
    metas = [
        AccountMeta(Pubkey.from_string(source), is_signer=False, is_writable=True),
        AccountMeta(Pubkey.from_string(mint), is_signer=False, is_writable=False),
        AccountMeta(Pubkey.from_string(destination), is_signer=False, is_writable=True),
        AccountMeta(authority, is_signer=True, is_writable=False),
        *extra_metas,
    ]
    data = bytes([discriminator]) + amount.to_bytes(8, "little") + bytes([decimals])
    return Instruction(Pubkey.from_string(program), data, metas)


def memo_ix(text: bytes = b"0123456789abcdef0123456789abcdef", metas: Sequence[AccountMeta] = ()) -> Instruction:
    return Instruction(MEMO, text, list(metas))


def lighthouse_ix(metas: Sequence[AccountMeta] = ()) -> Instruction:
    return Instruction(LIGHTHOUSE, b"\x01\x02\x03", list(metas))


def readonly(key: Keypair | Pubkey, signer: bool = False) -> AccountMeta:
    return AccountMeta(key.pubkey() if isinstance(key, Keypair) else key, is_signer=signer, is_writable=False)


def instructions(**transfer: Any) -> list[Instruction]:
    """A valid payment's instructions: limit, price, TransferChecked, memo."""
    return [limit_ix(), price_ix(), transfer_ix(**transfer), memo_ix()]


# --- transactions


def sign(message: MessageV0, signers: Sequence[Keypair] = (OWNER,)) -> VersionedTransaction:
    """``message`` signed by ``signers`` in their slots; every other slot (the fee payer's) left empty."""
    by_key = {kp.pubkey(): kp for kp in signers}
    keys = message.account_keys[: message.header.num_required_signatures]
    signatures = [
        by_key[key].sign_message(message_bytes(message)) if key in by_key else Signature.default() for key in keys
    ]
    return VersionedTransaction.populate(message, signatures)


def compile_message(
    ixs: Sequence[Instruction], *, fee_payer: Pubkey = FEE_PAYER_KEY, blockhash: Hash = BLOCKHASH
) -> MessageV0:
    return MessageV0.try_compile(fee_payer, list(ixs), [], blockhash)


def transaction(
    ixs: Sequence[Instruction],
    *,
    fee_payer: Pubkey = FEE_PAYER_KEY,
    signers: Sequence[Keypair] = (OWNER,),
    blockhash: Hash = BLOCKHASH,
) -> VersionedTransaction:
    return sign(compile_message(ixs, fee_payer=fee_payer, blockhash=blockhash), signers)


def rebuild(
    message: MessageV0,
    *,
    keys: Sequence[Pubkey] | None = None,
    instructions: Sequence[CompiledInstruction] | None = None,
    lookups: Sequence[MessageAddressTableLookup] = (),
    readonly_unsigned: int = 0,
) -> MessageV0:
    """``message`` with its account keys, compiled instructions or lookups replaced (what
    ``try_compile`` would never produce: an attacker serializes such messages by hand)."""
    header = message.header
    return MessageV0(
        MessageHeader(
            header.num_required_signatures,
            header.num_readonly_signed_accounts,
            header.num_readonly_unsigned_accounts + readonly_unsigned,
        ),
        list(keys if keys is not None else message.account_keys),
        message.recent_blockhash,
        list(instructions if instructions is not None else message.instructions),
        list(lookups),
    )


def built(req: PaymentRequirements | None = None, **kw: Any) -> VersionedTransaction:
    kw.setdefault("blockhash", BLOCKHASH)
    kw.setdefault("decimals", DECIMALS)
    return build_transfer(req or requirements(), OWNER, **kw)


def memos(tx: VersionedTransaction) -> list[bytes]:
    keys = tx.message.account_keys
    return [bytes(ix.data) for ix in tx.message.instructions if keys[ix.program_id_index] == MEMO]


# ---------------------------------------------------------------- valid payments


@pytest.mark.parametrize("program", [c.TOKEN_PROGRAM, c.TOKEN_2022_PROGRAM], ids=["token", "token-2022"])
def test_built_payment_passes_and_reads_back(program: str) -> None:
    tx = built(token_program=program)
    checked = check(tx)
    assert checked.transaction == tx
    assert checked.payer == str(OWNER_KEY)
    assert checked.fee_payer == str(FEE_PAYER_KEY)
    assert checked.source == ata(OWNER, program=program)
    assert checked.destination == ata(PAY_TO, program=program)
    assert checked.mint == MINT
    assert checked.token_program == program
    assert checked.amount == AMOUNT
    assert checked.decimals == DECIMALS
    assert checked.blockhash == str(BLOCKHASH)
    slot = list(tx.message.account_keys).index(OWNER_KEY)
    assert checked.payment_id == str(tx.signatures[slot]) == str(tx.signatures[1])
    assert tx.signatures[0] == Signature.default()  # left for the fee payer


def test_token_2022_destination_is_derived_with_token_2022() -> None:
    assert ata(PAY_TO, program=c.TOKEN_2022_PROGRAM) != ata(PAY_TO)
    tx = transaction(instructions(program=c.TOKEN_2022_PROGRAM))
    assert check(tx).destination == ata(PAY_TO, program=c.TOKEN_2022_PROGRAM)
    # a Token-2022 transfer into the classic ATA goes to an account payTo does not own under this program
    classic = transaction(instructions(program=c.TOKEN_2022_PROGRAM, destination=ata(PAY_TO)))
    assert reason(classic) == c.ERR_RECIPIENT_MISMATCH


def test_built_payment_layout() -> None:
    tx = built(unit_price=7, unit_limit=30_000)
    message = tx.message
    assert isinstance(message, MessageV0)
    keys = message.account_keys
    assert keys[0] == FEE_PAYER_KEY
    assert message.header.num_required_signatures == 2
    limit, price, transfer_checked, memo = message.instructions
    assert keys[limit.program_id_index] == keys[price.program_id_index] == COMPUTE_BUDGET
    assert bytes(limit.data) == bytes([c.SET_COMPUTE_UNIT_LIMIT]) + (30_000).to_bytes(4, "little")
    assert bytes(price.data) == bytes([c.SET_COMPUTE_UNIT_PRICE]) + (7).to_bytes(8, "little")
    assert keys[transfer_checked.program_id_index] == Pubkey.from_string(c.TOKEN_PROGRAM)
    assert keys[memo.program_id_index] == MEMO
    assert not any(0 in bytes(ix.accounts) for ix in message.instructions)


def test_hand_built_payment_passes() -> None:
    """The helpers build a valid payment: each refusal below is due to the one thing a test changes."""
    checked = check(transaction(instructions()))
    assert (checked.payer, checked.amount, checked.destination) == (str(OWNER_KEY), AMOUNT, ata(PAY_TO))


@pytest.mark.parametrize(
    "optional",
    [
        [],
        [memo_ix()],
        [lighthouse_ix()],
        [lighthouse_ix(), memo_ix()],
        [memo_ix(), lighthouse_ix()],
        [lighthouse_ix(), lighthouse_ix(), memo_ix()],
        [lighthouse_ix([readonly(OWNER)]), lighthouse_ix([readonly(STRANGER)]), memo_ix()],
    ],
    ids=["none", "memo", "lighthouse", "lighthouse-memo", "memo-lighthouse", "2-lighthouse-memo", "with-accounts"],
)
def test_lighthouse_and_memo_are_allowed_up_to_six_instructions(optional: list[Instruction]) -> None:
    tx = transaction([limit_ix(), price_ix(), transfer_ix(), *optional])
    assert len(tx.message.instructions) == 3 + len(optional)
    assert check(tx).amount == AMOUNT


def test_managed_may_hold_other_keys() -> None:
    assert check(built(), managed={str(FEE_PAYER_KEY), str(OTHER_MANAGED.pubkey())}).payer == str(OWNER_KEY)


def test_cosign_fills_slot_zero_deterministically() -> None:
    tx = built()
    once, twice = cosign(tx, FEE_PAYER), cosign(tx, FEE_PAYER)
    assert once.signatures[0] != Signature.default()
    assert once.signatures[0] == twice.signatures[0]
    assert bytes(once) == bytes(twice)
    assert once.signatures[1] == tx.signatures[1]
    assert once.message == tx.message
    assert once.verify_with_results() == [True, True]
    assert tx.verify_with_results() == [False, True]  # before: only the owner's
    checked = check(once)  # a co-signed payment still passes, with the same payment id
    assert checked.payment_id == check(tx).payment_id


def test_cosign_with_another_key_does_not_verify() -> None:
    assert cosign(built(), STRANGER).verify_with_results() == [False, True]


def test_payment_id_differs_between_identical_payments() -> None:
    """The random memo makes two payments of the same requirements two transactions."""
    assert check(built()).payment_id != check(built()).payment_id


def test_check_accepts_str_blockhash_in_build() -> None:
    assert check(built(blockhash=str(BLOCKHASH))).blockhash == str(BLOCKHASH)


def test_build_needs_fee_payer() -> None:
    with pytest.raises(ValueError, match="feePayer"):
        built(requirements(fee_payer=None))
    with pytest.raises(ValueError, match="feePayer"):
        built(requirements(fee_payer=""))


# ---------------------------------------------------------------- decoding and shape


def test_encode_decode_round_trip() -> None:
    tx = built()
    assert decode_transaction(encode_transaction(tx)) == tx
    assert base64.b64decode(encode_transaction(tx)) == bytes(tx)


def test_message_bytes_is_what_the_owner_signs() -> None:
    tx = built()
    assert message_bytes(tx.message)[0] == 0x80
    assert tx.signatures[1].verify(OWNER_KEY, message_bytes(tx.message))


@pytest.mark.parametrize(
    "value",
    [
        "not base64!",
        "aGVsbG8gd29ybGQ=",  # base64 of "hello world"
        "",
        None,
        42,
        ["AAAA"],
        "A" * 4000,  # longer than any Solana transaction
    ],
    ids=["not-base64", "text", "empty", "none", "int", "list", "too-long"],
)
def test_undecodable_transaction(value: object) -> None:
    assert reason(payload(None) if value is None else PaymentPayload(2, {"transaction": value})) == c.ERR_DECODE


def test_missing_transaction_key() -> None:
    assert reason(PaymentPayload(2, {"signature": encode_transaction(built())})) == c.ERR_DECODE
    assert reason(PaymentPayload(2, {})) == c.ERR_DECODE


def test_truncated_transaction() -> None:
    raw = bytes(built())
    truncated = base64.b64encode(raw[: len(raw) // 2]).decode()
    assert reason(PaymentPayload(2, {"transaction": truncated})) == c.ERR_DECODE


def test_legacy_message_is_refused() -> None:
    legacy = Message.new_with_blockhash(instructions(), FEE_PAYER_KEY, BLOCKHASH)
    tx = Transaction.new_unsigned(legacy)
    tx.partial_sign([OWNER], BLOCKHASH)
    value = base64.b64encode(bytes(tx)).decode()
    assert isinstance(decode_transaction(value).message, Message)
    assert reason(PaymentPayload(2, {"transaction": value})) == c.ERR_INVALID_PAYLOAD
    # 64 zero bytes: an empty legacy transaction
    assert reason(PaymentPayload(2, {"transaction": base64.b64encode(bytes(64)).decode()})) == c.ERR_INVALID_PAYLOAD


def test_address_lookup_tables_are_refused() -> None:
    lookup = MessageAddressTableLookup(STRANGER.pubkey(), bytes([0]), bytes([1]))
    tx = sign(rebuild(compile_message(instructions()), lookups=[lookup]))
    assert reason(tx) == c.ERR_INVALID_PAYLOAD


def test_signature_count_must_match_header() -> None:
    message = compile_message(instructions())
    tx = VersionedTransaction.populate(message, [Signature.default(), Signature.default(), Signature.default()])
    assert reason(tx) == c.ERR_INVALID_PAYLOAD


def test_out_of_range_account_index_is_refused() -> None:
    message = compile_message(instructions())
    ixs = list(message.instructions)
    ixs[3] = CompiledInstruction(ixs[3].program_id_index, bytes(ixs[3].data), bytes([200]))
    assert reason(sign(rebuild(message, instructions=ixs))) == c.ERR_INVALID_PAYLOAD
    ixs = list(message.instructions)
    ixs[3] = CompiledInstruction(250, bytes(ixs[3].data), b"")
    assert reason(sign(rebuild(message, instructions=ixs))) == c.ERR_INVALID_PAYLOAD


def test_duplicate_account_keys_are_refused() -> None:
    """The fee payer listed a second time, as a non-signer, and used through that alias:
    no instruction names index 0, yet the fee payer is in an instruction's accounts."""
    message = compile_message(instructions())
    keys = [*message.account_keys, FEE_PAYER_KEY]
    ixs = list(message.instructions)
    memo = ixs[3]
    ixs[3] = CompiledInstruction(memo.program_id_index, bytes(memo.data), bytes([len(keys) - 1]))
    tx = sign(rebuild(message, keys=keys, instructions=ixs, readonly_unsigned=1))
    assert reason(tx) == c.ERR_INVALID_PAYLOAD


# ---------------------------------------------------------------- requirements


@pytest.mark.parametrize("scheme", ["upto", "EXACT", ""])
def test_other_schemes_are_unsupported(scheme: str) -> None:
    assert reason(built(), requirements(scheme=scheme)) == "unsupported_scheme"


@pytest.mark.parametrize("fee_payer", [None, "", 42, ["x"]], ids=["none", "empty", "int", "list"])
def test_requirements_without_fee_payer(fee_payer: object) -> None:
    assert reason(built(), requirements(fee_payer=fee_payer)) == c.ERR_MISSING_FEE_PAYER


def test_requirements_without_extra() -> None:
    req = PaymentRequirements("exact", NETWORK, str(AMOUNT), MINT, PAY_TO, 60)
    assert reason(built(), req) == c.ERR_MISSING_FEE_PAYER


def test_fee_payer_not_managed() -> None:
    assert reason(built(), managed={str(OTHER_MANAGED.pubkey())}) == c.ERR_FEE_PAYER_NOT_MANAGED
    assert reason(built(), managed=set()) == c.ERR_FEE_PAYER_NOT_MANAGED


def test_fee_payer_not_managed_is_checked_before_decoding() -> None:
    assert reason(PaymentPayload(2, {"transaction": "junk"}), managed=set()) == c.ERR_FEE_PAYER_NOT_MANAGED


def test_transaction_fee_payer_differs_from_requirements() -> None:
    """Paid by another managed key than the one the requirements name."""
    both = {str(FEE_PAYER_KEY), str(OTHER_MANAGED.pubkey())}
    tx = transaction(instructions(), fee_payer=OTHER_MANAGED.pubkey())
    assert reason(tx, managed=both) == c.ERR_FEE_PAYER_MISMATCH


def test_transaction_paid_by_a_stranger() -> None:
    stranger_pays = transaction(instructions(), fee_payer=STRANGER.pubkey(), signers=(OWNER, STRANGER))
    assert reason(stranger_pays) == c.ERR_FEE_PAYER_MISMATCH


# ---------------------------------------------------------------- layout and compute budget


def test_two_instructions() -> None:
    assert reason(transaction([limit_ix(), transfer_ix()])) == c.ERR_INSTRUCTION_COUNT


def test_seven_instructions() -> None:
    tx = transaction([limit_ix(), price_ix(), transfer_ix(), memo_ix(b"a"), memo_ix(b"b"), memo_ix(b"c"), memo_ix()])
    assert reason(tx) == c.ERR_INSTRUCTION_COUNT


@pytest.mark.parametrize(
    "first",
    [
        price_ix(),  # SetComputeUnitPrice where the limit belongs
        Instruction(COMPUTE_BUDGET, bytes([c.SET_COMPUTE_UNIT_LIMIT]) + bytes(8), []),  # wrong length
        Instruction(COMPUTE_BUDGET, bytes([1]) + (20_000).to_bytes(4, "little"), []),  # RequestHeapFrame
        Instruction(COMPUTE_BUDGET, b"", []),
        memo_ix(),
        Instruction(UNKNOWN_PROGRAM, bytes([c.SET_COMPUTE_UNIT_LIMIT]) + bytes(4), []),
    ],
    ids=["price", "long", "other-discriminator", "empty", "memo", "other-program"],
)
def test_first_instruction_not_set_compute_unit_limit(first: Instruction) -> None:
    assert reason(transaction([first, price_ix(), transfer_ix(), memo_ix()])) == c.ERR_COMPUTE_LIMIT


def test_compute_instructions_swapped() -> None:
    assert reason(transaction([price_ix(), limit_ix(), transfer_ix(), memo_ix()])) == c.ERR_COMPUTE_LIMIT


@pytest.mark.parametrize(
    "second",
    [
        limit_ix(),
        Instruction(COMPUTE_BUDGET, bytes([c.SET_COMPUTE_UNIT_PRICE]) + bytes(4), []),  # u32 instead of u64
        Instruction(COMPUTE_BUDGET, bytes([4]) + bytes(4), []),  # SetLoadedAccountsDataSizeLimit
        memo_ix(),
        Instruction(UNKNOWN_PROGRAM, bytes([c.SET_COMPUTE_UNIT_PRICE]) + bytes(8), []),
    ],
    ids=["limit", "short", "other-discriminator", "memo", "other-program"],
)
def test_second_instruction_not_set_compute_unit_price(second: Instruction) -> None:
    assert reason(transaction([limit_ix(), second, transfer_ix(), memo_ix()])) == c.ERR_COMPUTE_PRICE


@pytest.mark.parametrize("price", [c.MAX_COMPUTE_UNIT_PRICE + 1, 10**12, 2**64 - 1])
def test_compute_price_above_default_cap(price: int) -> None:
    assert c.MAX_COMPUTE_UNIT_PRICE == 5_000_000
    assert reason(built(unit_price=price)) == c.ERR_COMPUTE_PRICE_TOO_HIGH


def test_compute_price_at_default_cap_passes() -> None:
    # at the spec's price cap, a limit that keeps the priority fee under its own cap
    limit = c.MAX_PRIORITY_FEE_LAMPORTS * 1_000_000 // c.MAX_COMPUTE_UNIT_PRICE
    assert check(built(unit_price=c.MAX_COMPUTE_UNIT_PRICE, unit_limit=limit)).amount == AMOUNT
    assert check(built(unit_price=0)).amount == AMOUNT


def test_compute_limit_and_priority_fee_are_capped() -> None:
    """The fee payer pays price x limit: the spec caps the price only; the limit and the product are capped too."""
    assert check(built(unit_limit=c.MAX_COMPUTE_UNIT_LIMIT)).amount == AMOUNT
    assert reason(built(unit_limit=c.MAX_COMPUTE_UNIT_LIMIT + 1)) == c.ERR_COMPUTE_LIMIT_TOO_HIGH
    assert reason(built(unit_limit=1_400_000, unit_price=c.MAX_COMPUTE_UNIT_PRICE)) == c.ERR_COMPUTE_LIMIT_TOO_HIGH
    # both within their caps, their product (lamports) over its own
    fee_limit = c.MAX_PRIORITY_FEE_LAMPORTS * 1_000_000 // c.MAX_COMPUTE_UNIT_PRICE
    assert reason(built(unit_limit=fee_limit + 1, unit_price=c.MAX_COMPUTE_UNIT_PRICE)) == c.ERR_COMPUTE_PRICE_TOO_HIGH
    assert check(built(unit_limit=100_000, unit_price=1), max_priority_fee=1).amount == AMOUNT
    assert reason(built(unit_limit=100_000, unit_price=11), max_priority_fee=1) == c.ERR_COMPUTE_PRICE_TOO_HIGH
    assert reason(built(unit_limit=20_000), max_unit_limit=19_999) == c.ERR_COMPUTE_LIMIT_TOO_HIGH


def test_custom_lower_cap() -> None:
    assert reason(built(unit_price=1001), max_unit_price=1000) == c.ERR_COMPUTE_PRICE_TOO_HIGH
    assert reason(built(unit_price=c.MAX_COMPUTE_UNIT_PRICE), max_unit_price=1000) == c.ERR_COMPUTE_PRICE_TOO_HIGH
    assert check(built(unit_price=1000), max_unit_price=1000).amount == AMOUNT
    assert reason(built(unit_price=1), max_unit_price=0) == c.ERR_COMPUTE_PRICE_TOO_HIGH
    assert check(built(unit_price=0), max_unit_price=0).amount == AMOUNT


def test_third_instruction_system_transfer() -> None:
    pay = transfer(TransferParams(from_pubkey=OWNER_KEY, to_pubkey=Pubkey.from_string(PAY_TO), lamports=AMOUNT))
    assert reason(transaction([limit_ix(), price_ix(), pay, memo_ix()])) == c.ERR_NO_TRANSFER


def test_third_instruction_memo() -> None:
    assert reason(transaction([limit_ix(), price_ix(), memo_ix(), transfer_ix()])) == c.ERR_NO_TRANSFER


def test_third_instruction_lookalike_program() -> None:
    """TransferChecked bytes sent to a program that is not SPL Token."""
    ix = transfer_ix()
    fake = Instruction(UNKNOWN_PROGRAM, bytes(ix.data), list(ix.accounts))
    assert reason(transaction([limit_ix(), price_ix(), fake, memo_ix()])) == c.ERR_NO_TRANSFER


@pytest.mark.parametrize("program", [c.TOKEN_PROGRAM, c.TOKEN_2022_PROGRAM])
def test_plain_transfer_instead_of_transfer_checked(program: str) -> None:
    """SPL ``Transfer`` (3): amount only, accounts source, destination, authority."""
    checked = transfer_ix(program=program)
    metas = [checked.accounts[0], checked.accounts[2], checked.accounts[3]]
    plain = Instruction(checked.program_id, bytes([3]) + AMOUNT.to_bytes(8, "little"), metas)
    assert reason(transaction([limit_ix(), price_ix(), plain, memo_ix()])) == c.ERR_NOT_TRANSFER_CHECKED
    # even with TransferChecked's data length and accounts
    lookalike = transfer_ix(program=program, discriminator=3)
    assert reason(transaction([limit_ix(), price_ix(), lookalike, memo_ix()])) == c.ERR_NOT_TRANSFER_CHECKED


def test_transfer_checked_with_wrong_shape() -> None:
    ix = transfer_ix()
    short = Instruction(ix.program_id, bytes(ix.data)[:9], list(ix.accounts))
    assert reason(transaction([limit_ix(), price_ix(), short, memo_ix()])) == c.ERR_NOT_TRANSFER_CHECKED
    long = Instruction(ix.program_id, bytes(ix.data) + b"\x00", list(ix.accounts))
    assert reason(transaction([limit_ix(), price_ix(), long, memo_ix()])) == c.ERR_NOT_TRANSFER_CHECKED
    three = Instruction(ix.program_id, bytes(ix.data), list(ix.accounts)[:3])
    tx = transaction([limit_ix(), price_ix(), three, memo_ix(metas=[readonly(OWNER, signer=True)])])
    assert reason(tx) == c.ERR_NOT_TRANSFER_CHECKED
    # a multisig authority (extra signer accounts) is not the scheme's transfer either
    multisig = transfer_ix(extra_metas=[readonly(STRANGER, signer=True)])
    tx = transaction([limit_ix(), price_ix(), multisig, memo_ix()], signers=(OWNER, STRANGER))
    assert reason(tx) == c.ERR_NOT_TRANSFER_CHECKED


@pytest.mark.parametrize(
    ("position", "code"),
    [(3, c.ERR_UNKNOWN_FOURTH), (4, c.ERR_UNKNOWN_FIFTH), (5, c.ERR_UNKNOWN_SIXTH)],
    ids=["fourth", "fifth", "sixth"],
)
def test_unknown_optional_instruction(position: int, code: str) -> None:
    ixs = [limit_ix(), price_ix(), transfer_ix(), lighthouse_ix(), lighthouse_ix(), memo_ix()]
    ixs[position] = Instruction(UNKNOWN_PROGRAM, b"\x00", [])
    assert reason(transaction(ixs)) == code
    # also as the last instruction of a shorter transaction
    assert reason(transaction(ixs[: position + 1])) == code


def test_second_transfer_is_unknown_fourth_instruction() -> None:
    tx = transaction([limit_ix(), price_ix(), transfer_ix(), transfer_ix(), memo_ix()])
    assert reason(tx) == c.ERR_UNKNOWN_FOURTH


def test_system_transfer_as_optional_instruction() -> None:
    pay = transfer(TransferParams(from_pubkey=OWNER_KEY, to_pubkey=STRANGER.pubkey(), lamports=1))
    assert reason(transaction([limit_ix(), price_ix(), transfer_ix(), memo_ix(), pay])) == c.ERR_UNKNOWN_FIFTH


# ---------------------------------------------------------------- fee-payer safety


def test_fee_payer_as_transfer_authority() -> None:
    """The fee payer moves its own tokens (its signature, added at settlement, would authorize it)."""
    drain = transfer_ix(authority=FEE_PAYER_KEY)
    assert drain.accounts[0].pubkey == Pubkey.from_string(ata(FEE_PAYER))
    # the owner signs something (a memo) so the message has the two signers the scheme needs
    tx = transaction([limit_ix(), price_ix(), drain, memo_ix(metas=[readonly(OWNER, signer=True)])])
    assert tx.message.header.num_required_signatures == 2
    assert reason(tx) == c.ERR_FEE_PAYER_TRANSFERRING
    # and with the fee payer as the only signer
    alone = transaction([limit_ix(), price_ix(), drain, memo_ix()], signers=())
    assert alone.message.header.num_required_signatures == 1
    assert reason(alone) == c.ERR_FEE_PAYER_TRANSFERRING


def test_fee_payer_as_authority_of_clients_account() -> None:
    ix = transfer_ix(source=ata(OWNER), authority=FEE_PAYER_KEY)
    tx = transaction([limit_ix(), price_ix(), ix, memo_ix(metas=[readonly(OWNER, signer=True)])])
    assert reason(tx) == c.ERR_FEE_PAYER_TRANSFERRING


@pytest.mark.parametrize("program", [c.TOKEN_PROGRAM, c.TOKEN_2022_PROGRAM])
def test_fee_payers_token_account_as_source(program: str) -> None:
    """The client (say, a delegate of the fee payer's account) spends from the fee payer's ATA."""
    tx = transaction(instructions(source=ata(FEE_PAYER, program=program), program=program))
    assert reason(tx) == c.ERR_FEE_PAYER_TRANSFERRING


def test_other_managed_key_as_authority() -> None:
    both = {str(FEE_PAYER_KEY), str(OTHER_MANAGED.pubkey())}
    ixs = instructions(authority=OTHER_MANAGED.pubkey())
    tx = transaction(ixs, signers=(OTHER_MANAGED,))
    assert reason(tx, managed=both) == c.ERR_FEE_PAYER_TRANSFERRING
    # unmanaged, the same key is just a client
    assert check(tx).payer == str(OTHER_MANAGED.pubkey())


def test_other_managed_keys_token_account_as_source() -> None:
    both = {str(FEE_PAYER_KEY), str(OTHER_MANAGED.pubkey())}
    tx = transaction(instructions(source=ata(OTHER_MANAGED)))
    assert reason(tx, managed=both) == c.ERR_FEE_PAYER_TRANSFERRING


_FEE_PAYER_META = readonly(FEE_PAYER)
_FEE_PAYER_WRITABLE = AccountMeta(FEE_PAYER_KEY, is_signer=False, is_writable=True)


@pytest.mark.parametrize(
    "ixs",
    [
        [limit_ix(), price_ix(), transfer_ix(), memo_ix(metas=[_FEE_PAYER_META])],
        [limit_ix(), price_ix(), transfer_ix(), memo_ix(metas=[readonly(OWNER), _FEE_PAYER_META])],
        [limit_ix(), price_ix(), transfer_ix(), lighthouse_ix([_FEE_PAYER_WRITABLE]), memo_ix()],
        [limit_ix(), price_ix(), transfer_ix(), lighthouse_ix(), lighthouse_ix([_FEE_PAYER_META]), memo_ix()],
        [limit_ix(metas=[_FEE_PAYER_META]), price_ix(), transfer_ix(), memo_ix()],
        [limit_ix(), price_ix(metas=[_FEE_PAYER_WRITABLE]), transfer_ix(), memo_ix()],
        [limit_ix(), price_ix(), transfer_ix(destination=str(FEE_PAYER_KEY)), memo_ix()],
        [limit_ix(), price_ix(), transfer_ix(mint=str(FEE_PAYER_KEY)), memo_ix()],
    ],
    ids=[
        "memo",
        "memo-second-account",
        "lighthouse-writable",
        "fifth-lighthouse",
        "compute-limit",
        "compute-price",
        "transfer-destination",
        "transfer-mint",
    ],
)
def test_fee_payer_in_instruction_accounts(ixs: list[Instruction]) -> None:
    tx = transaction(ixs)
    assert tx.message.account_keys[0] == FEE_PAYER_KEY
    assert reason(tx) == c.ERR_FEE_PAYER_IN_ACCOUNTS


def test_fee_payer_as_signer_of_memo() -> None:
    """A memo the fee payer 'signs': its settlement signature would endorse the memo."""
    tx = transaction([limit_ix(), price_ix(), transfer_ix(), memo_ix(metas=[readonly(FEE_PAYER, signer=True)])])
    assert reason(tx) == c.ERR_FEE_PAYER_IN_ACCOUNTS


def test_other_managed_key_in_memo_accounts_is_not_the_fee_payer() -> None:
    """The rule is about the fee payer named in the requirements (the only key that signs)."""
    both = {str(FEE_PAYER_KEY), str(OTHER_MANAGED.pubkey())}
    tx = transaction([limit_ix(), price_ix(), transfer_ix(), memo_ix(metas=[readonly(OTHER_MANAGED)])])
    assert check(tx, managed=both).payer == str(OWNER_KEY)


# ---------------------------------------------------------------- transfer intent


def test_wrong_mint() -> None:
    tx = transaction(instructions(mint=OTHER_MINT))
    assert reason(tx) == c.ERR_MINT_MISMATCH
    # what the client built for another asset
    assert reason(built(requirements(asset=OTHER_MINT))) == c.ERR_MINT_MISMATCH


@pytest.mark.parametrize(
    "destination",
    [
        ata(PAY_TO, mint=OTHER_MINT),  # payTo's account of another mint
        PAY_TO,  # payTo itself (a wallet, not a token account)
        ata(PAY_TO, program=c.TOKEN_2022_PROGRAM),  # payTo's ATA under the other program
        ata(STRANGER),  # someone else's account of this mint
        ata(OWNER),  # back to the payer
    ],
    ids=["other-mint-ata", "pay-to", "token-2022-ata", "stranger", "self"],
)
def test_wrong_destination(destination: str) -> None:
    assert reason(transaction(instructions(destination=destination))) == c.ERR_RECIPIENT_MISMATCH


def test_payment_to_another_pay_to() -> None:
    assert reason(built(requirements(pay_to=str(STRANGER.pubkey())))) == c.ERR_RECIPIENT_MISMATCH


@pytest.mark.parametrize("paid", [AMOUNT - 1, AMOUNT + 1, 0, AMOUNT * 10**6, 2**64 - 1])
def test_wrong_amount(paid: int) -> None:
    """``exact`` means exact: neither less nor more than asked."""
    assert reason(built(requirements(paid)), requirements(AMOUNT)) == c.ERR_AMOUNT_MISMATCH


def test_decimals_are_read_back_not_checked_locally() -> None:
    """The mint's decimals need the chain (TransferChecked itself fails on a mismatch)."""
    assert check(built(decimals=9)).decimals == 9


# ---------------------------------------------------------------- memo


def test_build_uses_extra_memo() -> None:
    tx = built(requirements(memo="pi_3abc123def456"))
    assert memos(tx) == [b"pi_3abc123def456"]
    assert check(tx, requirements(memo="pi_3abc123def456")).amount == AMOUNT


def test_build_uses_a_random_hex_memo_otherwise() -> None:
    first, second = memos(built()), memos(built())
    assert len(first) == len(second) == 1
    for memo in (first[0], second[0]):
        assert len(memo) == 2 * c.MEMO_NONCE_BYTES == 32
        int(memo, 16)  # hex
    assert first != second


def test_build_with_explicit_memo() -> None:
    assert memos(built(memo=b"explicit")) == [b"explicit"]


def test_build_refuses_an_overlong_memo() -> None:
    with pytest.raises(ValueError, match="memo"):
        built(requirements(memo="x" * (c.MAX_MEMO_BYTES + 1)))
    assert memos(built(requirements(memo="x" * c.MAX_MEMO_BYTES))) == [b"x" * c.MAX_MEMO_BYTES]


def test_memo_missing() -> None:
    req = requirements(memo="invoice-42")
    assert reason(transaction([limit_ix(), price_ix(), transfer_ix()]), req) == c.ERR_MEMO_COUNT
    assert reason(transaction([limit_ix(), price_ix(), transfer_ix(), lighthouse_ix()]), req) == c.ERR_MEMO_COUNT


def test_two_memos() -> None:
    req = requirements(memo="invoice-42")
    tx = transaction([limit_ix(), price_ix(), transfer_ix(), memo_ix(b"invoice-42"), memo_ix(b"invoice-42")])
    assert reason(tx, req) == c.ERR_MEMO_COUNT


@pytest.mark.parametrize("text", [b"invoice-43", b"invoice-42 ", b"INVOICE-42", b"", b"invoice-4"])
def test_memo_mismatch(text: bytes) -> None:
    req = requirements(memo="invoice-42")
    assert reason(transaction([limit_ix(), price_ix(), transfer_ix(), memo_ix(text)]), req) == c.ERR_MEMO_MISMATCH


def test_memo_built_for_other_requirements() -> None:
    assert reason(built(), requirements(memo="invoice-42")) == c.ERR_MEMO_MISMATCH
    assert reason(built(memo=b"other"), requirements(memo="invoice-42")) == c.ERR_MEMO_MISMATCH


def test_memo_with_lighthouse_passes() -> None:
    req = requirements(memo="invoice-42")
    tx = transaction([limit_ix(), price_ix(), transfer_ix(), lighthouse_ix(), lighthouse_ix(), memo_ix(b"invoice-42")])
    assert check(tx, req).amount == AMOUNT


def test_the_sixth_instruction_may_only_be_a_memo() -> None:
    """The spec: 4th and 5th Lighthouse or Memo, 6th Memo (the official Python facilitator lets Lighthouse by)."""
    tx = transaction([limit_ix(), price_ix(), transfer_ix(), lighthouse_ix(), memo_ix(), lighthouse_ix()])
    assert reason(tx) == c.ERR_UNKNOWN_SIXTH


def test_unicode_memo() -> None:
    req = requirements(memo="facture n° 42 — ✓")
    tx = built(req)
    assert memos(tx) == ["facture n° 42 — ✓".encode()]
    assert check(tx, req).amount == AMOUNT


# ---------------------------------------------------------------- signatures


def test_owner_signature_missing() -> None:
    tx = built()
    unsigned = VersionedTransaction.populate(tx.message, [Signature.default(), Signature.default()])
    assert reason(unsigned) == c.ERR_MISSING_SIGNATURE
    assert reason(transaction(instructions(), signers=())) == c.ERR_MISSING_SIGNATURE


def test_owner_signature_by_another_key() -> None:
    tx = built()
    forged = STRANGER.sign_message(message_bytes(tx.message))
    assert reason(VersionedTransaction.populate(tx.message, [Signature.default(), forged])) == c.ERR_MISSING_SIGNATURE


def test_owner_signature_over_legacy_bytes() -> None:
    """Signed without the v0 prefix: the signature does not cover the message that is sent."""
    tx = built()
    wrong = OWNER.sign_message(bytes(tx.message))
    assert reason(VersionedTransaction.populate(tx.message, [Signature.default(), wrong])) == c.ERR_MISSING_SIGNATURE


def test_message_altered_after_signing() -> None:
    tx = built(unit_price=1)
    signatures = list(tx.signatures)
    # the same payment with a higher (still allowed) price, or another blockhash, under the old signature
    for altered in (built(unit_price=2).message, built(blockhash=Hash(bytes(32))).message):
        tampered = VersionedTransaction.populate(altered, signatures)
        assert reason(tampered) == c.ERR_MISSING_SIGNATURE


def test_no_third_signer_is_accepted() -> None:
    """A third signer (here: of a memo), signed or not, is refused: each signature is a base
    fee the fee payer would pay."""
    ixs = [limit_ix(), price_ix(), transfer_ix(), memo_ix(metas=[readonly(STRANGER, signer=True)])]
    assert reason(transaction(ixs, signers=(OWNER,))) == c.ERR_INVALID_PAYLOAD
    assert reason(transaction(ixs, signers=(OWNER, STRANGER))) == c.ERR_INVALID_PAYLOAD


def test_authority_that_does_not_sign() -> None:
    """The transfer authority is a non-signer while another key signs: the owner's signature
    (the payment id) is absent, so the payment cannot be accepted (nor identified)."""
    ix = transfer_ix()
    metas = list(ix.accounts)
    metas[3] = readonly(OWNER)
    unsigned_authority = Instruction(ix.program_id, bytes(ix.data), metas)
    ixs = [limit_ix(), price_ix(), unsigned_authority, memo_ix(metas=[readonly(STRANGER, signer=True)])]
    tx = transaction(ixs, signers=(STRANGER,))
    assert tx.message.header.num_required_signatures == 2
    assert reason(tx) == c.ERR_MISSING_SIGNATURE


def test_fee_payer_as_only_signer() -> None:
    """Only the fee payer signs: the owner, demoted to a non-signer, authorizes nothing."""
    message = compile_message(instructions())
    header = message.header
    # demote every signer but the fee payer (the owner becomes a read-only non-signer)
    demoted = MessageV0(
        MessageHeader(1, 0, header.num_readonly_unsigned_accounts + 1),
        list(message.account_keys),
        message.recent_blockhash,
        list(message.instructions),
        [],
    )
    assert reason(VersionedTransaction.populate(demoted, [Signature.default()])) == c.ERR_MISSING_SIGNATURE


def test_fee_payer_slot_is_not_checked() -> None:
    """Slot 0 is the facilitator's to fill: empty or already co-signed, the payment passes."""
    assert check(built()).payer == str(OWNER_KEY)
    assert check(cosign(built(), FEE_PAYER)).payer == str(OWNER_KEY)


# ---------------------------------------------------------------- properties

_U64 = 2**64 - 1


@settings(max_examples=40, deadline=None)
@given(amount=st.integers(0, _U64), other=st.integers(0, _U64))
def test_amount_must_match_exactly(amount: int, other: int) -> None:
    tx = built(requirements(amount))
    assert check(tx, requirements(amount)).amount == amount
    if other != amount:
        assert reason(tx, requirements(other)) == c.ERR_AMOUNT_MISMATCH


@settings(max_examples=40, deadline=None)
@given(price=st.integers(0, _U64), cap=st.integers(0, 10 * c.MAX_COMPUTE_UNIT_PRICE))
def test_price_passes_iff_within_cap(price: int, cap: int) -> None:
    tx = built(unit_price=price, unit_limit=1_000)  # a small limit: the priority-fee cap stays out of the way
    if price <= cap:
        assert check(tx, max_unit_price=cap).amount == AMOUNT
    else:
        assert reason(tx, max_unit_price=cap) == c.ERR_COMPUTE_PRICE_TOO_HIGH


_VALID = bytes(built(requirements(memo="fixed"), memo=b"fixed"))


@settings(max_examples=50, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(0, len(_VALID))),
)
def test_corrupted_transactions_are_refused_cleanly(edits: list[tuple[int, int]], cut: int | None) -> None:
    """Any corruption of a valid payment is refused with an x402 reason, or (if it left the
    payment valid, e.g. a byte of the empty fee-payer slot) read back; never another exception."""
    raw = bytearray(_VALID)
    for index, value in edits:
        raw[index] = value
    data = bytes(raw[:cut] if cut is not None else raw)
    req = requirements(memo="fixed")
    try:
        checked = check_transaction(PaymentPayload(2, {"transaction": base64.b64encode(data).decode()}), req, MANAGED)
    except PaymentRejected as exc:
        assert exc.code and isinstance(exc.code, str)
    else:
        assert checked.amount == AMOUNT and checked.mint == MINT
        assert checked.destination == ata(PAY_TO, program=checked.token_program)
        assert checked.payment_id


def test_a_transaction_longer_than_a_packet_is_refused() -> None:
    big = base64.b64encode(bytes(built()) + bytes(1232)).decode()  # still under twice the limit in base64
    assert len(big) < 2 * 1232 * 2
    assert reason(payload(big)) == c.ERR_DECODE


def test_a_read_only_fee_payer_is_malformed() -> None:
    """A header making the fee payer read-only (Solana's sanitize refuses it; the node would answer -32602)."""
    good = built()
    message = good.message
    header = MessageHeader(2, 2, message.header.num_readonly_unsigned_accounts)
    bad = MessageV0(header, list(message.account_keys), message.recent_blockhash, list(message.instructions), [])
    signature = OWNER.sign_message(message_bytes(bad))
    tx = VersionedTransaction.populate(bad, [Signature.default(), signature])
    assert reason(tx) == c.ERR_INVALID_PAYLOAD


def test_requirements_with_an_address_that_is_not_base58_are_refused() -> None:
    req = requirements()
    bad = msgspec.structs.replace(req, payTo="0xnot-a-solana-address")
    assert reason(built(), bad) == c.ERR_INVALID_REQUIREMENTS
