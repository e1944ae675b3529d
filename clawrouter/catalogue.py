"""The model catalogue: what each model is called, costs and can do.

Prices are given in USD per million tokens (as providers publish them) and kept,
for arithmetic, as integer pico-USD per token (``$0.15/M`` → ``150_000``), so
every cost the router computes is an exact integer; see :mod:`clawrouter.pricing`.

Every :class:`ModelInfo` is validated when it is built, with errors that name
the model and the field (``model 'openai/x': quality.math: ...``). A catalogue
ships with the package (``clawrouter/data/models.toml``, see
:func:`builtin_models`); configuration can change any of its fields or add
models (:func:`merge_models`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from typing import Any

import msgspec
from msgspec import Struct

__all__ = [
    "CAPABILITIES",
    "TASK_TYPES",
    "VIRTUAL_MODELS",
    "Catalogue",
    "CatalogueError",
    "ModelInfo",
    "builtin_models",
    "merge_models",
    "model_from_dict",
    "parse_models",
    "validate_fallbacks",
    "validate_names",
]

CAPABILITIES = frozenset({"tools", "vision", "reasoning", "json_mode", "streaming"})
#: the task types routing scores models for; ``quality`` keys must be among them
TASK_TYPES = ("coding", "reasoning", "math", "creative", "chat", "extraction", "agentic")
VIRTUAL_MODELS = ("auto", "eco", "premium")
_PICO_PER_USD_PER_MILLION = 1_000_000  # $1/M tokens = 1e-6 $/token = 1e6 pico-$/token
_DATE_FIELDS = ("price_date", "released", "deprecated")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATA_PACKAGE = "clawrouter"
_DATA_FILE = "data/models.toml"


class CatalogueError(ValueError):
    """A model entry is invalid; the message names the model and the field."""


def _fail(ident: str, field: str, problem: str) -> CatalogueError:
    return CatalogueError(f"model {ident!r}: {field}: {problem}")


class ModelInfo(Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    provider: str
    upstream: str = ""
    aliases: list[str] = []
    input_price: float
    output_price: float
    cached_input_price: float | None = None
    #: ISO date (``YYYY-MM-DD``) of the source the prices were read from
    price_date: str | None = None
    context_window: int = 128_000
    max_output: int = 4_096
    capabilities: list[str] = msgspec.field(default_factory=lambda: ["streaming"])
    #: task type (see :data:`TASK_TYPES`) → relative quality in [0, 1]
    quality: dict[str, float] = {}
    fallbacks: list[str] = []
    released: str | None = None
    deprecated: str | None = None

    def __post_init__(self) -> None:
        if not self.upstream:
            self.upstream = self.id
        ident = self.id
        for name in ("input_price", "output_price", "cached_input_price"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise CatalogueError(f"model {ident!r}: {name} must be >= 0, got {value!r}")
        unknown = set(self.capabilities) - CAPABILITIES
        if unknown:
            raise _fail(ident, "capabilities", f"unknown {sorted(unknown)}; expected some of {sorted(CAPABILITIES)}")
        if self.context_window <= 0:
            raise _fail(ident, "context_window", f"must be > 0, got {self.context_window}")
        if self.max_output <= 0:
            raise _fail(ident, "max_output", f"must be > 0, got {self.max_output}")
        if self.max_output > self.context_window:
            raise _fail(ident, "max_output", f"{self.max_output} is larger than context_window {self.context_window}")
        for task, score in self.quality.items():
            if task not in TASK_TYPES:
                raise _fail(ident, f"quality.{task}", f"unknown task type; expected one of {list(TASK_TYPES)}")
            if not 0.0 <= score <= 1.0:  # also refuses NaN
                raise _fail(ident, f"quality.{task}", f"must be between 0 and 1, got {score!r}")
        for name in _DATE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                _check_date(ident, name, value)
        if self.released and self.deprecated and self.deprecated < self.released:
            raise _fail(ident, "deprecated", f"{self.deprecated} is before released {self.released}")

    @property
    def input_pico(self) -> int:
        """Input price, integer pico-USD per token."""
        return round(self.input_price * _PICO_PER_USD_PER_MILLION)

    @property
    def output_pico(self) -> int:
        """Output price, integer pico-USD per token."""
        return round(self.output_price * _PICO_PER_USD_PER_MILLION)

    @property
    def cached_input_pico(self) -> int:
        """Price of a cached input token, integer pico-USD (the input price when none is listed)."""
        if self.cached_input_price is None:
            return self.input_pico
        return round(self.cached_input_price * _PICO_PER_USD_PER_MILLION)

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def mean_quality(self) -> float:
        return sum(self.quality.values()) / len(self.quality) if self.quality else 0.5


def _check_date(ident: str, field: str, value: str) -> None:
    if not _ISO_DATE.fullmatch(value):
        raise _fail(ident, field, f"expected an ISO date YYYY-MM-DD, got {value!r}")
    try:
        _dt.date.fromisoformat(value)
    except ValueError:
        raise _fail(ident, field, f"not a valid date: {value!r}") from None


def _normalise(data: Mapping[str, Any]) -> dict[str, Any]:
    """TOML gives dates as :class:`datetime.date`; the catalogue keeps them as ISO strings."""
    out = dict(data)
    for name in _DATE_FIELDS:
        value = out.get(name)
        if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
            out[name] = value.isoformat()
    return out


def model_from_dict(data: Mapping[str, Any]) -> ModelInfo:
    """Build a :class:`ModelInfo`, with errors that name the model and the field."""
    ident = data.get("id", "<no id>")
    prefix = f"model {ident!r}: "
    try:
        return msgspec.convert(_normalise(data), ModelInfo)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if text.startswith(prefix):  # raised by ModelInfo.__post_init__, already names model and field
            raise CatalogueError(text) from None
        if " - at `$." in text:  # msgspec: "Expected `float`, got `str` - at `$.quality[...]`"
            text, where = text.split(" - at `$.", 1)
            where = where.rstrip("`")
            if where.startswith("quality[") and isinstance(data.get("quality"), Mapping):
                bad = [k for k, v in data["quality"].items() if isinstance(v, bool) or not isinstance(v, int | float)]
                where = f"quality.{bad[0]}" if bad else "quality"
            text = f"{where}: {text}"
        elif "unknown field `" in text:
            text = f"{text.split('unknown field `', 1)[1].rstrip('`')}: unknown field"
        elif "missing required field `" in text:
            text = f"{text.split('missing required field `', 1)[1].rstrip('`')}: required"
        raise CatalogueError(prefix + text) from None


# --- checks across models ---------------------------------------------------------------


def validate_names(models: Iterable[ModelInfo]) -> None:
    """Ids must be unique and not a routing profile; an alias must not name another model.

    (:class:`Catalogue` itself lets a later id replace an earlier one; this is for
    catalogues that are meant to be consistent, like the built-in one.)
    """
    owner: dict[str, str] = {}
    listed = list(models)
    for model in listed:
        if model.id in VIRTUAL_MODELS:
            raise _fail(model.id, "id", "is reserved for a routing profile")
        if model.id in owner:
            raise _fail(model.id, "id", "is listed twice")
        owner[model.id] = model.id
    for model in listed:
        for alias in model.aliases:
            if alias in VIRTUAL_MODELS:
                raise _fail(model.id, "aliases", f"{alias!r} is reserved for a routing profile")
            other = owner.setdefault(alias, model.id)
            if other != model.id:
                raise _fail(model.id, "aliases", f"{alias!r} already names model {other!r}")


def validate_fallbacks(catalogue: Catalogue | Iterable[ModelInfo]) -> None:
    """Every fallback must be the id of another model in ``catalogue``."""
    models = list(catalogue)
    ids = {model.id for model in models}
    for model in models:
        for name in model.fallbacks:
            if name == model.id:
                raise _fail(model.id, "fallbacks", "a model cannot be its own fallback")
            if name not in ids:
                raise _fail(model.id, "fallbacks", f"{name!r} is not a model id in the catalogue")


def _check_complete(model: ModelInfo) -> None:
    """What the shipped catalogue promises beyond what :class:`ModelInfo` requires."""
    missing = [task for task in TASK_TYPES if task not in model.quality]
    if missing:
        raise _fail(model.id, "quality", f"missing task types {missing}")
    for name in ("price_date", "released"):
        if getattr(model, name) is None:
            raise _fail(model.id, name, "required in a shipped catalogue")


# --- loading ---------------------------------------------------------------------------


def parse_models(text: str, *, source: str = "<models>", complete: bool = True) -> list[ModelInfo]:
    """Models from a TOML document of ``[[models]]`` tables, validated.

    With ``complete`` (as for the shipped catalogue) every model must also score
    every task type, date its prices and give its release date; ids and
    aliases must be unambiguous and fallbacks must resolve within the document.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{source}: {exc}") from None
    entries = document.get("models", [])
    if not isinstance(entries, list):
        raise CatalogueError(f"{source}: 'models' must be an array of tables ([[models]])")
    models: list[ModelInfo] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise CatalogueError(f"{source}: models[{index}] is not a table")
        model = model_from_dict(entry)
        if complete:
            _check_complete(model)
        models.append(model)
    if complete:
        validate_names(models)
        validate_fallbacks(models)
    return models


