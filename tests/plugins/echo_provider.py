"""A third-party-style provider plugin: kind ``echo`` answers with the last user message."""

from __future__ import annotations

import time

from clawrouter import hookimpl
from clawrouter.providers import ChatCall, Completion, UpstreamServerError
from clawrouter.wire import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    ResponseMessage,
    Usage,
    encode,
)


class EchoProvider:
    def __init__(self, name: str, fail_after: int | None = None, fail_before: bool = False) -> None:
        self.name = name
        self.fail_after = fail_after
        self.fail_before = fail_before
        self.calls = 0

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _text(self, call: ChatCall) -> str:
        content = call.request.messages[-1].content
        return content if isinstance(content, str) else ""

    async def chat(self, call: ChatCall) -> Completion:
        self.calls += 1
        if self.fail_before:
            raise UpstreamServerError(f"{self.name} is down")
        text = self._text(call)
        usage = Usage(len(text.split()), len(text.split()), 2 * len(text.split()))
        body = ChatCompletion(
            "echo-1",
            int(time.time()),
            call.model.upstream,
            [Choice(0, ResponseMessage(content=text), "stop")],
            usage=usage,
        )
        return Completion(encode(body), usage)

    async def stream(self, call: ChatCall):
        self.calls += 1
        if self.fail_before:
            raise UpstreamServerError(f"{self.name} is down")
        words = self._text(call).split()
        for i, word in enumerate(words):
            if self.fail_after is not None and i == self.fail_after:
                raise UpstreamServerError(f"{self.name} broke mid-stream")
            yield encode(ChatCompletionChunk("echo-1", 0, call.model.upstream, [ChunkChoice(0, Delta(content=word))]))
        call.usage = Usage(len(words), len(words), 2 * len(words))
        yield encode(ChatCompletionChunk("echo-1", 0, call.model.upstream, [ChunkChoice(0, Delta(), "stop")]))


@hookimpl
def register_providers(config):
    out = []
    for name, settings in config.providers.items():
        if settings.get("kind") == "echo":
            out.append(EchoProvider(name, settings.get("fail_after"), settings.get("fail_before", False)))
    return out


@hookimpl
def register_models(config):
    return [
        {
            "id": f"{name}/model",
            "provider": name,
            "input_price": 1.0,
            "output_price": 1.0,
            "capabilities": ["streaming"],
            "fallbacks": settings.get("fallbacks", []),
        }
        for name, settings in config.providers.items()
        if settings.get("kind") == "echo"
    ]
