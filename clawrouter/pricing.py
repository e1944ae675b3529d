"""Exact integer money arithmetic.

Costs are computed in pico-USD (1e-12 USD) from integer per-token prices and
converted to micro-USD (1e-6 USD, the atomic unit of USDC) rounding *up*, so a
quote never undercharges by rounding.
"""

from __future__ import annotations

from .catalogue import ModelInfo

__all__ = ["cost_pico", "micro_usd", "usd"]

_PICO_PER_MICRO = 1_000_000


def cost_pico(model: ModelInfo, prompt_tokens: int, completion_tokens: int) -> int:
    return prompt_tokens * model.input_pico + completion_tokens * model.output_pico


def micro_usd(pico: int) -> int:
    """Pico-USD to micro-USD, rounded up."""
    return -(-pico // _PICO_PER_MICRO)


def usd(pico: int) -> str:
    """A pico-USD amount as a decimal USD string with no float rounding, e.g. ``0.000123``."""
    whole, frac = divmod(pico, 10**12)
    text = f"{whole}.{frac:012d}".rstrip("0")
    return text + "0" if text.endswith(".") else text
