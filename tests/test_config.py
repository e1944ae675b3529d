from __future__ import annotations

import pytest

from clawrouter import ConfigError, Router, load_config

TOML = """
[server]
port = 9100

[routing]
default_profile = "eco"

[providers.simulated]
kind = "simulated"
output_tokens = 5

[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"

[[models]]
id = "local-llama"
provider = "local"
upstream = "llama3"
input_price = 0
output_price = 0
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "clawrouter.toml"
    path.write_text(TOML)
    return path


def test_file_is_read(config_file):
    config = load_config(config_file, env={})
    assert config.server.port == 9100
    assert config.routing.default_profile == "eco"
    router = Router(config, entry_points=False, env={})
    assert sorted(router.providers) == ["local", "simulated"]
    assert router.catalogue.get("local-llama").upstream == "llama3"


def test_environment_overrides_every_level(config_file):
    env = {
        "CLAWROUTER_SERVER__PORT": "9200",
        "CLAWROUTER_SERVER__HOST": "127.0.0.2",
        "CLAWROUTER_PROVIDERS__SIMULATED__FAIL_MODELS": '["simulated/eco"]',
        "CLAWROUTER_PROVIDERS__LOCAL__API_KEY": "sk-from-env",
        "CLAWROUTER_LOAD_PLUGINS": "",  # plugin selection, not a config key
    }
    config = load_config(config_file, env=env)
    assert config.server.port == 9200 and config.server.host == "127.0.0.2"
    assert config.providers["simulated"]["fail_models"] == ["simulated/eco"]
    assert config.providers["local"]["api_key"] == "sk-from-env"


def test_config_path_from_environment(config_file):
    assert load_config(env={"CLAWROUTER_CONFIG": str(config_file)}).server.port == 9100


def test_embedded_default():
    config = load_config(env={})
    assert config.providers == {"simulated": {"kind": "simulated"}}
    assert len(Router(config, entry_points=False, env={}).catalogue) == 3


def test_env_override_on_the_embedded_default_keeps_default_providers():
    config = load_config(env={"CLAWROUTER_PROVIDERS__SIMULATED__LATENCY_MS": "5"})
    assert config.providers["simulated"] == {"kind": "simulated", "latency_ms": 5}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CLAWROUTER_SERVER__PORT": "eighty"},
            "config key 'server.port': Expected int, got str (from CLAWROUTER_SERVER__PORT)",
        ),
        ({"CLAWROUTER_SERVER__PROT": "1"}, "config key 'server.prot': unknown key (from CLAWROUTER_SERVER__PROT)"),
        ({"CLAWROUTER_ROUTING__FALLBACKS": "true"}, "config key 'routing.fallbacks': Expected int, got bool"),
        ({"CLAWROUTER_NOPE__X": "1"}, "config key 'nope': unknown key"),
        ({"CLAWROUTER_SERVER_PORT": "1"}, "config key 'server_port': unknown key (from CLAWROUTER_SERVER_PORT)"),
    ],
)
def test_errors_name_the_key_the_type_and_the_variable(env, message):
    with pytest.raises(ConfigError) as caught:
        load_config(env=env)
    assert message in str(caught.value)


def test_variables_of_plugins_and_tools_are_not_config_keys():
    """Without ``__`` and not beginning with a section's name, a variable is someone else's."""
    env = {"CLAWROUTER_SOLANA_KEY": "a key", "CLAWROUTER_ANVIL": "/usr/bin/anvil", "CLAWROUTER_NOPE": "1"}
    assert load_config(env=env) == load_config(env={})
    plugin = load_config(env={"CLAWROUTER_PLUGINS__SOLANA__PAY_TO": "Operator1111"})
    assert plugin.plugins["solana"] == {"pay_to": "Operator1111"}


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})
    typed = tmp_path / "typed.toml"
    typed.write_text("[auth]\nallow_anonymous = 'yes'\n")
    with pytest.raises(ConfigError, match=r"'auth.allow_anonymous': Expected bool, got str"):
        load_config(typed, env={})


def test_provider_settings_are_validated_with_the_key_named():
    config = load_config(data={"providers": {"sim": {"kind": "simulated", "latency_ms": "slow"}}}, env={})
    with pytest.raises(ConfigError, match=r"'providers.sim.latency_ms': Expected `float`, got `str`"):
        Router(config, entry_points=False, env={})
    config = load_config(data={"providers": {"sim": {"kind": "simulated", "colour": "red"}}}, env={})
    with pytest.raises(ConfigError, match=r"'providers.sim.colour': unknown key"):
        Router(config, entry_points=False, env={})


def test_routing_profile_is_validated():
    config = load_config(data={"routing": {"default_profile": "cheap"}}, env={})
    with pytest.raises(ConfigError, match=r"routing\.default_profile"):
        Router(config, entry_points=False, env={})


def test_model_entries_are_validated():
    config = load_config(
        data={"models": [{"id": "m", "provider": "simulated", "input_price": -1, "output_price": 1}]}, env={}
    )
    with pytest.raises(ValueError, match="model 'm': input_price must be >= 0"):
        Router(config, entry_points=False, env={})
