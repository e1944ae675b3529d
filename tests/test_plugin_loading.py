"""Entry-point loading: order, broken plugins, allow/deny lists, /-/plugins."""

from __future__ import annotations

import textwrap

import pytest

from clawrouter import Router


def install(tmp_path, dist: str, entry: str, module: str, source: str) -> None:
    """Make a real installed distribution (dist-info on sys.path) with one entry point."""
    info = tmp_path / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[clawrouter]\n{entry} = {module}\n")
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
from clawrouter import hookimpl

@hookimpl
def register_models(config):
    return [{"id": "{model}", "provider": "simulated", "input_price": 0.5, "output_price": 0.5}]
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    install(tmp_path, "clawrouter-zeta", "zeta", "zeta_plugin", GOOD.replace("{model}", "zeta-model"))
    install(tmp_path, "clawrouter-alpha", "alpha", "alpha_plugin", GOOD.replace("{model}", "alpha-model"))
    install(tmp_path, "clawrouter-broken", "broken", "broken_plugin", "import does_not_exist_anywhere\n")
    install(
        tmp_path,
        "clawrouter-typo",
        "typo",
        "typo_plugin",
        "from clawrouter import hookimpl\n\n@hookimpl\ndef register_providerz(config):\n    return []\n",
    )
    return tmp_path


OURS = {"alpha", "zeta", "broken", "typo"}  # other entry points may be installed (e.g. examples/)


def names(router: Router) -> list[str]:
    return [p.name for p in router.plugins if p.source == "entry_point" and p.name in OURS]


def errors_of(router: Router) -> dict[str, str]:
    return {e.name: e.error for e in router.plugin_errors if e.name in OURS}


def test_entry_points_load_sorted_and_broken_ones_are_reported(site):
    router = Router(env={})
    assert names(router) == ["alpha", "zeta"]
    errors = errors_of(router)
    assert set(errors) == {"broken", "typo"}
    assert "does_not_exist_anywhere" in errors["broken"]
    assert "register_providerz" in errors["typo"]
    assert {"alpha-model", "zeta-model"} <= {m.id for m in router.catalogue}
    alpha = next(p for p in router.plugins if p.name == "alpha")
    assert alpha.distribution == "clawrouter-alpha" and alpha.version == "1.0"
    assert alpha.registered == {"models": ["alpha-model"]}


def test_allow_list_by_entry_point_or_distribution(site):
    assert names(Router(env={"CLAWROUTER_LOAD_PLUGINS": "zeta"})) == ["zeta"]
    assert names(Router(env={"CLAWROUTER_LOAD_PLUGINS": "clawrouter-alpha, zeta"})) == ["alpha", "zeta"]
    router = Router(env={"CLAWROUTER_LOAD_PLUGINS": ""})
    assert [p.name for p in router.plugins if p.source == "entry_point"] == [] and router.plugin_errors == []


def test_deny_list_skips_entry_points_and_defaults(site):
    router = Router(env={"CLAWROUTER_DISABLE_PLUGINS": "alpha,broken,typo"})
    assert names(router) == ["zeta"] and errors_of(router) == {}
    with pytest.raises(Exception, match="no installed plugin provides kind 'simulated'"):
        Router(env={"CLAWROUTER_DISABLE_PLUGINS": "default_providers", "CLAWROUTER_LOAD_PLUGINS": ""})


def test_a_plugin_whose_hook_raises_is_reported_and_skipped(clawrouter_router):
    from clawrouter import hookimpl

    class Exploding:
        __name__ = "exploding"

        @hookimpl
        def register_routing_strategies(self, config):
            raise RuntimeError("kaboom")

    router = clawrouter_router(plugins=[Exploding()])
    assert [(e.name, e.error) for e in router.plugin_errors] == [
        ("exploding", "register_routing_strategies: RuntimeError: kaboom")
    ]
    assert "default" in router.strategies


def test_each_router_has_its_own_plugin_manager(clawrouter_router):
    from plugins import echo_provider

    a = clawrouter_router(plugins=[echo_provider])
    b = clawrouter_router()
    assert a.pm is not b.pm
    assert a.pm.is_registered(echo_provider) and not b.pm.is_registered(echo_provider)


async def test_plugins_endpoint_lists_what_each_plugin_registered(site, clawrouter_client):
    router = Router(env={})
    client = await clawrouter_client(router)
    document = (await client.get("/-/plugins")).json()
    by_name = {p["name"]: p for p in document["plugins"]}
    assert by_name["clawrouter.default_providers"]["registered"]["providers"] == ["simulated"]
    assert by_name["clawrouter.default_providers"]["hooks"] == ["register_models", "register_providers"]
    assert by_name["alpha"]["registered"] == {"models": ["alpha-model"]}
    assert {e["name"] for e in document["errors"]} & OURS == {"broken", "typo"}
    assert (await client.get("/-/plugins.json")).json() == document
