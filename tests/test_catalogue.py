"""The shipped model catalogue, ModelInfo validation, and config overrides."""

from __future__ import annotations

import datetime
import re
from importlib import resources

import pytest

from clawrouter import catalogue as catalogue_module
from clawrouter.catalogue import (
    CAPABILITIES,
    TASK_TYPES,
    VIRTUAL_MODELS,
    Catalogue,
    CatalogueError,
    ModelInfo,
    builtin_models,
    merge_models,
    model_from_dict,
    parse_models,
    validate_fallbacks,
    validate_names,
)

REQUIRED_PROVIDERS = {"openai", "anthropic", "google", "deepseek", "qwen", "mistral", "xai", "moonshot"}
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@pytest.fixture(scope="module")
def models() -> list[ModelInfo]:
    return builtin_models()


# --- the shipped data ---------------------------------------------------------------------


def test_data_file_is_package_data():
    assert resources.files("clawrouter").joinpath("data/models.toml").is_file()


def test_builtin_catalogue_size_and_providers(models):
    providers = {m.provider for m in models}
    assert len(models) >= 41
    assert len(providers) >= 8
    assert providers >= REQUIRED_PROVIDERS
    assert providers & {"groq", "together"}, "Llama and open models come from a host"
    assert any("llama" in m.upstream.lower() for m in models if m.provider in {"groq", "together"})


def test_ids_follow_the_convention(models):
    for m in models:
        assert m.id.startswith(f"{m.provider}/"), m.id
        assert m.id == m.id.lower(), m.id
        assert m.id not in VIRTUAL_MODELS
        assert m.upstream and m.upstream != m.id, m.id
    assert len({m.id for m in models}) == len(models)


def test_every_model_scores_every_task(models):
    for m in models:
        assert set(m.quality) == set(TASK_TYPES), m.id
        assert all(0.0 <= v <= 1.0 for v in m.quality.values()), m.id


def test_no_alias_collisions(models):
    validate_names(models)
    owner: dict[str, str] = {m.id: m.id for m in models}
    for m in models:
        for alias in m.aliases:
            assert alias not in VIRTUAL_MODELS
            assert owner.setdefault(alias, m.id) == m.id, f"{alias!r} names {owner[alias]} and {m.id}"
    catalogue = Catalogue(models)
    for name, ident in owner.items():
        assert catalogue.get(name).id == ident


def test_fallbacks_resolve(models):
    validate_fallbacks(models)
    validate_fallbacks(Catalogue(models))
    ids = {m.id for m in models}
    for m in models:
        assert m.fallbacks, m.id
        assert len(m.fallbacks) <= 4, m.id
        assert m.id not in m.fallbacks
        assert set(m.fallbacks) <= ids, m.id


def test_every_price_has_a_date(models):
    for m in models:
        assert m.price_date is not None and ISO_DATE.fullmatch(m.price_date), m.id
        assert m.released is not None and ISO_DATE.fullmatch(m.released), m.id
        datetime.date.fromisoformat(m.price_date)
        assert m.input_price > 0 and m.output_price > 0, m.id
        if m.cached_input_price is not None:
            assert 0 <= m.cached_input_price <= m.input_price, m.id


def test_limits_and_capabilities(models):
    for m in models:
        assert 0 < m.max_output <= m.context_window, m.id
        assert set(m.capabilities) <= CAPABILITIES, m.id
        assert "streaming" in m.capabilities, m.id


def test_builtin_models_are_fresh_copies():
    first = builtin_models()
    first[0].input_price = 999.0
    first[0].aliases.append("mine")
    first[0].quality["chat"] = 0.0
    second = builtin_models()
    assert second[0].input_price != 999.0
    assert "mine" not in second[0].aliases
    assert second[0].quality["chat"] != 0.0


def test_builtin_file_is_read_once():
    builtin_models()
    before = catalogue_module._builtin.cache_info()
    builtin_models()
    after = catalogue_module._builtin.cache_info()
    assert after.misses == before.misses == 1
    assert after.hits == before.hits + 1


def test_builtin_models_route_by_alias(models):
    catalogue = Catalogue(models)
    sample = next(m for m in models if m.provider == "openai")
    assert catalogue.get(sample.upstream) is catalogue.get(sample.id)


