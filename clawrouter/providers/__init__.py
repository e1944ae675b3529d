"""Provider adapters: the protocol, the error hierarchy and the built-in adapters."""

from .base import (
    ChatCall,
    Completion,
    ContentPolicyViolation,
    ContextWindowExceeded,
    Provider,
    ProviderError,
    UnsupportedParameter,
    UntranslatableRequest,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "ChatCall",
    "Completion",
    "ContentPolicyViolation",
    "ContextWindowExceeded",
    "Provider",
    "ProviderError",
    "UnsupportedParameter",
    "UntranslatableRequest",
    "UpstreamAuthError",
    "UpstreamBadRequest",
    "UpstreamRateLimited",
    "UpstreamServerError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]
