"""clawrouter: one OpenAI-compatible endpoint to many LLMs, paid per call with x402.

Importing this package loads no optional dependency and no plugin; plugins are
loaded by each :class:`Router` when it is built.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Config, ConfigError, load_config
from .context import Actor, RequestContext
from .hookspecs import hookimpl
from .router import Router

__all__ = ["Actor", "Config", "ConfigError", "RequestContext", "Router", "__version__", "hookimpl", "load_config"]