# --- ModelInfo validation -----------------------------------------------------------------

BASE = {"id": "bad/x", "provider": "bad", "input_price": 1.0, "output_price": 2.0}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"quality": {"poetry": 0.5}}, r"quality\.poetry"),
        ({"quality": {"math": 1.2}}, r"quality\.math"),
        ({"quality": {"math": -0.1}}, r"quality\.math"),
        ({"quality": {"chat": float("nan")}}, r"quality\.chat"),
        ({"quality": {"chat": 0.5, "coding": "high"}}, r"quality\.coding"),
        ({"price_date": "2026/11/25"}, r"price_date"),
        ({"price_date": "2026-02-30"}, r"price_date"),
        ({"released": "20260101"}, r"released"),
        ({"deprecated": "soon"}, r"deprecated"),
        ({"released": "2026-05-01", "deprecated": "2026-04-01"}, r"deprecated"),
        ({"cached_input_price": -0.01}, r"cached_input_price"),
        ({"input_price": -1.0}, r"input_price"),
        ({"context_window": 1000, "max_output": 4000}, r"max_output"),
        ({"max_output": 0}, r"max_output"),
        ({"capabilities": ["streaming", "telepathy"]}, r"capabilities"),
        ({"aliases": "x"}, r"aliases"),
        ({"colour": "blue"}, r"colour"),
    ],
)
def test_invalid_fields_name_model_and_field(extra, field):
    with pytest.raises(CatalogueError, match=rf"^model 'bad/x': {field}\b"):
        model_from_dict({**BASE, **extra})


def test_missing_field_is_named():
    with pytest.raises(CatalogueError, match=r"^model 'bad/x': output_price: required"):
        model_from_dict({"id": "bad/x", "provider": "bad", "input_price": 1.0})


def test_constructor_validates_too():
    with pytest.raises(CatalogueError, match=r"model 'k': quality\.chat"):
        ModelInfo(id="k", provider="p", input_price=1, output_price=1, quality={"chat": 2.0})


def test_partial_quality_and_defaults_stay_valid():
    model = model_from_dict({**BASE, "quality": {"chat": 0.7}})
    assert model.upstream == "bad/x" and model.price_date is None
    assert model.mean_quality() == pytest.approx(0.7)


def test_toml_dates_are_accepted():
    model = model_from_dict({**BASE, "price_date": datetime.date(2026, 11, 25), "released": datetime.date(2026, 1, 2)})
    assert (model.price_date, model.released) == ("2026-11-25", "2026-01-02")


def test_cached_input_pico():
    assert model_from_dict({**BASE, "cached_input_price": 0.075}).cached_input_pico == 75_000
    assert model_from_dict(BASE).cached_input_pico == model_from_dict(BASE).input_pico


# --- whole-catalogue checks ---------------------------------------------------------------


def entry(ident: str, **fields: object) -> str:
    data: dict[str, object] = {
        "id": ident,
        "provider": ident.split("/")[0],
        "upstream": ident.split("/")[1],
        "aliases": [ident.split("/")[1]],
        "input_price": 1.0,
        "output_price": 2.0,
        "price_date": "2026-11-25",
        "released": "2026-01-01",
        "quality": dict.fromkeys(TASK_TYPES, 0.5),
        "fallbacks": [],
    }
    data.update(fields)
    lines = ["[[models]]"]
    for key, value in data.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} = {v}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def test_parse_models_accepts_a_complete_document():
    text = entry("a/one", fallbacks=["b/two"]) + entry("b/two", fallbacks=["a/one"])
    assert [m.id for m in parse_models(text)] == ["a/one", "b/two"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (entry("a/one", quality={"chat": 0.5}), r"model 'a/one': quality: missing task types \['coding'"),
        (entry("a/one", price_date="2026-13-01"), r"model 'a/one': price_date: "),
        (entry("a/one", quality={**dict.fromkeys(TASK_TYPES, 0.5), "math": 1.5}), r"model 'a/one': quality\.math: "),
        (entry("a/one", fallbacks=["z/missing"]), r"model 'a/one': fallbacks: 'z/missing' is not a model id"),
        (entry("a/one", fallbacks=["a/one"]), r"model 'a/one': fallbacks: .*own fallback"),
        (
            entry("a/one") + entry("b/two", aliases=["one"]),
            r"model 'b/two': aliases: 'one' already names model 'a/one'",
        ),
        (entry("a/one") + entry("b/two", aliases=["a/one"]), r"model 'b/two': aliases: 'a/one' already names"),
        (entry("a/one") + entry("a/one"), r"model 'a/one': id: is listed twice"),
        (entry("x/auto").replace('id = "x/auto"', 'id = "auto"'), r"model 'auto': id: is reserved"),
        (entry("a/one", aliases=["eco"]), r"model 'a/one': aliases: 'eco' is reserved"),
        (entry("a/one", max_output=200_000, context_window=100_000), r"model 'a/one': max_output: "),
        ("[[models]\nid = 1\n", r"<models>: "),
    ],
)
def test_parse_models_errors_name_model_and_field(text, message):
    with pytest.raises(CatalogueError, match=message):
        parse_models(text)


