"""clawrouter.evm.eip3009 against eth-account, the reference EIP-712 implementation."""

from __future__ import annotations

import msgspec
import pytest
from coincurve import PrivateKey, PublicKey
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak as reference_keccak
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from clawrouter.evm import eip3009
from clawrouter.evm.eip3009 import (
    Authorization,
    address_of,
    decode_signature,
    domain_separator,
    recover,
    sign_authorization,
    sign_digest,
    to_checksum,
    transfer_digest,
)

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"

uint256 = st.integers(min_value=0, max_value=2**256 - 1)
private_keys = st.integers(min_value=1, max_value=N - 1).map(lambda k: k.to_bytes(32, "big"))
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
nonces = st.binary(min_size=32, max_size=32)
strings = st.text(max_size=40)

TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ],
}


def typed_data(name, version, chain_id, asset, from_, to, value, valid_after, valid_before, nonce):
    return {
        "types": TYPES,
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": name, "version": version, "chainId": chain_id, "verifyingContract": asset},
        "message": {
            "from": from_,
            "to": to,
            "value": value,
            "validAfter": valid_after,
            "validBefore": valid_before,
            "nonce": nonce,
        },
    }


def reference_digest(message):
    signable = encode_typed_data(full_message=message)
    return reference_keccak(b"\x19" + signable.version + signable.header + signable.body)


@settings(max_examples=60, deadline=None)
@given(
    key=private_keys,
    name=strings,
    version=strings,
    chain_id=uint256,
    asset=addresses,
    to=addresses,
    value=uint256,
    valid_after=uint256,
    valid_before=uint256,
    nonce=nonces,
)
def test_matches_eth_account(key, name, version, chain_id, asset, to, value, valid_after, valid_before, nonce):
    message = typed_data(name, version, chain_id, asset, address_of(key), to, value, valid_after, valid_before, nonce)
    expected = Account.sign_typed_data(key, full_message=message)

    authorization, signature = sign_authorization(
        key,
        name=name,
        version=version,
        chain_id=chain_id,
        asset=asset,
        to=to,
        value=value,
        valid_after=valid_after,
        valid_before=valid_before,
        nonce=nonce,
    )
    domain = domain_separator(name, version, chain_id, asset)
    digest = authorization.digest(domain)
    assert digest == reference_digest(message) == bytes(expected.message_hash)
    assert digest == transfer_digest(domain, authorization.from_, to, value, valid_after, valid_before, nonce)
    # RFC 6979 on both sides: the very same bytes, not just an equivalent signature
    assert decode_signature(signature) == bytes(expected.signature)
    assert authorization.from_ == Account.from_key(key).address
    assert recover(digest, decode_signature(signature)) == authorization.from_.lower()
    assert authorization.signer(domain, signature) == authorization.from_.lower()
    signable = encode_typed_data(full_message=message)
    assert Account.recover_message(signable, signature=decode_signature(signature)) == authorization.from_


@settings(max_examples=40, deadline=None)
@given(key=private_keys, digest=st.binary(min_size=32, max_size=32))
def test_sign_digest_and_recover_match_eth_account(key, digest):
    signature = sign_digest(key, digest)
    assert len(signature) == 65 and signature[64] in (27, 28)
    assert int.from_bytes(signature[32:64], "big") <= N // 2
    assert signature == bytes(Account.unsafe_sign_hash(digest, key).signature)
    assert recover(digest, signature) == Account.from_key(key).address.lower()
    # v as 0/1 is accepted too
    assert recover(digest, signature[:64] + bytes((signature[64] - 27,))) == Account.from_key(key).address.lower()


def test_authorization_wire_format():
    authorization, signature = sign_authorization(
        KEY, name="USD Coin", version="2", chain_id=8453, asset=USDC, to=PAY_TO, value=1500, valid_after=0,
        valid_before=1_900_000_000, nonce=bytes(range(32)),
    )  # fmt: skip
    wire = msgspec.to_builtins(authorization)
    assert wire == {
        "from": Account.from_key(KEY).address,
        "to": PAY_TO,
        "value": "1500",
        "validAfter": "0",
        "validBefore": "1900000000",
        "nonce": "0x" + bytes(range(32)).hex(),
    }
    decoded = msgspec.json.decode(msgspec.json.encode(wire), type=Authorization)
    assert decoded == authorization
    assert decoded.signer(domain_separator("USD Coin", "2", 8453, USDC), signature) == wire["from"].lower()
    # the domain matters: another chain's domain recovers someone else
    assert decoded.signer(domain_separator("USD Coin", "2", 84532, USDC), signature) != wire["from"].lower()


def test_random_nonce_by_default():
    common = dict(name="USDC", version="2", chain_id=84532, asset=USDC, to=PAY_TO, value=1, valid_after=0,
                  valid_before=10)  # fmt: skip
    first, _ = sign_authorization(KEY, **common)
    second, _ = sign_authorization(KEY, **common)
    assert first.nonce != second.nonce and len(first.nonce) == 66


def _signed():
    digest = reference_keccak(b"some digest")
    return digest, sign_digest(KEY, digest)


def _with_s(signature, s, v=None):
    v = signature[64] if v is None else v
    return signature[:32] + s.to_bytes(32, "big") + bytes((v,))


def test_recover_rejects_high_s():
    digest, signature = _signed()
    s = int.from_bytes(signature[32:64], "big")
    flipped = _with_s(signature, N - s, 55 - signature[64])  # 27 <-> 28
    # the malleated twin is mathematically valid for the same key (plain libsecp256k1 recovers it) ...
    twin = PublicKey.from_signature_and_message(flipped[:64] + bytes((flipped[64] - 27,)), digest, hasher=None)
    assert twin.format() == PrivateKey(KEY).public_key.format()
    # ... but USDC rejects it, and so do we
    with pytest.raises(ValueError, match="high-s"):
        recover(digest, flipped)