@functools.cache
def _builtin() -> tuple[ModelInfo, ...]:
    text = resources.files(_DATA_PACKAGE).joinpath(_DATA_FILE).read_text(encoding="utf-8")
    return tuple(parse_models(text, source=f"{_DATA_PACKAGE}/{_DATA_FILE}"))


def builtin_models() -> list[ModelInfo]:
    """The catalogue shipped with clawrouter (``clawrouter/data/models.toml``).

    Read and validated once per process; each call returns new copies, so callers
    may change them freely.
    """
    return [_clone(model) for model in _builtin()]


def _clone(model: ModelInfo) -> ModelInfo:
    """A copy that shares no list or dict with ``model``."""
    return msgspec.structs.replace(
        model,
        aliases=list(model.aliases),
        capabilities=list(model.capabilities),
        quality=dict(model.quality),
        fallbacks=list(model.fallbacks),
    )


def merge_models(base: Iterable[ModelInfo], overrides: Iterable[Mapping[str, Any]]) -> list[ModelInfo]:
    """Apply ``[[models]]`` entries from configuration to ``base``.

    An entry whose ``id`` names a model of ``base`` changes only the fields it
    gives (``quality`` is merged task by task; other fields are replaced); any
    other entry adds a model and must be complete. The result keeps the order of
    ``base``, new models last; ``base`` itself is not modified. Errors name the
    model and the field.
    """
    merged: dict[str, ModelInfo] = {model.id: model for model in base}
    for entry in overrides:
        ident = entry.get("id")
        if not isinstance(ident, str) or not ident:
            raise CatalogueError(f"model {ident if ident is not None else '<no id>'!r}: id: required (a string)")
        current = merged.get(ident)
        if current is None:
            merged[ident] = model_from_dict(entry)
            continue
        fields: dict[str, Any] = msgspec.to_builtins(current)
        changes = _normalise(entry)
        quality = changes.get("quality")
        if isinstance(quality, Mapping):
            changes["quality"] = {**fields["quality"], **quality}
        merged[ident] = model_from_dict({**fields, **changes})
    return list(merged.values())


# --- the catalogue ---------------------------------------------------------------------


class Catalogue:
    """Models by id and alias. Later registrations of an id replace earlier ones."""

    def __init__(self, models: Iterable[ModelInfo] = ()) -> None:
        self._models: dict[str, ModelInfo] = {}
        self._names: dict[str, ModelInfo] = {}
        for model in models:
            self._put(model)
        self._reindex()

    def add(self, model: ModelInfo) -> None:
        self._put(model)
        self._reindex()

    def _put(self, model: ModelInfo) -> None:
        if model.id in VIRTUAL_MODELS:
            raise CatalogueError(f"model {model.id!r}: id is reserved for a routing profile")
        self._models[model.id] = model

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
