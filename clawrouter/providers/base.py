"""What a provider adapter is, and the one error hierarchy all adapters map into.

An adapter turns an OpenAI-shaped request into a call to one upstream and
answers in OpenAI's shape::

    ProviderError                 502 upstream_error       (base; not retried)
     +-- UpstreamTimeout          504 connect/first byte/total timeout  (fallback)
     +-- UpstreamUnavailable      502 connection refused/reset          (fallback)
     +-- UpstreamRateLimited      429 carries retry_after seconds       (fallback)
     +-- UpstreamServerError      502 upstream 5xx                      (fallback)
     +-- UpstreamAuthError        502 the operator's key was refused    (fallback)
     +-- ContextWindowExceeded    400 prompt too long for this model    (fallback)
     +-- ContentPolicyViolation   400 refused by the upstream's policy  (fallback)
     +-- UpstreamBadRequest       400 the upstream rejected the request (final)
     +-- UnsupportedParameter     400 a parameter the upstream cannot honour   (fallback)
     +-- UntranslatableRequest    400 not expressible for this upstream (final)

``fallback`` says whether the execute stage may try the next model of the
route's chain (only before the first byte reached the client); ``retryable``
whether it may retry the same model after a backoff (timeouts, connection
failures, 429 honouring ``retry_after``, 5xx); ``unhealthy`` whether the
failure counts against the model's circuit breaker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from msgspec import Raw

from ..catalogue import ModelInfo
from ..errors import BadRequest, ClawError
from ..wire import ChatCompletionRequest, Usage, decode_raw, encode

__all__ = [
    "ChatCall",
    "Completion",
    "ContentPolicyViolation",
    "ContextWindowExceeded",
    "Provider",
    "ProviderError",
    "UpstreamAuthError",
    "UpstreamBadRequest",
    "UpstreamRateLimited",
    "UpstreamServerError",
    "UpstreamTimeout",
    "UnsupportedParameter",
    "UntranslatableRequest",
    "UpstreamUnavailable",
]


class ProviderError(ClawError):
    status = 502
    type = "upstream_error"
    #: the execute stage may try the next model of the chain
    fallback = False
    #: the same model may be retried after a backoff
    retryable = False
    #: the failure says the upstream is unhealthy (counts for its circuit breaker)
    unhealthy = False


class UpstreamTimeout(ProviderError):
    retryable = True
    unhealthy = True
    status = 504
    type = "upstream_timeout"
    fallback = True


class UpstreamUnavailable(ProviderError):
    retryable = True
    unhealthy = True
    fallback = True


class UpstreamRateLimited(ProviderError):
    retryable = True
    status = 429
    type = "rate_limit_error"
    fallback = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after
        if retry_after is not None:
            self.headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))


class UpstreamServerError(ProviderError):
    retryable = True
    unhealthy = True
    fallback = True


class UpstreamAuthError(ProviderError):
    unhealthy = True
    fallback = True


class ContextWindowExceeded(ProviderError):
    status = 400
    type = "invalid_request_error"
    fallback = True


class ContentPolicyViolation(ProviderError):
    status = 400
    type = "invalid_request_error"
    fallback = True


class UpstreamBadRequest(ProviderError):
    status = 400
    type = "invalid_request_error"


class UnsupportedParameter(BadRequest, ProviderError):
    """A request parameter or content part the upstream cannot honour: 400 naming it.

    Raised before anything is sent (unless the provider's ``drop_params`` is
    on, which drops the parameter instead). ``fallback`` lets the execute stage
    try the next model of the chain, which may support it.
    """

    status = 400
    type = "invalid_request_error"
    fallback = True


class UntranslatableRequest(BadRequest, ProviderError):
    """The request cannot be expressed in the upstream's format at all: 400, final."""

    status = 400
    type = "invalid_request_error"


class ChatCall:
    """One attempt of one request on one model.

    ``raw`` is the client's body as ``{field: raw JSON}`` (decoded on first
    use), so fields the router does not know are forwarded as they came. A
    streaming adapter sets ``usage`` as soon as it knows it (at the latest when
    its iterator ends), and ``ratelimit`` when the upstream reports its
    remaining request budget.
    """

    __slots__ = ("_raw", "body", "model", "ratelimit", "request", "traceparent", "tracestate", "usage")

    def __init__(self, request: ChatCompletionRequest, model: ModelInfo, body: bytes = b"") -> None:
        self.request = request
        self.model = model
        self.body = body
        self.usage: Usage | None = None
        #: (remaining, limit) requests from the upstream's rate-limit headers, if it sent them
        self.ratelimit: tuple[float, float] | None = None
        #: the W3C ``traceparent`` of this attempt's span when traces are on: adapters send it
        #: upstream (:meth:`headers`)
        self.traceparent: str | None = None
        #: the caller's W3C ``tracestate``, passed on with it
        self.tracestate: str | None = None
        self._raw: dict[str, Raw] | None = None

    def headers(self, base: dict[str, str]) -> dict[str, str]:
        """The upstream request's headers: ``base`` plus this attempt's ``traceparent`` (and the
        caller's ``tracestate``), if any."""
        if self.traceparent is None:
            return base
        headers = {**base, "traceparent": self.traceparent}
        if self.tracestate:
            headers["tracestate"] = self.tracestate
        return headers

    @property
    def raw(self) -> dict[str, Raw]:
        if self._raw is None:
            raw = decode_raw(self.body or encode(self.request))
            raw.pop("clawrouter", None)  # the router's own extension never goes upstream
            cap = self.request.max_tokens
            if isinstance(cap, int) and "max_tokens" not in raw and "max_completion_tokens" not in raw:
                raw["max_tokens"] = Raw(str(cap).encode())  # the default the router injected and quoted
            self._raw = raw
        return self._raw


class Completion:
    """A finished non-streaming answer: the OpenAI-shaped JSON body and its usage."""

    __slots__ = ("body", "usage")

    def __init__(self, body: bytes, usage: Usage | None) -> None:
        self.body = body
        self.usage = usage


@runtime_checkable
class Provider(Protocol):
    """A provider adapter, returned by the ``register_providers`` hook.

    ``name`` is the provider's name in the config and in ``ModelInfo.provider``.
    ``chat`` returns a :class:`Completion`; ``stream`` is an async iterator of
    OpenAI ``chat.completion.chunk`` JSON documents (bytes, without SSE
    framing), or of lists of them: chunks that arrived together from the
    upstream may be yielded as one list, and the router relays them in one
    write. Both raise :class:`ProviderError` subclasses only.
    """

    name: str

    async def start(self) -> None:
        """Open connection pools; called once when the router starts."""

    async def aclose(self) -> None:
        """Close connection pools; called once when the router stops."""

    async def chat(self, call: ChatCall) -> Completion: ...

    def stream(self, call: ChatCall) -> AsyncIterator[bytes | list[bytes]]: ...