def test_missing_price_date_is_refused_in_a_shipped_catalogue():
    text = entry("a/one").replace('price_date = "2026-11-25"\n', "")
    with pytest.raises(CatalogueError, match=r"model 'a/one': price_date: required"):
        parse_models(text)
    assert parse_models(text, complete=False)[0].price_date is None


def test_validate_fallbacks_on_a_catalogue():
    one = model_from_dict({**BASE, "id": "a/one", "fallbacks": ["a/two", "a/gone"]})
    two = model_from_dict({**BASE, "id": "a/two"})
    with pytest.raises(CatalogueError, match=r"model 'a/one': fallbacks: 'a/gone'"):
        validate_fallbacks(Catalogue([one, two]))
    validate_fallbacks(Catalogue([two]))


# --- configuration overrides ------------------------------------------------------------------


def test_merge_overrides_only_the_given_fields(models):
    target = models[0]
    merged = merge_models(models, [{"id": target.id, "input_price": 0.5, "quality": {"coding": 0.11}}])
    assert [m.id for m in merged] == [m.id for m in models]
    changed = merged[0]
    assert changed.input_price == 0.5
    assert changed.quality["coding"] == 0.11
    assert {k: v for k, v in changed.quality.items() if k != "coding"} == {
        k: v for k, v in target.quality.items() if k != "coding"
    }
    for field in ("output_price", "cached_input_price", "price_date", "context_window", "aliases", "fallbacks"):
        assert getattr(changed, field) == getattr(target, field), field
    assert target.input_price != 0.5 and target.quality["coding"] != 0.11, "base is not modified"
    assert merged[1:] == models[1:]


def test_merge_adds_new_models_last(models):
    new = {"id": "local/llama", "provider": "ollama", "upstream": "llama3", "input_price": 0, "output_price": 0}
    merged = merge_models(models, [new])
    assert len(merged) == len(models) + 1
    assert merged[-1].id == "local/llama" and merged[-1].upstream == "llama3"


def test_merge_applies_entries_in_order():
    base = [model_from_dict({**BASE, "id": "a/one"})]
    merged = merge_models(base, [{"id": "a/one", "input_price": 3.0}, {"id": "a/one", "output_price": 4.0}])
    assert (merged[0].input_price, merged[0].output_price) == (3.0, 4.0)


def test_merge_accepts_toml_dates():
    base = [model_from_dict({**BASE, "id": "a/one"})]
    merged = merge_models(base, [{"id": "a/one", "price_date": datetime.date(2026, 12, 1)}])
    assert merged[0].price_date == "2026-12-01"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"id": "a/one", "quality": {"math": 3}}, r"^model 'a/one': quality\.math: "),
        ({"id": "a/one", "max_output": 10**9}, r"^model 'a/one': max_output: "),
        ({"id": "a/one", "colour": "red"}, r"^model 'a/one': colour: unknown field"),
        ({"id": "b/new", "input_price": 1.0}, r"^model 'b/new': (provider|output_price): required"),
        ({"input_price": 1.0}, r"^model '<no id>': id: required"),
    ],
)
def test_merge_errors_name_model_and_field(override, message):
    base = [model_from_dict({**BASE, "id": "a/one"})]
    with pytest.raises(CatalogueError, match=message):
        merge_models(base, [override])
