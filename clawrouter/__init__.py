"""clawrouter: one OpenAI-compatible endpoint to many LLMs, paid per call with x402.

Importing this package loads no optional dependency and no plugin; plugins are
loaded by each :class:`Router` when it is built.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Config, ConfigError, load_config  # noqa: E402
from .context import Actor, RequestContext  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .router import Router  # noqa: E402

__all__ = ["Actor", "Config", "ConfigError", "RequestContext", "Router", "__version__", "hookimpl", "load_config"]
