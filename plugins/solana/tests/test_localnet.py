"""The local Solana chain (LiteSVM) and its JSON-RPC facade, driven like a facilitator drives a node."""

from __future__ import annotations

import base64
import json
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from clawrouter_solana.accounts import associated_token_address, mint_decimals, token_account_amount
from clawrouter_solana.constants import (
    COMPUTE_BUDGET_PROGRAM,
    MEMO_PROGRAM,
    SET_COMPUTE_UNIT_LIMIT,
    SET_COMPUTE_UNIT_PRICE,
    TOKEN_2022_PROGRAM,
    TOKEN_PROGRAM,
    TRANSFER_CHECKED,
)
from clawrouter_solana.localnet import LocalSolana, RpcFacade, transaction_error_json
from clawrouter_solana.networks import LOCAL_USDC_MINT
from solana.rpc.api import Client
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.token.associated import get_associated_token_address
from solders.token.state import Mint
from solders.transaction import VersionedTransaction
from solders.transaction_status import (
    InstructionErrorCustom,
    InstructionErrorFieldless,
    TransactionConfirmationStatus,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
)

# ---------------------------------------------------------------- helpers


def _instruction(program: str, data: bytes, metas: list[AccountMeta] | None = None) -> Instruction:
    return Instruction(Pubkey.from_string(program), data, metas or [])


def payment(
    local: LocalSolana,
    owner: Keypair,
    fee_payer: Keypair,
    recipient: str,
    amount: int,
    *,
    blockhash: str | None = None,
    memo: str | None = None,
) -> tuple[VersionedTransaction, VersionedTransaction]:
    """An x402 ``exact`` SVM payment: (signed by the owner only, co-signed by the fee payer)."""
    key = Pubkey.from_string
    transfer = bytes([TRANSFER_CHECKED]) + amount.to_bytes(8, "little") + bytes([local.decimals])
    instructions = [
        _instruction(COMPUTE_BUDGET_PROGRAM, bytes([SET_COMPUTE_UNIT_LIMIT]) + (20_000).to_bytes(4, "little")),
        _instruction(COMPUTE_BUDGET_PROGRAM, bytes([SET_COMPUTE_UNIT_PRICE]) + (1).to_bytes(8, "little")),
        _instruction(
            local.token_program,
            transfer,
            [
                AccountMeta(key(local.ata(str(owner.pubkey()))), False, True),
                AccountMeta(key(local.mint), False, False),
                AccountMeta(key(local.ata(recipient)), False, True),
                AccountMeta(owner.pubkey(), True, False),
            ],
        ),
        _instruction(MEMO_PROGRAM, (memo or os.urandom(16).hex()).encode()),
    ]
    recent = Hash.from_string(blockhash or local.latest_blockhash())
    message = MessageV0.try_compile(fee_payer.pubkey(), instructions, [], recent)
    signed = bytes([0x80]) + bytes(message)
    assert signed == to_bytes_versioned(message)
    owner_signature = owner.sign_message(signed)
    partial = VersionedTransaction.populate(message, [Signature.default(), owner_signature])
    full = VersionedTransaction.populate(message, [fee_payer.sign_message(signed), owner_signature])
    return partial, full


def b58encode(raw: bytes) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    number, digits = int.from_bytes(raw, "big"), ""
    while number:
        number, digit = divmod(number, 58)
        digits = alphabet[digit] + digits
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + digits


class Parties:
    def __init__(self, local: LocalSolana, balance: int = 5_000_000) -> None:
        self.owner, self.fee_payer, self.recipient = Keypair(), Keypair(), str(Keypair().pubkey())
        local.fund(str(self.owner.pubkey()), balance, lamports=0)
        local.airdrop(str(self.fee_payer.pubkey()), 1_000_000_000)
        local.create_ata(self.recipient)


@pytest.fixture
def local() -> LocalSolana:
    return LocalSolana()


@pytest.fixture
def parties(local: LocalSolana) -> Parties:
    return Parties(local)


@pytest.fixture
def rpc(local: LocalSolana) -> Iterator[RpcFacade]:
    with RpcFacade(local) as facade:
        yield facade


