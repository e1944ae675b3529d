"""The Solana plugin's fixtures (defined in :mod:`solana_env`)."""

from solana_env import facade, keys, local

__all__ = ["facade", "keys", "local"]
