"""SPL Token account helpers: associated token addresses and the two fields the rail reads.

Pure functions over base58 strings and raw account data, so the verifier, the local
chain and the tests agree on one derivation and one layout. The layouts are SPL Token's
(and Token-2022's base layout, which extensions only append to):

* a token account starts ``mint (32) | owner (32) | amount (u64 LE) | ...`` (165 bytes);
* a mint is ``mint_authority (COption, 36) | supply (u64 LE) | decimals (u8) | ...`` (82 bytes).
"""

from __future__ import annotations

from functools import lru_cache

from solders.pubkey import Pubkey

from .constants import ASSOCIATED_TOKEN_PROGRAM, TOKEN_PROGRAM

__all__ = ["MINT_LEN", "TOKEN_ACCOUNT_LEN", "associated_token_address", "mint_decimals", "token_account_amount"]

TOKEN_ACCOUNT_LEN = 165
MINT_LEN = 82
_AMOUNT = slice(64, 72)
_DECIMALS = 44

_ATA_PROGRAM = Pubkey.from_string(ASSOCIATED_TOKEN_PROGRAM)


@lru_cache(maxsize=4096)
def associated_token_address(owner: str, mint: str, token_program: str = TOKEN_PROGRAM) -> str:
    """The associated token account of ``owner`` for ``mint`` under ``token_program``.

    The token program is part of the seeds, so a Token-2022 mint has other ATAs than a
    classic one (solders' ``get_associated_token_address`` only knows classic Token).
    Cached: the derivation (a search for an off-curve point) costs ~14 µs, and a router
    derives the same few (its ``payTo``'s, its payers') on every payment.
    """
    seeds = [bytes(Pubkey.from_string(key)) for key in (owner, token_program, mint)]
    return str(Pubkey.find_program_address(seeds, _ATA_PROGRAM)[0])


def token_account_amount(data: bytes) -> int:
    """The token balance in a token account's data (raises ``ValueError`` if too short)."""
    if len(data) < TOKEN_ACCOUNT_LEN:
        raise ValueError(f"not a token account: {len(data)} bytes")
    return int.from_bytes(data[_AMOUNT], "little")


def mint_decimals(data: bytes) -> int:
    """The decimals in a mint account's data (raises ``ValueError`` if too short)."""
    if len(data) < MINT_LEN:
        raise ValueError(f"not a mint: {len(data)} bytes")
    return data[_DECIMALS]