@pytest.fixture
def client(rpc: RpcFacade) -> Iterator[Client]:
    with warnings.catch_warnings():  # this build of solana 0.39 deprecates the sync client the x402 SDK uses
        warnings.filterwarnings("ignore", "Client is deprecated")
        client = Client(rpc.url)
    yield client
    client._provider.session.close()


@pytest.fixture
def http(rpc: RpcFacade) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rpc.url, timeout=5) as http:
        yield http


def call(http: httpx.Client, method: str, *params: Any) -> dict[str, Any]:
    answer = http.post("/", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def b64(tx: VersionedTransaction) -> str:
    return base64.b64encode(bytes(tx)).decode()


# ---------------------------------------------------------------- accounts.py


def test_associated_token_address_follows_the_token_program() -> None:
    owner = str(Keypair().pubkey())
    classic = associated_token_address(owner, LOCAL_USDC_MINT)
    assert classic == str(get_associated_token_address(Pubkey.from_string(owner), Pubkey.from_string(LOCAL_USDC_MINT)))
    assert associated_token_address(owner, LOCAL_USDC_MINT, TOKEN_2022_PROGRAM) != classic


def test_layout_parsers() -> None:
    mint = bytes(Mint(None, 10, 9, True))
    assert mint_decimals(mint) == 9
    account = bytes(64) + (1234).to_bytes(8, "little") + bytes(93)
    assert token_account_amount(account) == 1234
    with pytest.raises(ValueError):
        token_account_amount(account[:100])
    with pytest.raises(ValueError):
        mint_decimals(mint[:44])


# ---------------------------------------------------------------- LocalSolana


def test_chain_has_the_programs_and_the_mint(local: LocalSolana) -> None:
    for program in (TOKEN_PROGRAM, TOKEN_2022_PROGRAM, MEMO_PROGRAM, COMPUTE_BUDGET_PROGRAM):
        found = local.account(program)
        assert found is not None and found.executable, program
    mint = local.account(LOCAL_USDC_MINT)
    assert mint is not None and str(mint.owner) == TOKEN_PROGRAM and len(mint.data) == 82
    assert mint_decimals(mint.data) == 6
    assert mint.lamports == local.minimum_balance(82)
    assert Mint.from_bytes(mint.data).mint_authority == local.mint_authority.pubkey()


def test_fund_and_balances(local: LocalSolana) -> None:
    alice, bob = str(Keypair().pubkey()), str(Keypair().pubkey())
    assert local.token_balance(alice) == 0 and local.sol_balance(alice) == 0
    ata = local.fund(alice, 2_500_000)
    assert ata == associated_token_address(alice, LOCAL_USDC_MINT)
    assert local.token_balance(alice) == 2_500_000
    assert local.sol_balance(alice) == 1_000_000_000
    local.fund(alice, 700, lamports=5)  # absolute tokens, added lamports
    assert local.token_balance(alice) == 700 and local.sol_balance(alice) == 1_000_000_005
    assert local.create_ata(bob) == local.ata(bob)
    assert local.token_balance(bob) == 0 and local.sol_balance(bob) == 0
    local.fund(bob, 300, lamports=0)
    assert local.create_ata(bob) == local.ata(bob) and local.token_balance(bob) == 300  # create_ata keeps a balance
    mint = local.account(LOCAL_USDC_MINT)
    assert mint is not None and Mint.from_bytes(mint.data).supply == 1_000
    token_account = local.account(ata)
    assert token_account is not None and str(token_account.owner) == TOKEN_PROGRAM
    assert token_account.lamports == local.minimum_balance(165)


def test_payment_moves_tokens_once(local: LocalSolana, parties: Parties) -> None:
    partial, full = payment(local, parties.owner, parties.fee_payer, parties.recipient, 1_250_000)
    assert local.simulate(partial)[0] == "SignatureFailure"
    error, logs, units = local.simulate(partial, sig_verify=False)
    assert error is None and 0 < units <= 20_000
    assert any("TransferChecked" in line for line in logs)
    assert local.simulate(partial)[0] == "SignatureFailure"  # sigverify is back on

    slot = local.slot
    signature, error, logs = local.send(full)
    assert (signature, error) == (str(full.signatures[0]), None)
    assert any("Memo (len 32)" in line for line in logs)
    assert local.token_balance(str(parties.owner.pubkey())) == 3_750_000
    assert local.token_balance(parties.recipient) == 1_250_000
    assert local.sol_balance(str(parties.fee_payer.pubkey())) == 1_000_000_000 - 10_000
    assert local.slot == slot + 1
    assert local.status(signature) == {"slot": slot + 1, "err": None}

    again = local.send(full)
    assert again[0] == signature and again[1] == "AlreadyProcessed"
    assert local.simulate(full)[0] == "AlreadyProcessed"
    assert local.token_balance(parties.recipient) == 1_250_000
    assert local.status(signature) == {"slot": slot + 1, "err": None}
    assert local.status(str(Signature.default())) is None


def test_expired_blockhash(local: LocalSolana, parties: Parties) -> None:
    old, last_valid = local.latest_blockhash(), local.last_valid_block_height
    assert local.is_blockhash_valid(old) and last_valid == local.block_height + 150  # made in this slot
    local.expire_blockhash()
    assert local.latest_blockhash() != old and not local.is_blockhash_valid(old)
    assert local.block_height == last_valid + 1 and local.last_valid_block_height == local.block_height + 150
    _, stale = payment(local, parties.owner, parties.fee_payer, parties.recipient, 1, blockhash=old)
    signature, error, logs = local.send(stale)
    assert error == "BlockhashNotFound" and logs == []
    assert local.status(signature) is None and local.token_balance(parties.recipient) == 0
    _, fresh = payment(local, parties.owner, parties.fee_payer, parties.recipient, 1)
    assert local.send(fresh)[1] is None


def test_each_slot_brings_a_blockhash_valid_for_150_slots(local: LocalSolana, parties: Parties) -> None:
    first, last_valid = local.latest_blockhash(), local.last_valid_block_height
    who = str(Keypair().pubkey())
    local.airdrop(who, 1)  # one slot
    assert local.latest_blockhash() != first and local.last_valid_block_height == local.block_height + 150
    assert local.is_blockhash_valid(first) and local.last_valid_of(first) == last_valid
    _, older = payment(local, parties.owner, parties.fee_payer, parties.recipient, 1, blockhash=first)
    assert local.send(older)[1] is None  # an older blockhash still in its life is accepted, as on Solana
    local.advance(last_valid - local.block_height)
    assert local.is_blockhash_valid(first)  # its last valid height
    local.advance(1)
    assert not local.is_blockhash_valid(first) and local.last_valid_of(first) is None
    _, late = payment(local, parties.owner, parties.fee_payer, parties.recipient, 1, blockhash=first)
    assert local.send(late)[1] == "BlockhashNotFound"
    with pytest.raises(ValueError):
        local.advance(0)


def test_overdraft_fails_in_the_transfer_and_pays_the_fee(local: LocalSolana, parties: Parties) -> None:
    _, tx = payment(local, parties.owner, parties.fee_payer, parties.recipient, 5_000_001)
    assert local.simulate(tx)[0] == {"InstructionError": [2, {"Custom": 1}]}
    signature, error, logs = local.send(tx)
    assert error == {"InstructionError": [2, {"Custom": 1}]}
    assert "Program log: Error: insufficient funds" in logs
    assert local.status(signature) == {"slot": local.slot, "err": error}  # processed: it failed after the fee
    assert local.sol_balance(str(parties.fee_payer.pubkey())) == 1_000_000_000 - 10_000
    assert local.token_balance(str(parties.owner.pubkey())) == 5_000_000


def test_fee_payer_without_sol(local: LocalSolana, parties: Parties) -> None:
    broke = Keypair()
    _, tx = payment(local, parties.owner, broke, parties.recipient, 1)
    assert local.send(tx)[1] == "AccountNotFound"
    local.airdrop(str(broke.pubkey()), 1_000)
    _, tx = payment(local, parties.owner, broke, parties.recipient, 1)
    assert local.send(tx)[1] == "InsufficientFundsForFee"


def test_token_2022_mint() -> None:
    local = LocalSolana(token_program=TOKEN_2022_PROGRAM, decimals=2)
    mint = local.account(LOCAL_USDC_MINT)
    assert mint is not None and str(mint.owner) == TOKEN_2022_PROGRAM and mint_decimals(mint.data) == 2
    parties = Parties(local, balance=500)
    assert local.ata(parties.recipient) == associated_token_address(
        parties.recipient, LOCAL_USDC_MINT, TOKEN_2022_PROGRAM
    )
    _, tx = payment(local, parties.owner, parties.fee_payer, parties.recipient, 120)
    assert local.send(tx)[1] is None
    assert local.token_balance(parties.recipient) == 120 and local.token_balance(str(parties.owner.pubkey())) == 380


def test_transaction_error_json() -> None:
    assert transaction_error_json(TransactionErrorFieldless.BlockhashNotFound) == "BlockhashNotFound"
    assert transaction_error_json(TransactionErrorInstructionError(2, InstructionErrorCustom(1))) == {
        "InstructionError": [2, {"Custom": 1}]
    }
    assert transaction_error_json(TransactionErrorInstructionError(0, InstructionErrorFieldless.InsufficientFunds)) == {
        "InstructionError": [0, "InsufficientFunds"]
    }
    assert transaction_error_json(TransactionErrorInsufficientFundsForRent(1)) == {
        "InsufficientFundsForRent": {"account_index": 1}
    }


# ---------------------------------------------------------------- RpcFacade with solana-py


def test_client_reads(local: LocalSolana, rpc: RpcFacade, client: Client) -> None:
    alice = Keypair().pubkey()
    ata = Pubkey.from_string(local.fund(str(alice), 1_500_000))

    latest = client.get_latest_blockhash().value
    assert str(latest.blockhash) == local.latest_blockhash()
    assert latest.last_valid_block_height == local.last_valid_block_height
    assert client.is_connected()

    mint = client.get_account_info(Pubkey.from_string(LOCAL_USDC_MINT)).value
    assert mint is not None and str(mint.owner) == TOKEN_PROGRAM and mint.data[44] == 6 and not mint.executable
    parsed = client.get_account_info_json_parsed(Pubkey.from_string(LOCAL_USDC_MINT)).value
    assert parsed is not None and bytes(parsed.data)[44] == 6
    assert client.get_account_info(Keypair().pubkey()).value is None
    accounts = client.get_multiple_accounts([ata, Keypair().pubkey()]).value
    assert accounts[0] is not None and token_account_amount(accounts[0].data) == 1_500_000 and accounts[1] is None

    assert client.get_balance(alice).value == 1_000_000_000
    balance = client.get_token_account_balance(ata).value
    assert (balance.amount, balance.decimals, balance.ui_amount, balance.ui_amount_string) == ("1500000", 6, 1.5, "1.5")
    with pytest.raises(RPCException, match="could not find account"):
        client.get_token_account_balance(Keypair().pubkey())

    assert client.get_slot().value == local.slot == client.get_block_height().value
    assert client.get_minimum_balance_for_rent_exemption(165).value == local.minimum_balance(165)
    assert client.get_version().value.solana_core == "2.2.0"

    airdrop = client.request_airdrop(alice, 42).value
    assert client.get_balance(alice).value == 1_000_000_042
    status = client.get_signature_statuses([airdrop]).value[0]
    assert status is not None and status.err is None
    assert set(rpc.calls) >= {"getLatestBlockhash", "getAccountInfo", "getTokenAccountBalance", "requestAirdrop"}


def test_client_payment(local: LocalSolana, parties: Parties, rpc: RpcFacade, client: Client) -> None:
    partial, full = payment(local, parties.owner, parties.fee_payer, parties.recipient, 250_000)

    simulated = client.simulate_transaction(partial).value  # sigVerify defaults to false, as on Solana
    assert simulated.err is None and simulated.units_consumed and simulated.logs
    assert any("TransferChecked" in line for line in simulated.logs)
    assert client.simulate_transaction(full, sig_verify=True, commitment=Confirmed).value.err is None
    assert isinstance(full.message, MessageV0)
    assert client.get_fee_for_message(full.message).value == 10_000

    sent = client.send_raw_transaction(
        bytes(full), TxOpts(skip_confirmation=False, last_valid_block_height=local.last_valid_block_height)
    ).value
    assert sent == full.signatures[0]
    assert local.token_balance(parties.recipient) == 250_000
    status = client.get_signature_statuses([sent, Signature.default()]).value
    assert status[1] is None
    assert status[0] is not None and status[0].err is None and status[0].slot == local.slot
    assert status[0].confirmation_status == TransactionConfirmationStatus.Finalized

    with pytest.raises(RPCException) as raised:
        client.send_raw_transaction(bytes(full))
    assert "already been processed" in str(raised.value)
    assert rpc.calls["sendTransaction"] == 2 and rpc.calls["simulateTransaction"] == 2
    assert rpc.calls["getSignatureStatuses"] >= 2


def test_client_skip_preflight_lands_a_failing_transfer(local: LocalSolana, parties: Parties, client: Client) -> None:
    """The x402 SDK's facilitator sends with skipPreflight and then reads the status."""
    _, tx = payment(local, parties.owner, parties.fee_payer, parties.recipient, 9_000_000)
    sent = client.send_raw_transaction(bytes(tx), TxOpts(skip_preflight=True, preflight_commitment=Confirmed)).value
    status = client.get_signature_statuses([sent]).value[0]
    assert status is not None and status.err == TransactionErrorInstructionError(2, InstructionErrorCustom(1))


def test_expired_blockhash_over_rpc(local: LocalSolana, parties: Parties, client: Client, http: httpx.Client) -> None:
    old = client.get_latest_blockhash().value.blockhash
    assert call(http, "isBlockhashValid", str(old), {"commitment": "processed"})["result"]["value"] is True
    local.expire_blockhash()
    valid = call(http, "isBlockhashValid", str(old))["result"]
    assert valid == {"context": {"slot": local.slot, "apiVersion": "2.2.0"}, "value": False}
    _, tx = payment(local, parties.owner, parties.fee_payer, parties.recipient, 1, blockhash=str(old))
    assert isinstance(tx.message, MessageV0)
    assert client.get_fee_for_message(tx.message).value is None
    with pytest.raises(RPCException, match="Blockhash not found"):
        client.send_raw_transaction(bytes(tx))


# ---------------------------------------------------------------- RpcFacade: the wire


def test_preflight_failure_shape(local: LocalSolana, parties: Parties, http: httpx.Client) -> None:
    _, tx = payment(local, parties.owner, parties.fee_payer, parties.recipient, 9_000_000)
    answer = call(http, "sendTransaction", b64(tx), {"encoding": "base64", "preflightCommitment": "confirmed"})
    assert answer["id"] == 1 and answer["jsonrpc"] == "2.0" and "result" not in answer
    error = answer["error"]
    assert error["code"] == -32002
    assert error["message"] == (
        "Transaction simulation failed: Error processing Instruction 2: custom program error: 0x1"
    )
    data = error["data"]
    assert data["err"] == {"InstructionError": [2, {"Custom": 1}]}
    assert data["accounts"] is None and data["returnData"] is None and data["unitsConsumed"] > 0
    assert "Program log: Error: insufficient funds" in data["logs"]
    assert local.status(str(tx.signatures[0])) is None  # preflight failures are not sent

    partial, _ = payment(local, parties.owner, parties.fee_payer, parties.recipient, 1)
    unsigned = call(http, "sendTransaction", b64(partial), {"encoding": "base64"})["error"]
    assert unsigned == {"code": -32003, "message": "Transaction signature verification failure"}


def test_send_base58_and_simulate_options(local: LocalSolana, parties: Parties, http: httpx.Client) -> None:
    partial, _ = payment(local, parties.owner, parties.fee_payer, parties.recipient, 10)
    old = local.latest_blockhash()
    local.expire_blockhash()

    stale = call(http, "simulateTransaction", b64(partial), {"encoding": "base64"})["result"]
    assert stale["context"] == {"slot": local.slot, "apiVersion": "2.2.0"}
    assert stale["value"]["err"] == "BlockhashNotFound"
    replaced = call(http, "simulateTransaction", b64(partial), {"encoding": "base64", "replaceRecentBlockhash": True})
    value = replaced["result"]["value"]
    assert value["err"] is None and value["unitsConsumed"] > 0
    assert value["replacementBlockhash"] == {
        "blockhash": local.latest_blockhash(),
        "lastValidBlockHeight": local.last_valid_block_height,
    }
    assert local.latest_blockhash() != old
    both = {"encoding": "base64", "sigVerify": True, "replaceRecentBlockhash": True}
    conflict = call(http, "simulateTransaction", b64(partial), both)
    assert conflict["error"]["code"] == -32602

    _, fresh = payment(local, parties.owner, parties.fee_payer, parties.recipient, 10)
    sent = call(http, "sendTransaction", b58encode(bytes(fresh)))  # base58 is the default encoding
    assert sent["result"] == str(fresh.signatures[0]) and local.token_balance(parties.recipient) == 10
    assert call(http, "sendTransaction", "0OIl")["error"]["code"] == -32602
    assert call(http, "sendTransaction", b64(fresh), {"encoding": "json"})["error"]["code"] == -32602


def test_protocol_errors_and_batches(rpc: RpcFacade, http: httpx.Client) -> None:
    unknown = call(http, "getBlockProduction")
    assert unknown == {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 1}
    unparseable = http.post("/", content=b"{nope", headers={"Content-Type": "application/json"})
    assert unparseable.status_code == 200
    assert unparseable.json() == {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}
    assert call(http, "getBalance", 12)["error"]["code"] == -32602
    assert call(http, "getBalance", "not-a-key")["error"]["code"] == -32602
    assert http.post("/", json={"id": 3, "method": "getSlot"}).json()["error"]["code"] == -32600

    assert http.get("/").status_code == 405
    assert http.post("/", content=b" " * ((1 << 20) + 1)).status_code == 413

    batch = http.post(
        "/",
        json=[
            {"jsonrpc": "2.0", "id": "a", "method": "getHealth"},
            {"jsonrpc": "2.0", "id": "b", "method": "getSlot", "params": [{"commitment": "finalized"}]},
            {"jsonrpc": "2.0", "id": "c", "method": "nope"},
        ],
    ).json()
    assert [item["id"] for item in batch] == ["a", "b", "c"]
    assert batch[0]["result"] == "ok" and isinstance(batch[1]["result"], int) and batch[2]["error"]["code"] == -32601
    assert rpc.calls["getHealth"] == 1 and rpc.calls["nope"] == 1

    # "localnet" is the CAIP-2 reference of solana:localnet; solana-py's parser wants a hash, so it is read raw
    assert call(http, "getGenesisHash")["result"] == "localnet"
    assert call(http, "getVersion")["result"] == {"solana-core": "2.2.0", "feature-set": 0}


def test_token_account_balance_errors(local: LocalSolana, http: httpx.Client) -> None:
    missing = call(http, "getTokenAccountBalance", str(Keypair().pubkey()))["error"]
    assert missing == {"code": -32602, "message": "Invalid param: could not find account"}
    wallet = str(Keypair().pubkey())
    local.airdrop(wallet, 10)
    assert call(http, "getTokenAccountBalance", wallet)["error"]["message"] == "Invalid param: not a Token account"
    local.fund(wallet, 0, lamports=0)
    empty = call(http, "getTokenAccountBalance", local.ata(wallet))["result"]["value"]
    assert empty == {"amount": "0", "decimals": 6, "uiAmount": 0.0, "uiAmountString": "0"}


def test_stop_ends_keep_alive_connections(local: LocalSolana) -> None:
    facade = RpcFacade(local).start()
    with httpx.Client(base_url=facade.url, timeout=5) as http:
        assert call(http, "getHealth")["result"] == "ok"
        assert call(http, "getHealth")["result"] == "ok"  # the same connection
        started = time.monotonic()
        facade.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(httpx.TransportError):
            http.post("/", json={"jsonrpc": "2.0", "id": 1, "method": "getHealth"})
    with pytest.raises(RuntimeError):
        _ = facade.url
    facade.stop()  # idempotent


def test_accounts_json_shape(local: LocalSolana, http: httpx.Client) -> None:
    value = call(http, "getAccountInfo", LOCAL_USDC_MINT, {"encoding": "base64"})["result"]["value"]
    mint = local.account(LOCAL_USDC_MINT)
    assert mint is not None
    assert value == {
        "data": [base64.b64encode(mint.data).decode(), "base64"],
        "executable": False,
        "lamports": mint.lamports,
        "owner": TOKEN_PROGRAM,
        "rentEpoch": mint.rent_epoch,
        "space": 82,
    }
    assert json.loads(json.dumps(value)) == value
