"""Default plugin: the built-in provider adapters and their models.

``[providers.NAME]`` entries of ``kind = "simulated"``, ``kind = "openai"`` (any
OpenAI-compatible server) or one of the OpenAI-compatible presets (``deepseek``,
``xai``, ``groq``, ``together``, ``fireworks``, ``mistral``, ``openrouter``,
``moonshot``, ``qwen``, ``perplexity``, ``ollama``, ``vllm``, ``llamacpp``),
``kind = "anthropic"`` (native Messages API) and ``kind = "gemini"`` (native
Gemini API) are built here; other kinds are left to the plugins that provide
them. The shipped catalogue (``clawrouter/data/models.toml``) is registered
too; its models appear once their provider is configured.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec

from .catalogue import ModelInfo, builtin_models
from .config import Config, ConfigError
from .hookspecs import hookimpl
from .providers.anthropic import AnthropicProvider, AnthropicSettings
from .providers.base import Provider
from .providers.gemini import GeminiProvider, GeminiSettings
from .providers.openai_compat import PRESETS, OpenAICompatibleProvider, OpenAISettings
from .providers.simulated import SimulatedProvider, SimulatedSettings, simulated_models

S = TypeVar("S")


def settings(name: str, data: dict[str, Any], kind: type[S]) -> S:
    """Validate ``[providers.NAME]`` into ``kind``, with errors naming the key."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if " - at `$." in text:
            text, field = text.split(" - at `$.", 1)
            raise ConfigError(f"config key 'providers.{name}.{field.rstrip('`')}': {text}") from None
        if "unknown field `" in text:
            field = text.split("unknown field `", 1)[1].rstrip("`")
            raise ConfigError(f"config key 'providers.{name}.{field}': unknown key") from None
        raise ConfigError(f"config key 'providers.{name}': {text}") from None


@hookimpl(trylast=True)
def register_providers(config: Config) -> Iterable[Provider]:
    providers: list[Provider] = []
    for name, data in config.providers.items():
        kind = data.get("kind")
        if kind == "simulated":
            providers.append(SimulatedProvider(name, settings(name, data, SimulatedSettings)))
        elif kind in PRESETS:
            providers.append(OpenAICompatibleProvider(name, settings(name, data, OpenAISettings)))
        elif kind == "anthropic":
            providers.append(AnthropicProvider(name, settings(name, data, AnthropicSettings)))
        elif kind == "gemini":
            providers.append(GeminiProvider(name, settings(name, data, GeminiSettings)))
    return providers


@hookimpl(trylast=True)
def register_models(config: Config) -> Iterable[ModelInfo]:
    models: list[ModelInfo] = builtin_models()
    for name, data in config.providers.items():
        if data.get("kind") == "simulated":
            models.extend(simulated_models(name))
    return models
