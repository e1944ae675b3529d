"""The project's EIP-3009 test token (TestUSDC) and the local chains that run it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import chains
import pytest
from chains import authorization_args, authorization_typed_data, missing, send_as, sign_authorization
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from clawrouter.evm.localchain import BASE_SEPOLIA_USDC, DEV_KEYS, find_anvil, load_token_artifact

ROOT = Path(__file__).resolve().parent.parent

inprocess_chain = chains.inprocess_chain  # fixtures
anvil_chain = chains.anvil_chain

TRANSFER_TYPEHASH = Web3.keccak(
    text="TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
    "uint256 validBefore,bytes32 nonce)"
)


# ---------------------------------------------------------------- the artifact


def test_artifact_matches_a_rebuild_of_the_source() -> None:
    solcjs = ROOT / "node_modules" / ".bin" / "solcjs"
    if not solcjs.exists():
        missing("node_modules/.bin/solcjs is missing: run `npm ci` at the repository root")
    proc = subprocess.run(
        [sys.executable, "scripts/build_contracts.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_artifact_loads() -> None:
    artifact = load_token_artifact()
    names = {item.get("name") for item in artifact.abi}
    assert {"transferWithAuthorization", "receiveWithAuthorization", "authorizationState", "mint"} <= names
    overloads = [
        [i["type"] for i in item["inputs"]] for item in artifact.abi if item.get("name") == "transferWithAuthorization"
    ]
    assert sorted(overloads) == sorted(
        [
            ["address", "address", "uint256", "uint256", "uint256", "bytes32", "uint8", "bytes32", "bytes32"],
            ["address", "address", "uint256", "uint256", "uint256", "bytes32", "bytes"],
        ]
    )
    assert artifact.bytecode.startswith("0x") and artifact.deployed_bytecode.startswith("0x")
    assert artifact.deployed_bytecode[2:] in artifact.bytecode  # no immutables: runtime code is copied verbatim


def test_dev_keys_are_distinct_and_deterministic() -> None:
    assert len(set(DEV_KEYS)) == len(DEV_KEYS) >= 3
    assert DEV_KEYS[0] == Web3.keccak(text="clawrouter-dev-0").to_0x_hex()


# ---------------------------------------------------------------- shared checks


def _pay(chain: Any, payer: Any, to: str, value: int, relayer: Any, *, bytes_overload: bool = False, **kw: Any) -> Any:
    """Sign an authorization as ``payer`` and submit it from ``relayer``; the receipt and the message."""
    typed = authorization_typed_data(chain, payer.address, to, value, **kw)
    signed = sign_authorization(payer.key, typed)
    token = chain.token_contract
    if bytes_overload:
        call = token.get_function_by_signature(
            "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
        )(*authorization_args(typed), signed.signature)
    else:
        call = token.get_function_by_signature(
            "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
        )(*authorization_args(typed), signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big"))
    return call, typed


def _check_happy_path(chain: Any) -> None:
    payer, payee, relayer = chain.accounts[0], chain.accounts[1], chain.accounts[2]
    chain.fund(payer.address, 10_000_000)
    before_payer, before_payee = chain.usdc_balance(payer.address), chain.usdc_balance(payee.address)

    call, typed = _pay(chain, payer, payee.address, 1_234_567, relayer)
    call.call({"from": relayer.address})  # simulation passes
    receipt = send_as(chain, relayer, call)
    assert receipt["status"] == 1
    assert chain.usdc_balance(payer.address) == before_payer - 1_234_567
    assert chain.usdc_balance(payee.address) == before_payee + 1_234_567
    nonce = typed["message"]["nonce"]
    assert chain.token_contract.functions.authorizationState(payer.address, nonce).call() is True
    used = chain.token_contract.events.AuthorizationUsed().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["authorizer"], e["args"]["nonce"]) for e in used] == [(payer.address, nonce)]
    transfers = chain.token_contract.events.Transfer().process_receipt(receipt, errors=DISCARD)
    assert [dict(e["args"]) for e in transfers] == [{"from": payer.address, "to": payee.address, "value": 1_234_567}]

    # a replay of the same authorization reverts, in simulation and on chain
    with pytest.raises(ContractLogicError, match="authorization is used or canceled"):
        call.call({"from": relayer.address})
    assert send_as(chain, relayer, call)["status"] == 0
    assert chain.usdc_balance(payee.address) == before_payee + 1_234_567


# ---------------------------------------------------------------- in-process chain


def test_inprocess_chain_basics(inprocess_chain: Any) -> None:
    chain = inprocess_chain
    token = chain.token_contract
    assert chain.network == f"eip155:{chain.chain_id}"
    assert chain.w3.eth.chain_id == chain.chain_id
    assert Web3.is_checksum_address(chain.token)
    assert token.functions.name().call() == "USDC"
    assert token.functions.symbol().call() == "USDC"
    assert token.functions.version().call() == "2"
    assert token.functions.decimals().call() == 6
    assert token.functions.TRANSFER_WITH_AUTHORIZATION_TYPEHASH().call() == TRANSFER_TYPEHASH
    for account in chain.accounts:
        assert chain.w3.eth.get_balance(account.address) >= 10**18


def test_inprocess_domain_separator_is_eip712(inprocess_chain: Any) -> None:
    from eth_account.messages import encode_typed_data

    chain = inprocess_chain
    typed = authorization_typed_data(chain, chain.accounts[0].address, chain.accounts[1].address, 1)
    expected = encode_typed_data(full_message=typed).header  # keccak of the encoded domain
    assert chain.token_contract.functions.DOMAIN_SEPARATOR().call() == expected


def test_inprocess_mint_and_erc20(inprocess_chain: Any) -> None:
    chain = inprocess_chain
    alice, bob, carol = chain.accounts[:3]
    token = chain.token_contract
    supply = token.functions.totalSupply().call()
    chain.fund(alice.address, 5_000_000, eth_wei=0)
    assert chain.usdc_balance(alice.address) == 5_000_000
    assert token.functions.totalSupply().call() == supply + 5_000_000

    # anyone may mint (test token)
    assert send_as(chain, bob, token.functions.mint(bob.address, 7))["status"] == 1
    assert chain.usdc_balance(bob.address) == 7

    receipt = send_as(chain, alice, token.functions.transfer(bob.address, 1_000_000))
    assert receipt["status"] == 1
    assert [dict(e["args"]) for e in token.events.Transfer().process_receipt(receipt, errors=DISCARD)] == [
        {"from": alice.address, "to": bob.address, "value": 1_000_000}
    ]
    assert chain.usdc_balance(alice.address) == 4_000_000
    assert chain.usdc_balance(bob.address) == 1_000_007

    with pytest.raises(ContractLogicError, match="transfer amount exceeds balance"):
        token.functions.transfer(bob.address, 4_000_001).call({"from": alice.address})

    assert send_as(chain, alice, token.functions.approve(carol.address, 300))["status"] == 1
    assert token.functions.allowance(alice.address, carol.address).call() == 300
    with pytest.raises(ContractLogicError, match="exceeds allowance"):
        token.functions.transferFrom(alice.address, carol.address, 301).call({"from": carol.address})
    assert send_as(chain, carol, token.functions.transferFrom(alice.address, carol.address, 200))["status"] == 1
    assert token.functions.allowance(alice.address, carol.address).call() == 100
    assert chain.usdc_balance(carol.address) == 200


def test_inprocess_transfer_with_authorization(inprocess_chain: Any) -> None:
    _check_happy_path(inprocess_chain)


def test_inprocess_bytes_signature_overload(inprocess_chain: Any) -> None:
    chain = inprocess_chain
    payer, payee, relayer = chain.accounts[:3]
    chain.fund(payer.address, 1_000)
    call, typed = _pay(chain, payer, payee.address, 999, relayer, bytes_overload=True)
    assert send_as(chain, relayer, call)["status"] == 1
    assert chain.usdc_balance(payee.address) == 999
    assert chain.token_contract.functions.authorizationState(payer.address, typed["message"]["nonce"]).call()
    with pytest.raises(ContractLogicError, match="authorization is used or canceled"):
        call.call({"from": relayer.address})


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        ({"valid_before_offset": -1}, "authorization is expired"),
        ({"valid_before_offset": -3600, "valid_after_offset": -7200}, "authorization is expired"),
        ({"valid_after_offset": 600}, "authorization is not yet valid"),
        ({"valid_after_offset": 60, "valid_before_offset": 3600}, "authorization is not yet valid"),
    ],
)
def test_inprocess_authorization_outside_its_window_reverts(
    inprocess_chain: Any, window: dict[str, int], reason: str
) -> None:
    chain = inprocess_chain
    payer, payee, relayer = chain.accounts[:3]
    chain.fund(payer.address, 1_000)
    now = int(time.time())
    kw = {
        "valid_after": now + window.get("valid_after_offset", -600),
        "valid_before": now + window.get("valid_before_offset", 300),
    }
    for bytes_overload in (False, True):
        call, _ = _pay(chain, payer, payee.address, 10, relayer, bytes_overload=bytes_overload, **kw)
        with pytest.raises(ContractLogicError, match=reason):
            call.call({"from": relayer.address})
        assert send_as(chain, relayer, call)["status"] == 0
    assert chain.usdc_balance(payee.address) == 0


def test_inprocess_bad_signatures_revert(inprocess_chain: Any) -> None:
    chain = inprocess_chain
    payer, payee, relayer = chain.accounts[:3]
    chain.fund(payer.address, 1_000)
    token = chain.token_contract
    vrs = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
    raw = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"

    # signed by someone else than `from`
    typed = authorization_typed_data(chain, payer.address, payee.address, 10)
    wrong = sign_authorization(payee.key, typed)
    args = authorization_args(typed)
    for call in (
        token.get_function_by_signature(vrs)(*args, wrong.v, wrong.r.to_bytes(32, "big"), wrong.s.to_bytes(32, "big")),
        token.get_function_by_signature(raw)(*args, wrong.signature),
    ):
        with pytest.raises(ContractLogicError, match="invalid signature"):
            call.call({"from": relayer.address})
        assert send_as(chain, relayer, call)["status"] == 0

    # a signature over a different message (value changed after signing)
    good = sign_authorization(payer.key, typed)
    tampered = [*args[:2], 11, *args[3:]]
    with pytest.raises(ContractLogicError, match="invalid signature"):
        token.get_function_by_signature(raw)(*tampered, good.signature).call({"from": relayer.address})

    # for a different token domain (chain id)
    other = authorization_typed_data(chain, payer.address, payee.address, 10)
    other["domain"]["chainId"] = 84532
    with pytest.raises(ContractLogicError, match="invalid signature"):
        token.get_function_by_signature(raw)(
            *authorization_args(other), sign_authorization(payer.key, other).signature
        ).call({"from": relayer.address})

    # the malleable twin (s -> n - s, v flipped) of a valid signature is rejected
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = (n - good.s).to_bytes(32, "big")
    with pytest.raises(ContractLogicError, match="invalid signature 's' value"):
        token.get_function_by_signature(vrs)(*args, 55 - good.v, good.r.to_bytes(32, "big"), high_s).call(
            {"from": relayer.address}
        )
    # v outside {27, 28}
    with pytest.raises(ContractLogicError, match="invalid signature 'v' value"):
        token.get_function_by_signature(vrs)(
            *args, good.v - 27, good.r.to_bytes(32, "big"), good.s.to_bytes(32, "big")
        ).call({"from": relayer.address})
    with pytest.raises(ContractLogicError, match="invalid signature length"):
        token.get_function_by_signature(raw)(*args, good.signature[:64]).call({"from": relayer.address})

    # nothing moved, nonce still unused: the good signature still works
    assert chain.usdc_balance(payee.address) == 0
    assert send_as(chain, relayer, token.get_function_by_signature(raw)(*args, good.signature))["status"] == 1
    assert chain.usdc_balance(payee.address) == 10


def test_inprocess_receive_with_authorization(inprocess_chain: Any) -> None:
    chain = inprocess_chain
    payer, payee, relayer = chain.accounts[:3]
    chain.fund(payer.address, 1_000)
    typed = authorization_typed_data(chain, payer.address, payee.address, 400, primary_type="ReceiveWithAuthorization")
    signed = sign_authorization(payer.key, typed)
    call = chain.token_contract.get_function_by_signature(
        "receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
    )(*authorization_args(typed), signed.signature)
    with pytest.raises(ContractLogicError, match="caller must be the payee"):
        call.call({"from": relayer.address})
    assert send_as(chain, payee, call)["status"] == 1
    assert chain.usdc_balance(payee.address) == 400
    # a ReceiveWithAuthorization signature is no TransferWithAuthorization signature
    typed = authorization_typed_data(chain, payer.address, payee.address, 1, primary_type="ReceiveWithAuthorization")
    signed = sign_authorization(payer.key, typed)
    with pytest.raises(ContractLogicError, match="invalid signature"):
        chain.token_contract.get_function_by_signature(
            "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
        )(*authorization_args(typed), signed.signature).call({"from": relayer.address})


def test_inprocess_block_time_follows_the_wall_clock(inprocess_chain: Any) -> None:
    chain = inprocess_chain
    payer, payee, relayer = chain.accounts[:3]
    chain.fund(payer.address, 1_000_000)
    # many blocks in quick succession do not run the chain's clock ahead
    for _ in range(25):
        chain.fund(payee.address, 1, eth_wei=0)
    assert chain.w3.eth.get_block("latest")["timestamp"] <= time.time() + 1

    time.sleep(2.2)  # the process idles; the chain must not stay in the past
    now = int(time.time())
    # a tight window around "now": fails if the chain's time lags or leads by more than 2 s
    call, _ = _pay(chain, payer, payee.address, 5, relayer, valid_after=now - 2, valid_before=now + 3)
    call.call({"from": relayer.address})  # eth_call at "latest"
    receipt = send_as(chain, relayer, call)
    assert receipt["status"] == 1
    block = chain.w3.eth.get_block(receipt["blockNumber"])
    assert now - 2 < block["timestamp"] < now + 3
    assert chain.w3.eth.get_block("latest")["timestamp"] >= now - 1


def test_inprocess_provider_is_shareable(inprocess_chain: Any) -> None:
    chain = inprocess_chain
    other = Web3(chain.provider)
    address = Account.from_key(DEV_KEYS[3]).address
    chain.fund(address, 42)
    contract = other.eth.contract(address=chain.token, abi=load_token_artifact().abi)
    assert contract.functions.balanceOf(address).call() == 42


# ---------------------------------------------------------------- anvil


def test_find_anvil_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLAWROUTER_ANVIL", str(tmp_path / "no-such-anvil"))
    assert find_anvil() is None
    fake = tmp_path / "anvil"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CLAWROUTER_ANVIL", str(fake))
    assert find_anvil() == str(fake)


def test_anvil_chain_is_base_sepolia(anvil_chain: Any) -> None:
    chain = anvil_chain
    assert chain.chain_id == 84532 and chain.network == "eip155:84532"
    assert chain.w3.eth.chain_id == 84532
    assert chain.token == BASE_SEPOLIA_USDC
    assert chain.rpc_url.startswith("http://127.0.0.1:")
    assert chain.w3.eth.get_code(chain.token).to_0x_hex() == load_token_artifact().deployed_bytecode
    token = chain.token_contract
    assert (token.functions.name().call(), token.functions.version().call()) == ("USDC", "2")
    from eth_account.messages import encode_typed_data

    typed = authorization_typed_data(chain, chain.accounts[0].address, chain.accounts[1].address, 1)
    assert token.functions.DOMAIN_SEPARATOR().call() == encode_typed_data(full_message=typed).header


def test_anvil_transfer_with_authorization(anvil_chain: Any) -> None:
    _check_happy_path(anvil_chain)


def test_anvil_bytes_signature_overload(anvil_chain: Any) -> None:
    chain = anvil_chain
    payer, payee, relayer = chain.accounts[:3]
    chain.fund(payer.address, 1_000)
    before = chain.usdc_balance(payee.address)
    call, _ = _pay(chain, payer, payee.address, 321, relayer, bytes_overload=True)
    assert send_as(chain, relayer, call)["status"] == 1
    assert chain.usdc_balance(payee.address) == before + 321


def test_anvil_process_is_gone_after_stop() -> None:
    from clawrouter.evm.localchain import AnvilChain

    anvil = find_anvil()
    if anvil is None:
        missing("anvil not found: run `npm ci` at the repository root, or set CLAWROUTER_ANVIL")
    chain = AnvilChain(anvil)
    pid = chain.pid
    assert pid is not None and chain.running
    assert chain.w3.eth.block_number >= 0
    chain.stop()
    assert not chain.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    chain.stop()  # idempotent