@pytest.mark.parametrize("v", [0, 1, 27, 28])
def test_recover_accepts_both_v_conventions(v):
    digest, signature = _signed()
    result = recover(digest, signature[:64] + bytes((v,)))
    right = (v % 27) == (signature[64] - 27)
    assert (result == Account.from_key(KEY).address.lower()) is right


@pytest.mark.parametrize("v", [2, 3, 26, 29, 30, 255])
def test_recover_rejects_bad_v(v):
    digest, signature = _signed()
    with pytest.raises(ValueError, match="v must be"):
        recover(digest, signature[:64] + bytes((v,)))


@pytest.mark.parametrize("length", [0, 64, 66, 130])
def test_recover_rejects_bad_length(length):
    digest, signature = _signed()
    with pytest.raises(ValueError, match="65 bytes"):
        recover(digest, (signature * 3)[:length])
    with pytest.raises(ValueError, match="digest must be 32 bytes"):
        recover(digest[:31], signature)


def test_recover_rejects_out_of_range_r_and_s():
    digest, signature = _signed()
    with pytest.raises(ValueError, match="r is out of range"):
        recover(digest, bytes(32) + signature[32:])
    with pytest.raises(ValueError, match="r is out of range"):
        recover(digest, N.to_bytes(32, "big") + signature[32:])
    with pytest.raises(ValueError, match="s is out of range"):
        recover(digest, _with_s(signature, 0))
    with pytest.raises(ValueError, match="s is out of range"):
        recover(digest, _with_s(signature, N))


def test_recover_rejects_r_off_the_curve():
    digest, signature = _signed()
    # x = 5 has no point on secp256k1 (5**3 + 7 = 132 is not a square mod p)
    with pytest.raises(ValueError, match="does not recover"):
        recover(digest, (5).to_bytes(32, "big") + signature[32:])


def test_tampered_digest_recovers_someone_else():
    digest, signature = _signed()
    tampered = bytes((digest[0] ^ 1,)) + digest[1:]
    assert recover(tampered, signature) != Account.from_key(KEY).address.lower()


@settings(max_examples=200)
@given(address=addresses)
def test_checksum_matches_eth_utils(address):
    assert to_checksum(address) == to_checksum_address(address)
    assert to_checksum(address.upper().replace("0X", "0x")) == to_checksum_address(address)


def test_checksum_vectors():
    # EIP-55's own examples
    for address in (
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ):
        assert to_checksum(address.lower()) == address


def test_address_of():
    assert address_of(KEY) == Account.from_key(KEY).address


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"from_": "0x1234"}, "from"),
        ({"to": "0x" + "zz" * 20}, "to"),
        ({"to": "0x" + "ab " * 13 + "a"}, "to"),
        ({"to": "ab" * 21}, "to"),
        ({"value": -1}, "value"),
        ({"value": 2**256}, "value"),
        ({"value": True}, "value"),
        ({"valid_after": 1.0}, "validAfter"),
        ({"valid_before": "5"}, "validBefore"),
        ({"nonce": bytes(31)}, "nonce"),
        ({"domain": bytes(33)}, "domain"),
    ],
)
def test_transfer_digest_validates(kwargs, field):
    args = {
        "domain": domain_separator("USDC", "2", 84532, USDC),
        "from_": PAY_TO,
        "to": USDC,
        "value": 1,
        "valid_after": 0,
        "valid_before": 1,
        "nonce": bytes(32),
    } | kwargs
    with pytest.raises(ValueError, match=f"^{field}:"):
        transfer_digest(**args)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("value", ""),
        ("value", "-1"),
        ("value", "+1"),
        ("value", " 1"),
        ("value", "1_000"),
        ("value", "0x10"),
        ("value", "\u0661"),  # ARABIC-INDIC DIGIT ONE: int() accepts it, the spec does not
        ("value", str(2**256)),
        ("validAfter", "1.5"),
        ("validBefore", "9" * 79),
        ("nonce", "0x" + "00" * 31),
        ("nonce", "00" * 32 + "00"),
        ("nonce", "0x" + "g0" * 32),
        ("from", "0xabc"),
    ],
)
def test_authorization_digest_validates(field, bad):
    wire = {
        "from": PAY_TO,
        "to": USDC,
        "value": "1",
        "validAfter": "0",
        "validBefore": "1",
        "nonce": "0x" + "11" * 32,
    } | {field: bad}
    authorization = msgspec.convert(wire, Authorization)
    with pytest.raises(ValueError, match=f"^{field}:"):
        authorization.digest(domain_separator("USDC", "2", 84532, USDC))


def test_bad_private_keys():
    for key in (bytes(32), N.to_bytes(32, "big"), bytes(31), b"\x01" * 33):
        with pytest.raises(ValueError):
            address_of(key)
    with pytest.raises(ValueError, match="digest must be 32 bytes"):
        sign_digest(KEY, bytes(31))


def test_decode_signature():
    _, signature = _signed()
    assert decode_signature("0x" + signature.hex()) == signature
    for bad in ("", signature.hex(), "0x" + signature.hex()[:-2], "0x" + "zz" * 65):
        with pytest.raises(ValueError, match="signature"):
            decode_signature(bad)


def test_keccak_backend():
    assert eip3009.keccak(b"") == reference_keccak(b"")
    assert eip3009.keccak(b"x" * 1000) == reference_keccak(b"x" * 1000)
