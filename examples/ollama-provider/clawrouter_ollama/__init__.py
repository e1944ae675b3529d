"""clawrouter-ollama: Ollama's native chat API as a clawrouter provider.

Installing this distribution registers the entry point ``ollama_native`` in the
group ``clawrouter``; every :class:`clawrouter.Router` then loads this module as
a plugin and calls its two hooks:

* ``register_providers(config)``: an :class:`OllamaProvider` for each
  ``[providers.NAME]`` with ``kind = "ollama-native"``;
* ``register_models(config)``: the catalogue entries ``NAME/<model>`` of the
  models listed in each such provider's ``models`` (free: local models cost
  nothing).

Settings are validated when the router is built; a bad value stops it with a
:class:`clawrouter.ConfigError` naming the key (``providers.NAME.<field>``)::

    [providers.local]
    kind = "ollama-native"
    base_url = "http://127.0.0.1:11434"   # the default
    keep_alive = "10m"                    # optional
    models = ["llama3.2", { name = "llava:7b", capabilities = ["streaming", "vision"], num_ctx = 8192 }]
"""

from __future__ import annotations

from collections.abc import Iterable

from clawrouter import Config, hookimpl
from clawrouter.catalogue import ModelInfo

from .provider import (
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_MAX_OUTPUT,
    KIND,
    OllamaModel,
    OllamaProvider,
    OllamaSettings,
    load_settings,
)

__version__ = "0.1.0"

__all__ = [
    "KIND",
    "OllamaModel",
    "OllamaProvider",
    "OllamaSettings",
    "__version__",
    "load_settings",
    "register_models",
    "register_providers",
]


def _ours(config: Config) -> Iterable[tuple[str, OllamaSettings]]:
    for name, data in config.providers.items():
        if data.get("kind") == KIND:
            yield name, load_settings(name, data)


@hookimpl
def register_providers(config: Config) -> list[OllamaProvider]:
    return [OllamaProvider(name, settings) for name, settings in _ours(config)]


@hookimpl
def register_models(config: Config) -> list[ModelInfo]:
    models: list[ModelInfo] = []
    for name, settings in _ours(config):
        for model in settings.resolved_models():
            context = model.num_ctx or DEFAULT_CONTEXT_WINDOW
            models.append(
                ModelInfo(
                    id=f"{name}/{model.name}",
                    provider=name,
                    upstream=model.name,
                    input_price=0.0,
                    output_price=0.0,
                    context_window=context,
                    max_output=min(DEFAULT_MAX_OUTPUT, context),
                    capabilities=list(model.capabilities or ()),
                )
            )
    return models
