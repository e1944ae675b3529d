"""clawrouter.receipts: signed receipts, verified here and by eth-account."""

from __future__ import annotations

import base64
import hashlib
import json

import msgspec
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from clawrouter.keys import RouterKey
from clawrouter.receipts import (
    Receipt,
    ReceiptError,
    body_sha256,
    decode_receipt_header,
    encode_receipt_header,
    receipt_hash,
    sign_receipt,
    verify_receipt,
)

KEY = RouterKey.from_hex("0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
BODY = b'{"id":"chatcmpl-1","choices":[{"message":{"role":"assistant","content":"hi \xc3\xa9"}}]}'


def make_receipt(**changes):
    fields = {
        "id": "rcpt_req1",
        "request_id": "req1",
        "issued_at": 1_750_000_000,
        "model": "openai/gpt-4o-mini",
        "provider": "openai",
        "prompt_tokens": 12,
        "completion_tokens": 34,
        "quote": "2000",
        "charged": "1234",
        "cost_usd": "0.001234",
        "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "payer": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "network": "eip155:8453",
        "transaction": "0x" + "ab" * 32,
        "response_sha256": body_sha256(BODY),
    } | changes
    return Receipt(**fields)


def test_sign_and_verify():
    receipt = make_receipt()
    signed = sign_receipt(receipt, KEY)
    assert receipt.signature == "" and receipt.router == ""  # the input is untouched
    assert signed.router == KEY.address
    assert signed.signature.startswith("0x") and len(signed.signature) == 132
    verify_receipt(signed)
    verify_receipt(signed, body=BODY, router=KEY.address)
    verify_receipt(signed, router=KEY.address.lower())
    # deferred settlement: no transaction yet
    verify_receipt(sign_receipt(make_receipt(transaction=""), KEY), body=BODY)


def test_verified_by_eth_account():
    signed = sign_receipt(make_receipt(), KEY)
    message = encode_defunct(primitive=receipt_hash(signed))
    assert Account.recover_message(message, signature=signed.signature) == KEY.address


def test_canonical_form_is_sorted_json_without_signature():
    signed = sign_receipt(make_receipt(model="mödel\u2028\x01"), KEY)
    document = msgspec.to_builtins(signed)
    del document["signature"]
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert receipt_hash(signed) == hashlib.sha256(canonical).digest()
    assert receipt_hash(signed) == receipt_hash(make_receipt(model="mödel\u2028\x01", router=KEY.address))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "rcpt_req2"),
        ("request_id", "req2"),
        ("issued_at", 1_750_000_001),
        ("model", "openai/gpt-4o"),
        ("provider", "openrouter"),
        ("prompt_tokens", 13),
        ("completion_tokens", 0),
        ("quote", "20000"),
        ("charged", "12340"),
        ("cost_usd", "0.01234"),
        ("asset", "0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
        ("payer", "0x" + "11" * 20),
        ("network", "eip155:84532"),
        ("transaction", ""),
        ("response_sha256", body_sha256(b"another body")),
        ("router", RouterKey.generate().address),
    ],
)
def test_tampering_with_any_field(field, value):
    signed = sign_receipt(make_receipt(), KEY)
    tampered = msgspec.structs.replace(signed, **{field: value})
    with pytest.raises(ReceiptError, match="does not match its router"):
        verify_receipt(tampered)


def test_every_field_is_covered():
    # the parametrization above must name every field but the signature
    names = {name for name, _ in test_tampering_with_any_field.pytestmark[0].args[1]}
    assert names == set(Receipt.__struct_fields__) - {"signature"}


def test_signed_by_another_key():
    other = RouterKey.generate()
    forged = msgspec.structs.replace(sign_receipt(make_receipt(), other), router=KEY.address)
    with pytest.raises(ReceiptError, match="does not match its router"):
        verify_receipt(forged)


