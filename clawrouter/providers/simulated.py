"""The simulated provider: deterministic answers, offline, for demos and benchmarks.

It is not a model. It answers every request with text derived from a hash of the
prompt and the model id, after a configurable latency, with correct usage (prompt
tokens counted by :func:`clawrouter.tokens.prompt_tokens`, completion tokens the
number of words it produced). Everything it shows is named ``simulated``.

Settings (``[providers.simulated]``): ``latency_ms`` (non-streaming answer time),
``ttft_ms`` (time to first streamed token), ``tokens_per_second`` (streaming pace,
0 = as fast as possible), ``output_tokens`` (answer length before ``max_tokens``),
``chunk_tokens`` (words per streamed chunk), and ``fail_models`` (model ids that
answer with an upstream 503, to show fallback and unpaid failures).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from ..catalogue import ModelInfo
from ..tokens import prompt_text, prompt_tokens
from ..wire import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    ResponseMessage,
    Usage,
    encode,
)
from .base import ChatCall, Completion, UpstreamServerError

__all__ = ["SIMULATED_MODELS", "SimulatedProvider", "SimulatedSettings"]

_WORDS = (  # noqa: SIM905
    "the router weighs price latency and quality before it picks a model for "
    "each request while agents pay per call in stablecoins and settle only "
    "after an answer arrives so failed calls cost nothing at all"
).split()


class SimulatedSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    kind: str = "simulated"
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    tokens_per_second: float = 0.0
    output_tokens: int = 48
    chunk_tokens: int = 4
    fail_models: list[str] = []


SIMULATED_MODELS: tuple[dict[str, Any], ...] = (
    {
        "id": "simulated/eco",
        "provider": "simulated",
        "input_price": 0.10,
        "output_price": 0.40,
        "context_window": 128_000,
        "max_output": 8_192,
        "capabilities": ["streaming", "json_mode"],
        "quality": {"chat": 0.55, "coding": 0.45, "reasoning": 0.40},
    },
    {
        "id": "simulated/standard",
        "provider": "simulated",
        "input_price": 1.00,
        "output_price": 4.00,
        "context_window": 200_000,
        "max_output": 16_384,
        "capabilities": ["streaming", "json_mode", "tools", "vision"],
        "quality": {"chat": 0.75, "coding": 0.72, "reasoning": 0.70},
    },
    {
        "id": "simulated/premium",
        "provider": "simulated",
        "input_price": 5.00,
        "output_price": 20.00,
        "context_window": 400_000,
        "max_output": 32_768,
        "capabilities": ["streaming", "json_mode", "tools", "vision", "reasoning"],
        "quality": {"chat": 0.90, "coding": 0.92, "reasoning": 0.93},
    },
)


class SimulatedProvider:
    """Deterministic offline provider (see module docstring)."""

    def __init__(self, name: str = "simulated", settings: SimulatedSettings | None = None):
        self.name = name
        self.settings = settings or SimulatedSettings()

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _answer(self, call: ChatCall) -> tuple[list[str], str, int]:
        if call.model.id in self.settings.fail_models:
            raise UpstreamServerError(f"simulated upstream failure for {call.model.id}")
        seed = hashlib.sha256(f"{call.model.id}\0{prompt_text(call.request)}".encode()).digest()
        want = self.settings.output_tokens
        cap = call.request.output_cap()
        finish = "stop"
        if cap is not None and cap < want:
            want, finish = max(cap, 0), "length"
        words = [_WORDS[seed[i % len(seed)] % len(_WORDS)] for i in range(want)]
        return words, finish, prompt_tokens(call.request)

    @staticmethod
    def _id(call: ChatCall) -> str:
        return "chatcmpl-sim-" + hashlib.sha256(prompt_text(call.request).encode()).hexdigest()[:16]

    async def chat(self, call: ChatCall) -> Completion:
        words, finish, n_prompt = self._answer(call)
        if self.settings.latency_ms:
            await asyncio.sleep(self.settings.latency_ms / 1000)
        usage = Usage(n_prompt, len(words), n_prompt + len(words))
        body = ChatCompletion(
            id=self._id(call),
            created=int(time.time()),
            model=call.model.upstream,
            choices=[Choice(0, ResponseMessage(content=" ".join(words)), finish)],
            usage=usage,
        )
        call.usage = usage
        return Completion(encode(body), usage)

    async def stream(self, call: ChatCall) -> AsyncIterator[bytes]:
        words, finish, n_prompt = self._answer(call)
        settings = self.settings
        ident, created, model = self._id(call), int(time.time()), call.model.upstream
        if settings.ttft_ms:
            await asyncio.sleep(settings.ttft_ms / 1000)
        yield encode(ChatCompletionChunk(ident, created, model, [ChunkChoice(0, Delta(role="assistant", content=""))]))
        step = max(1, settings.chunk_tokens)
        pause = step / settings.tokens_per_second if settings.tokens_per_second else 0.0
        for i in range(0, len(words), step):
            if pause:
                await asyncio.sleep(pause)
            text = (" " if i else "") + " ".join(words[i : i + step])
            yield encode(ChatCompletionChunk(ident, created, model, [ChunkChoice(0, Delta(content=text))]))
        usage = Usage(n_prompt, len(words), n_prompt + len(words))
        call.usage = usage
        yield encode(ChatCompletionChunk(ident, created, model, [ChunkChoice(0, Delta(), finish)]))
        options = call.request.stream_options
        if options and options.include_usage is True:
            yield encode(ChatCompletionChunk(ident, created, model, [], usage=usage))


def simulated_models(provider: str = "simulated") -> list[ModelInfo]:
    """The simulated catalogue for a provider entry named ``provider``."""
    return [
        msgspec.convert({**m, "id": m["id"].replace("simulated", provider, 1), "provider": provider}, ModelInfo)
        for m in SIMULATED_MODELS
    ]
