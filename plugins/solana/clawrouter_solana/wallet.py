"""An agent's Solana wallet: an ed25519 keypair kept like the EVM wallet.

The key comes from ``$CLAWROUTER_SOLANA_WALLET_KEY`` (base58, as Phantom and
``solana-keygen`` export it, or the JSON array of a Solana CLI key file), else
from the file ``$CLAWROUTER_SOLANA_WALLET_FILE``, else
``~/.config/clawrouter/solana-wallet.json``: a JSON array of 64 bytes, the
format of ``solana-keygen``'s files, written 0600 in a 0700 directory and
refused if group or others can read it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from solders.keypair import Keypair

from clawrouter.wallet import key_file_path, read_private_file, write_private_file

__all__ = ["FILE_ENV", "KEY_ENV", "SolanaWallet", "load_keypair"]

KEY_ENV = "CLAWROUTER_SOLANA_WALLET_KEY"
FILE_ENV = "CLAWROUTER_SOLANA_WALLET_FILE"
_FORMAT = "a Solana key is base58 (64 bytes) or a JSON array of 64 numbers"


def load_keypair(value: str) -> Keypair:
    """A keypair from base58 text or a JSON array of 64 (or 32 seed) bytes; the
    error never repeats the value."""
    text = value.strip()
    try:
        if text.startswith("["):
            raw = bytes(json.loads(text))
            return Keypair.from_seed(raw) if len(raw) == 32 else Keypair.from_bytes(raw)
        return Keypair.from_base58_string(text)
    except (ValueError, TypeError):
        raise ValueError(_FORMAT) from None


class SolanaWallet:
    """An agent's Solana keypair (see the module docstring)."""

    def __init__(self, keypair: Keypair) -> None:
        self.keypair = keypair

    def __repr__(self) -> str:  # never shows the key
        return f"SolanaWallet({self.address})"

    @property
    def address(self) -> str:
        return str(self.keypair.pubkey())

    @classmethod
    def generate(cls) -> SolanaWallet:
        return cls(Keypair())

    @classmethod
    def from_env(cls, var: str = KEY_ENV) -> SolanaWallet | None:
        value = os.environ.get(var, "").strip()
        if not value:
            return None
        try:
            return cls(load_keypair(value))
        except ValueError as exc:
            raise ValueError(f"${var}: {exc}") from None

    @staticmethod
    def default_path() -> Path:
        """``$CLAWROUTER_SOLANA_WALLET_FILE``, else ``solana-wallet.json`` in the clawrouter config directory."""
        return key_file_path(FILE_ENV, "solana-wallet.json")

    @classmethod
    def load(cls, path: str | Path) -> SolanaWallet:
        file = Path(path).expanduser()
        data = read_private_file(file, "Solana wallet file", "python -m clawrouter_solana wallet new")
        try:
            return cls(load_keypair(data.decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"Solana wallet file {file}: {_FORMAT}") from None

    @classmethod
    def resolve(cls, path: str | Path | None = None) -> SolanaWallet | None:
        """The key in ``$CLAWROUTER_SOLANA_WALLET_KEY``, else the wallet file; ``None`` if neither exists."""
        wallet = cls.from_env()
        if wallet is not None:
            return wallet
        file = Path(path).expanduser() if path is not None else cls.default_path()
        try:
            return cls.load(file)
        except FileNotFoundError:
            return None

    def save(self, path: str | Path | None = None, *, overwrite: bool = False) -> Path:
        """Write the key as ``solana-keygen`` does (a JSON array), mode 0600."""
        data = (json.dumps(list(bytes(self.keypair))) + "\n").encode("ascii")
        return write_private_file(path if path is not None else self.default_path(), data, overwrite=overwrite)