def test_bad_signatures():
    signed = sign_receipt(make_receipt(), KEY)
    with pytest.raises(ReceiptError, match="not signed"):
        verify_receipt(make_receipt(router=KEY.address))
    for bad in ("0x1234", "zz" * 66, signed.signature[:-2] + "1d", "0x" + "00" * 65):
        with pytest.raises(ReceiptError, match="signature is invalid"):
            verify_receipt(msgspec.structs.replace(signed, signature=bad))


def test_wrong_body():
    signed = sign_receipt(make_receipt(), KEY)
    with pytest.raises(ReceiptError, match="response_sha256"):
        verify_receipt(signed, body=BODY + b" ")
    with pytest.raises(ReceiptError, match="response_sha256"):
        verify_receipt(signed, body=b"")


def test_wrong_router():
    signed = sign_receipt(make_receipt(), KEY)
    with pytest.raises(ReceiptError, match="expected"):
        verify_receipt(signed, router=RouterKey.generate().address)


def test_header_round_trip():
    signed = sign_receipt(make_receipt(), KEY)
    header = encode_receipt_header(signed)
    assert isinstance(header, bytes) and header.isascii()
    assert json.loads(base64.b64decode(header))["signature"] == signed.signature
    assert decode_receipt_header(header) == signed
    assert decode_receipt_header(header.decode()) == signed
    verify_receipt(decode_receipt_header(header), body=BODY, router=KEY.address)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        "",
        b"not base64!",
        "é",
        base64.b64encode(b"not json"),
        base64.b64encode(b"[]"),
        base64.b64encode(b'{"id": "rcpt_1"}'),
        base64.b64encode(msgspec.json.encode(msgspec.to_builtins(make_receipt()) | {"prompt_tokens": "12"})),
        base64.b64encode(b"x" * 20_000),
        None,
        12,
    ],
)
def test_malformed_header(value):
    with pytest.raises(ReceiptError):
        decode_receipt_header(value)


# RouterKey (clawrouter.keys), the signer of receipts


def test_router_key():
    secret = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
    assert KEY.address == Account.from_key(bytes.fromhex(secret)).address
    assert RouterKey.from_hex(secret) == KEY == RouterKey.from_hex(f" 0X{secret.upper()}\n")
    assert KEY.private_key == bytes.fromhex(secret)
    assert secret not in repr(KEY) and secret not in str(KEY) and KEY.address in repr(KEY)
    digest = hashlib.sha256(b"x").digest()
    assert KEY.sign(digest) == bytes(Account.unsafe_sign_hash(digest, bytes.fromhex(secret)).signature)
    assert RouterKey.generate() != RouterKey.generate()


def test_router_key_derive():
    assert KEY.derive(b"quote") == RouterKey.from_hex(KEY.private_key.hex()).derive(b"quote")
    assert len(KEY.derive(b"quote")) == 32
    assert KEY.derive(b"quote") != KEY.derive(b"other") != RouterKey.generate().derive(b"other")


@pytest.mark.parametrize("bad", ["", "0x", "12" * 31, "12" * 33, "zz" * 32, "12 " * 21 + "1", "00" * 32, "ff" * 32])
def test_router_key_rejects_bad_hex_without_echoing_it(bad):
    with pytest.raises(ValueError) as info:
        RouterKey.from_hex(bad)
    assert len(bad) < 8 or bad not in str(info.value)


def test_router_key_from_env(monkeypatch):
    monkeypatch.delenv("CLAW_TEST_KEY", raising=False)
    assert RouterKey.from_env("CLAW_TEST_KEY") is None
    monkeypatch.setenv("CLAW_TEST_KEY", "  ")
    assert RouterKey.from_env("CLAW_TEST_KEY") is None
    monkeypatch.setenv("CLAW_TEST_KEY", KEY.private_key.hex())
    assert RouterKey.from_env("CLAW_TEST_KEY") == KEY
    monkeypatch.setenv("CLAW_TEST_KEY", "deadbeef")
    with pytest.raises(ValueError, match=r"\$CLAW_TEST_KEY") as info:
        RouterKey.from_env("CLAW_TEST_KEY")
    assert "deadbeef" not in str(info.value)
