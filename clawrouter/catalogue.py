"""The model catalogue: what each model is called, costs and can do.

Prices are given in USD per million tokens (as providers publish them) and kept,
for arithmetic, as integer pico-USD per token (``$0.15/M`` → ``150_000``), so
every cost the router computes is an exact integer; see :mod:`clawrouter.pricing`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec
from msgspec import Struct

__all__ = ["CAPABILITIES", "Catalogue", "CatalogueError", "ModelInfo", "VIRTUAL_MODELS"]

CAPABILITIES = frozenset({"tools", "vision", "reasoning", "json_mode", "streaming"})
VIRTUAL_MODELS = ("auto", "eco", "premium")
_PICO_PER_USD_PER_MILLION = 1_000_000  # $1/M tokens = 1e-6 $/token = 1e6 pico-$/token


class CatalogueError(ValueError):
    """A model entry is invalid; the message names the model and the field."""


class ModelInfo(Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    provider: str
    upstream: str = ""
    aliases: list[str] = []
    input_price: float
    output_price: float
    cached_input_price: float | None = None
    context_window: int = 128_000
    max_output: int = 4_096
    capabilities: list[str] = msgspec.field(default_factory=lambda: ["streaming"])
    quality: dict[str, float] = {}
    fallbacks: list[str] = []
    released: str | None = None
    deprecated: str | None = None

    def __post_init__(self) -> None:
        if not self.upstream:
            self.upstream = self.id
        for name in ("input_price", "output_price"):
            if getattr(self, name) < 0:
                raise CatalogueError(f"model {self.id!r}: {name} must be >= 0")
        unknown = set(self.capabilities) - CAPABILITIES
        if unknown:
            raise CatalogueError(
                f"model {self.id!r}: capabilities: unknown {sorted(unknown)}; expected some of {sorted(CAPABILITIES)}"
            )
        if self.context_window <= 0 or self.max_output <= 0:
            raise CatalogueError(f"model {self.id!r}: context_window and max_output must be > 0")

    @property
    def input_pico(self) -> int:
        """Input price, integer pico-USD per token."""
        return round(self.input_price * _PICO_PER_USD_PER_MILLION)

    @property
    def output_pico(self) -> int:
        """Output price, integer pico-USD per token."""
        return round(self.output_price * _PICO_PER_USD_PER_MILLION)

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def mean_quality(self) -> float:
        return sum(self.quality.values()) / len(self.quality) if self.quality else 0.5


def model_from_dict(data: dict[str, object]) -> ModelInfo:
    """Build a :class:`ModelInfo`, with errors that name the model and the field."""
    ident = data.get("id", "<no id>")
    try:
        return msgspec.convert(data, ModelInfo)
    except msgspec.ValidationError as exc:
        raise CatalogueError(f"model {ident!r}: {exc}") from None


class Catalogue:
    """Models by id and alias. Later registrations of an id replace earlier ones."""

    def __init__(self, models: Iterable[ModelInfo] = ()) -> None:
        self._models: dict[str, ModelInfo] = {}
        self._names: dict[str, ModelInfo] = {}
        for model in models:
            self.add(model)

    def add(self, model: ModelInfo) -> None:
        if model.id in VIRTUAL_MODELS:
            raise CatalogueError(f"model {model.id!r}: id is reserved for a routing profile")
        self._models[model.id] = model
        self._reindex()

    def _reindex(self) -> None:
        names: dict[str, ModelInfo] = {}
        for model in self._models.values():
            for alias in model.aliases:
                names.setdefault(alias, model)
        for model in self._models.values():
            names[model.id] = model
        self._names = names

    def get(self, name: str) -> ModelInfo | None:
        return self._names.get(name)

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._names
