"""EIP-712 digests for EIP-3009 ``TransferWithAuthorization``, signing and recovery.

The x402 ``exact`` scheme on EVM pays with a USDC ``transferWithAuthorization``
signed off-chain by the payer. The router checks that signature on every paid
request before it calls a model, so this module is on the hot path and is
written for it:

* the EIP-712 encoding is done by hand for the one struct type we need (every
  field is a static 32-byte word, so ``hashStruct`` is one keccak over 224
  bytes) instead of a generic typed-data encoder, and the domain separator is
  memoized per token;
* keccak-256 comes from the fastest backend installed: ``sha3`` (pysha3 /
  safe-pysha3, a C extension, ~1.5 µs per call), else pycryptodome (~5 µs),
  else ``eth_hash``. ``eth_hash.auto`` is the last resort because importing it
  pulls in ``importlib.metadata`` (~60 ms) only to pick one of the other two;
* secp256k1 is libsecp256k1 through coincurve: public-key recovery is ~50 µs;
* web3 and eth_utils are never imported (eth_utils alone takes ~180 ms to
  import); the EIP-55 checksum is a few lines here.

Signature checks follow what USDC (via OpenZeppelin ``ECDSA``) accepts on
chain, so a signature this module accepts is one the token would accept too:
65 bytes ``r ‖ s ‖ v``, ``v`` in {27, 28} (0 and 1 are tolerated and mapped),
``0 < r < n`` and ``0 < s ≤ n/2`` (EIP-2 low-s).
"""

from __future__ import annotations

import importlib
import secrets
from collections.abc import Callable
from functools import lru_cache

import msgspec
from coincurve import PrivateKey, PublicKey

__all__ = [
    "TRANSFER_WITH_AUTHORIZATION_TYPEHASH",
    "Authorization",
    "address_of",
    "decode_signature",
    "domain_separator",
    "keccak",
    "recover",
    "sign_authorization",
    "sign_digest",
    "to_checksum",
    "transfer_digest",
]

# --------------------------------------------------------------------------- keccak


def _load_keccak() -> Callable[[bytes], bytes]:
    """Pick the fastest keccak-256 installed (see the module docstring for the numbers).

    Each candidate is checked against the known hash of ``b""`` so that an
    unrelated module that happens to be called ``sha3`` is never trusted.
    """
    empty = bytes.fromhex("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")
    try:
        keccak_256 = importlib.import_module("sha3").keccak_256

        def pysha3_keccak(data: bytes) -> bytes:
            digest: bytes = keccak_256(data).digest()
            return digest

        if pysha3_keccak(b"") == empty:
            return pysha3_keccak
    except (ImportError, AttributeError):
        pass
    try:
        from Crypto.Hash import keccak as pycryptodome

        def pycryptodome_keccak(data: bytes) -> bytes:
            return pycryptodome.new(data=data, digest_bits=256).digest()

        if pycryptodome_keccak(b"") == empty:
            return pycryptodome_keccak
    except ImportError:
        pass
    from eth_hash.auto import keccak as eth_hash_keccak

    return eth_hash_keccak


#: keccak-256 of ``data`` (32 bytes), from the fastest backend installed.
keccak: Callable[[bytes], bytes] = _load_keccak()

# --------------------------------------------------------------------------- validation

#: the secp256k1 group order
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = _N // 2
_UINT256_MAX = 2**256 - 1
_ZERO12 = bytes(12)


def _address(field: str, address: str) -> bytes:
    """The 20 bytes of a ``0x``-prefixed hex address (any case, checksum not enforced).

    The checksum is not enforced because x402 clients send addresses in
    whatever case their library produced, and the digest does not depend on it.
    """
    if isinstance(address, str) and len(address) == 42 and address[0] == "0" and address[1] in "xX":
        try:
            raw = bytes.fromhex(address[2:])
        except ValueError:
            pass
        else:
            if len(raw) == 20:  # fromhex skips whitespace: a 40-char string with spaces is shorter
                return raw
    raise ValueError(f"{field}: expected a 0x-prefixed 20-byte hex address, got {address!r:.60}")


