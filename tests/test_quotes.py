"""clawrouter.quotes: stateless quote tokens."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clawrouter.quotes import QuoteError, QuoteSigner

SECRET = b"s" * 32
NOW = 1_750_000_000.0
TERMS = {
    "digest": hashlib.sha256(b'{"model":"auto","messages":[]}').digest(),
    "amount": 1234,
    "pay_to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
    "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    "network": "eip155:8453",
}


def issue(signer=None, **changes):
    return (signer or QuoteSigner(SECRET)).issue(**(TERMS | changes), now=NOW)


def check_code(token, signer=None, now=NOW + 1, **changes):
    with pytest.raises(QuoteError) as info:
        (signer or QuoteSigner(SECRET)).check(token, **(TERMS | changes), now=now)
    assert info.value.message == str(info.value)
    return info.value.code


def test_round_trip():
    signer = QuoteSigner(SECRET, ttl_seconds=60)
    token = signer.issue(**TERMS, now=NOW)
    expires, mac = token.split(".")
    assert int(expires) == NOW + 60 and len(mac) == 22
    signer.check(token, **TERMS, now=NOW)
    signer.check(token, **TERMS, now=NOW + 59.9)
    # another replica with the same secret agrees
    QuoteSigner(SECRET, ttl_seconds=5).check(token, **TERMS, now=NOW + 30)


def test_default_clock():
    signer = QuoteSigner(SECRET)
    signer.check(signer.issue(**TERMS), **TERMS)


def test_addresses_are_case_insensitive():
    token = issue()
    QuoteSigner(SECRET).check(
        token, **(TERMS | {"pay_to": TERMS["pay_to"].lower(), "asset": TERMS["asset"].upper()}), now=NOW
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"digest": hashlib.sha256(b"another body").digest()},
        {"digest": TERMS["digest"][:31]},
        {"amount": 1235},
        {"amount": 0},
        {"pay_to": "0x" + "11" * 20},
        {"asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e"},
        {"network": "eip155:84532"},
    ],
)
def test_each_bound_field(changes):
    assert check_code(issue(), **changes) == "invalid_quote"


def test_fields_do_not_run_into_each_other():
    # moving characters between neighbouring fields must not keep the MAC
    token = issue(pay_to="0xab", asset="0xcd", network="eip155:1")
    assert check_code(token, pay_to="0xa", asset="b0xcd", network="eip155:1") == "invalid_quote"
    assert check_code(token, pay_to="0xab", asset="0xcde", network="ip155:1") == "invalid_quote"


def test_expired():
    token = issue()
    QuoteSigner(SECRET).check(token, **TERMS, now=NOW + 299)
    assert check_code(token, now=NOW + 300) == "quote_expired"
    assert check_code(token, now=NOW + 10_000) == "quote_expired"


def test_moved_expiry_is_tampering_not_expiry():
    token = issue()
    expires, mac = token.split(".")
    assert check_code(f"{int(expires) + 3600}.{mac}") == "invalid_quote"
    assert check_code(f"{int(expires) - 3600}.{mac}") == "invalid_quote"
    assert check_code(f"0{expires}.{mac}") == "invalid_quote"


def test_another_secret():
    assert check_code(issue(), signer=QuoteSigner(b"t" * 32)) == "invalid_quote"


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "nodot",
        "1750000300",
        "abc.AAAAAAAAAAAAAAAAAAAAAA",
        "-1750000300.AAAAAAAAAAAAAAAAAAAAAA",
        "+1750000300.AAAAAAAAAAAAAAAAAAAAAA",
        " 1750000300.AAAAAAAAAAAAAAAAAAAAAA",
        "1_750_000_300.AAAAAAAAAAAAAAAAAAAAAA",
        "\u0661\u0667.AAAAAAAAAAAAAAAAAAAAAA",
        "9" * 400 + ".AAAAAAAAAAAAAAAAAAAAAA",
        "1750000300.",
        "1750000300.!!!notbase64!!!",
        "1750000300.AAAAAAAAAAAAAAAAAAAAAA==",
        "1750000300.é",
        "1750000300.\udcff",
        None,
        1750000300,
        b"1750000300.AAAAAAAAAAAAAAAAAAAAAA",
        ["1750000300", "AAAA"],
        {"quote": "x"},
    ],
)
def test_malformed(token):
    assert check_code(token) == "invalid_quote"


def test_truncated_or_extended_mac():
    token = issue()
    assert check_code(token[:-1]) == "invalid_quote"
    assert check_code(token + "A") == "invalid_quote"
    assert check_code(token + "." + token) == "invalid_quote"


@settings(max_examples=300)
@given(token=st.text(max_size=60))
def test_never_another_exception(token):
    assert check_code(token) == "invalid_quote"


@settings(max_examples=100)
@given(
    amount=st.integers(min_value=0, max_value=10**30),
    pay_to=st.text(max_size=50),
    asset=st.text(max_size=50),
    network=st.text(max_size=30),
    digest=st.binary(max_size=40),
)
def test_round_trip_any_terms(amount, pay_to, asset, network, digest):
    signer = QuoteSigner(SECRET)
    terms = {"digest": digest, "amount": amount, "pay_to": pay_to, "asset": asset, "network": network}
    signer.check(signer.issue(**terms, now=NOW), **terms, now=NOW)


def test_constructor_validates():
    with pytest.raises(ValueError):
        QuoteSigner(b"short")
    with pytest.raises(ValueError):
        QuoteSigner(SECRET, ttl_seconds=0)
    assert "s" * 16 not in repr(QuoteSigner(SECRET))