def _uint(field: str, value: int) -> bytes:
    """``value`` as a big-endian uint256 word."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _UINT256_MAX:
        return value.to_bytes(32, "big")
    raise ValueError(f"{field}: expected an integer in [0, 2**256), got {value!r:.90}")


def _uint_str(field: str, value: str) -> int:
    """A uint256 from the decimal string x402 carries (ASCII digits only, no sign, spaces or ``_``)."""
    if isinstance(value, str) and 0 < len(value) <= 78 and value.isascii() and value.isdigit():
        number = int(value)
        if number <= _UINT256_MAX:
            return number
    raise ValueError(f"{field}: expected a decimal uint256 string, got {value!r:.90}")


def _bytes32(field: str, value: bytes) -> bytes:
    if isinstance(value, bytes) and len(value) == 32:
        return value
    raise ValueError(f"{field}: expected 32 bytes, got {value!r:.90}")


def _hex32(field: str, value: str) -> bytes:
    """The 32 bytes of a ``0x``-prefixed 64-digit hex string (an x402 nonce)."""
    if isinstance(value, str) and len(value) == 66 and value[0] == "0" and value[1] in "xX":
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            pass
        else:
            if len(raw) == 32:
                return raw
    raise ValueError(f"{field}: expected 0x-prefixed 32-byte hex, got {value!r:.90}")


# --------------------------------------------------------------------------- EIP-712

_DOMAIN_TYPEHASH = keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")

#: keccak of the EIP-3009 struct type string, the first word of ``hashStruct``
TRANSFER_WITH_AUTHORIZATION_TYPEHASH = keccak(
    b"TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
    b"uint256 validBefore,bytes32 nonce)"
)


@lru_cache(maxsize=256)
def domain_separator(name: str, version: str, chain_id: int, verifying_contract: str) -> bytes:
    """The EIP-712 domain separator of a token (``EIP712Domain(name, version, chainId, verifyingContract)``).

    Memoized: a router serves a handful of tokens, so after the first request
    for each this is a dictionary lookup. The cache key is the address as
    given; different spellings of one address give equal results.
    """
    if not isinstance(name, str) or not isinstance(version, str):
        raise ValueError(f"name/version: expected strings, got {name!r:.60} / {version!r:.60}")
    return keccak(
        _DOMAIN_TYPEHASH
        + keccak(name.encode())
        + keccak(version.encode())
        + _uint("chainId", chain_id)
        + _ZERO12
        + _address("verifyingContract", verifying_contract)
    )


def transfer_digest(
    domain: bytes, from_: str, to: str, value: int, valid_after: int, valid_before: int, nonce: bytes
) -> bytes:
    """The 32-byte EIP-712 digest ``keccak(0x1901 ‖ domain ‖ hashStruct(TransferWithAuthorization))``.

    This is what the payer signs and what :func:`recover` takes. Inputs are
    validated (``ValueError`` naming the field) because they come from the
    client's payment payload.
    """
    struct_hash = keccak(
        TRANSFER_WITH_AUTHORIZATION_TYPEHASH
        + _ZERO12
        + _address("from", from_)
        + _ZERO12
        + _address("to", to)
        + _uint("value", value)
        + _uint("validAfter", valid_after)
        + _uint("validBefore", valid_before)
        + _bytes32("nonce", nonce)
    )
    return keccak(b"\x19\x01" + _bytes32("domain", domain) + struct_hash)


# --------------------------------------------------------------------------- secp256k1


def recover(digest: bytes, signature: bytes) -> str:
    """The lowercase ``0x`` address whose key signed ``digest`` (65-byte ``r ‖ s ‖ v``).

    Raises ``ValueError`` for signatures USDC would reject: wrong length, ``v``
    not in {27, 28, 0, 1}, ``r`` or ``s`` zero or ≥ n, or ``s`` in the upper
    half of the curve order (malleable, EIP-2). Any 32-byte digest recovers
    *some* address for a well-formed signature: the caller compares it with
    the claimed payer.
    """
    if len(digest) != 32:
        raise ValueError(f"digest must be 32 bytes, got {len(digest)}")
    if len(signature) != 65:
        raise ValueError(f"signature must be 65 bytes (r ‖ s ‖ v), got {len(signature)}")
    v = signature[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1):
        raise ValueError(f"signature v must be 27 or 28 (or 0 or 1), got {signature[64]}")
    r = int.from_bytes(signature[:32], "big")
    if not 0 < r < _N:
        raise ValueError("signature r is out of range (zero or not below the curve order)")
    s = int.from_bytes(signature[32:64], "big")
    if not 0 < s <= _HALF_N:
        raise ValueError("signature s is out of range (zero, or high-s: EIP-2 requires s <= n/2)")
    try:
        public = PublicKey.from_signature_and_message(signature[:64] + bytes((v,)), digest, hasher=None)
    except ValueError as exc:  # r is not the x coordinate of a curve point
        raise ValueError(f"signature does not recover a public key ({exc})") from None
    return "0x" + keccak(public.format(compressed=False)[1:])[12:].hex()


def _private_key(private_key: bytes | PrivateKey) -> PrivateKey:
    if isinstance(private_key, PrivateKey):
        return private_key
    if not isinstance(private_key, bytes) or len(private_key) != 32:
        raise ValueError("private key must be 32 bytes")
    return PrivateKey(private_key)  # raises ValueError when zero or >= n


def sign_digest(private_key: bytes | PrivateKey, digest: bytes) -> bytes:
    """A 65-byte ``r ‖ s ‖ v`` signature of ``digest`` with ``v`` in {27, 28} and low ``s``.

    Deterministic (RFC 6979), so it equals eth-account's signature of the same
    digest. Building a coincurve ``PrivateKey`` from bytes costs ~40 µs (it
    derives the public key); long-lived signers such as the router's key pass
    the ``PrivateKey`` itself.
    """
    if len(digest) != 32:
        raise ValueError(f"digest must be 32 bytes, got {len(digest)}")
    rsv = _private_key(private_key).sign_recoverable(digest, hasher=None)
    return rsv[:64] + bytes((rsv[64] + 27,))


def decode_signature(signature: str) -> bytes:
    """The 65 bytes of a ``0x``-prefixed hex signature (as x402 payloads carry it)."""
    if isinstance(signature, str) and len(signature) == 132 and signature[0] == "0" and signature[1] in "xX":
        try:
            raw = bytes.fromhex(signature[2:])
        except ValueError:
            pass
        else:
            if len(raw) == 65:
                return raw
    raise ValueError(f"signature: expected 0x-prefixed 65-byte hex, got {signature!r:.60}")


# --------------------------------------------------------------------------- addresses


def to_checksum(address: str) -> str:
    """The EIP-55 mixed-case spelling of an address (validated like any other address)."""
    lower = _address("address", address).hex()
    hashed = keccak(lower.encode()).hex()
    return "0x" + "".join(c.upper() if h >= "8" else c for c, h in zip(lower, hashed[:40], strict=True))


def address_of(private_key: bytes | PrivateKey) -> str:
    """The checksummed address of a private key."""
    public = _private_key(private_key).public_key.format(compressed=False)
    return to_checksum("0x" + keccak(public[1:])[12:].hex())


# --------------------------------------------------------------------------- x402 payload


class Authorization(msgspec.Struct, frozen=True, kw_only=True):
    """The ``authorization`` object of an x402 ``exact`` EVM payment payload.

    Field names and types are the spec's: every value is a string (decimal for
    the integers, ``0x`` hex for the nonce), so a payload decodes with
    ``msgspec.convert(payload["authorization"], Authorization)`` and encodes
    back byte-for-byte. ``from`` is a Python keyword, hence ``from_``.
    """

    from_: str = msgspec.field(name="from")
    to: str
    value: str
    validAfter: str
    validBefore: str
    nonce: str

    def digest(self, domain: bytes) -> bytes:
        """The EIP-712 digest the payer signed, for the token whose :func:`domain_separator` is ``domain``.

        Raises ``ValueError`` naming the field when a value is malformed.
        """
        return transfer_digest(
            domain,
            self.from_,
            self.to,
            _uint_str("value", self.value),
            _uint_str("validAfter", self.validAfter),
            _uint_str("validBefore", self.validBefore),
            _hex32("nonce", self.nonce),
        )

    def signer(self, domain: bytes, signature: str) -> str:
        """The lowercase address that signed this authorization with ``signature`` (0x hex).

        Compare it with ``self.from_.lower()``: a valid signature by someone
        else recovers a different address rather than failing.
        """
        return recover(self.digest(domain), decode_signature(signature))


def sign_authorization(
    private_key: bytes | PrivateKey,
    *,
    name: str,
    version: str,
    chain_id: int,
    asset: str,
    to: str,
    value: int,
    valid_after: int,
    valid_before: int,
    nonce: bytes | None = None,
) -> tuple[Authorization, str]:
    """Build and sign a ``transferWithAuthorization`` of ``value`` atomic units of ``asset`` to ``to``.

    Returns the authorization and its ``0x`` hex signature, the two halves of
    an x402 ``exact`` payload. ``name``/``version`` are the token's EIP-712
    domain (``PaymentRequirements.extra``). The nonce is 32 random bytes unless
    given: EIP-3009 nonces are single-use per payer, so reusing one makes the
    second transfer fail on chain.
    """
    key = _private_key(private_key)
    nonce = secrets.token_bytes(32) if nonce is None else _bytes32("nonce", nonce)
    authorization = Authorization(
        from_=address_of(key),
        to=to,
        value=str(value),
        validAfter=str(valid_after),
        validBefore=str(valid_before),
        nonce="0x" + nonce.hex(),
    )
    digest = transfer_digest(
        domain_separator(name, version, chain_id, asset),
        authorization.from_,
        to,
        value,
        valid_after,
        valid_before,
        nonce,
    )
    return authorization, "0x" + sign_digest(key, digest).hex()
