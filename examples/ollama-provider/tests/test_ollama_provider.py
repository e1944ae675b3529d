"""clawrouter-ollama against a fake Ollama on 127.0.0.1.

:class:`FakeOllama` is a pure ASGI app answering ``POST /api/chat`` the way
Ollama documents it (one JSON object, or newline-delimited JSON objects with
each line split across two writes), served by
:class:`clawrouter.server.BackgroundServer`. It records every request body, so
tests assert what the adapter sent. Routers are built with the installed entry
point (``entry_points=True``, ``CLAWROUTER_LOAD_PLUGINS=ollama_native``), which
proves that installing the distribution is what makes clawrouter load it.

The fake's behaviour is chosen by the model name: ``missing`` (404, not pulled),
``crash`` (500), ``busy`` (503), ``picky`` (400), ``flaky`` (an error line
mid-stream), ``cut`` (a stream without its last line), ``thinker`` (a thinking
model), ``leaky`` (a 400 quoting the request's authorization header). Any other
model answers "You said: <the last user message>", or calls the first tool
offered.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import tomllib
from collections.abc import AsyncIterator, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import clawrouter_ollama
import httpx
import pytest
from clawrouter_ollama.provider import OllamaProvider, OllamaSettings, iter_lines, load_settings
from openai import AsyncOpenAI, OpenAI

from clawrouter.catalogue import ModelInfo
from clawrouter.config import ConfigError
from clawrouter.providers import (
    ChatCall,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamServerError,
    UpstreamUnavailable,
)
from clawrouter.server import BackgroundServer
from clawrouter.upstream import HttpxTransport
from clawrouter.wire import decode_request

PLUGIN_ENV = {"CLAWROUTER_LOAD_PLUGINS": "ollama_native"}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TEXT_PART = {"type": "text", "text": "What is this?"}
MODELS: list[Any] = [
    "llama3.2",
    {"name": "qwen2.5:7b", "capabilities": ["streaming", "tools"], "num_ctx": 8192},
    {"name": "llava:7b", "capabilities": ["streaming", "vision"]},
    "missing",
    "crash",
    "busy",
    "picky",
    "flaky",
    "cut",
    "thinker",
    "leaky",
]
ERRORS = {
    "missing": (404, 'model "missing" not found, try pulling it first'),
    "crash": (500, "llama runner process has terminated: exit status 2"),
    "busy": (503, "server busy, please try again.  maximum pending requests exceeded"),
    "picky": (400, "invalid options: num_predict must be an integer"),
}


# --- the fake Ollama ----------------------------------------------------------------------------


class FakeOllama:
    """``POST /api/chat`` as Ollama documents it; ``requests`` and ``headers`` record what came in."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.headers.clear()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path == "/" and method in ("GET", "HEAD"):  # what the adapter's prewarm asks for
            await _respond(send, 200, b"Ollama is running", "text/plain; charset=utf-8")
            return
        if path != "/api/chat" or method != "POST":
            await _respond(send, 404, b"404 page not found", "text/plain")
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        with self._lock:
            self.requests.append(request)
            self.headers.append(headers)
        model = request.get("model", "")
        if model in ERRORS:
            status, error = ERRORS[model]
            await _respond(send, status, json.dumps({"error": error}).encode())
            return
        if model == "leaky":
            error = f"bad request from {headers.get('authorization', '')}"
            await _respond(send, 400, json.dumps({"error": error}).encode())
            return
        lines = _answer(request)
        if not request.get("stream", True):  # Ollama streams unless told otherwise
            final = lines[-1]
            final["message"] = {
                "role": "assistant",
                "content": "".join(line["message"]["content"] for line in lines),
                **{k: v for line in lines for k, v in line["message"].items() if k in ("tool_calls", "thinking")},
            }
            await _respond(send, 200, json.dumps(final).encode())
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-ndjson")]}
        )
        for index, line in enumerate(lines):
            if model == "flaky" and index == 2:
                line = {"error": "an error was encountered while running the model: unexpected EOF"}
            if model == "cut" and line["done"]:
                break
            data = json.dumps(line).encode() + b"\n"
            half = len(data) // 2  # every line split across two writes, mid-JSON
            await send({"type": "http.response.body", "body": data[:half], "more_body": True})
            await asyncio.sleep(0.002)
            await send({"type": "http.response.body", "body": data[half:], "more_body": True})
            if "error" in line:
                break
        await send({"type": "http.response.body", "body": b""})


async def _respond(send: Any, status: int, body: bytes, content_type: str = "application/json; charset=utf-8"):
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _text(content: Any) -> str:
    return content if isinstance(content, str) else ""


def _answer(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The lines of a streamed answer, the last one with ``done: true`` and the counts."""
    model, messages = request["model"], request["messages"]
    stamp = {"model": model, "created_at": "2025-01-01T00:00:00.000000Z"}
    prompt_tokens = sum(len(_text(m.get("content")).split()) for m in messages) + 3 * len(messages)
    lines: list[dict[str, Any]] = []
    if request.get("tools") and messages[-1]["role"] == "user":
        name = request["tools"][0]["function"]["name"]
        call = {"function": {"name": name, "arguments": {"city": "Paris"}}}
        lines.append({**stamp, "message": {"role": "assistant", "content": "", "tool_calls": [call]}, "done": False})
        words, reason = ["tool"], "stop"
    else:
        last = next((m for m in reversed(messages) if m["role"] in ("user", "tool")), {"content": ""})
        words = ["You", "said:", *_text(last.get("content")).split()]
        limit = request.get("options", {}).get("num_predict")
        reason = "stop"
        if isinstance(limit, int) and 0 < limit < len(words):
            words, reason = words[:limit], "length"
        if model == "thinker":
            lines.append({**stamp, "message": {"role": "assistant", "content": "", "thinking": "Hmm."}, "done": False})
        for i, word in enumerate(words):
            text = word if i == len(words) - 1 else word + " "
            lines.append({**stamp, "message": {"role": "assistant", "content": text}, "done": False})
    lines.append(
        {
            **stamp,
            "message": {"role": "assistant", "content": ""},
            "done_reason": reason,
            "done": True,
            "total_duration": 4883583458,
            "load_duration": 1334875,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": 342546000,
            "eval_count": len(words),
            "eval_duration": 4535599000,
        }
    )
    return lines


# --- fixtures ------------------------------------------------------------------------------------


class Ollama:
    def __init__(self, app: FakeOllama, url: str) -> None:
        self.app, self.url = app, url

    @property
    def last(self) -> dict[str, Any]:
        return self.app.requests[-1]


@pytest.fixture(scope="module")
def ollama_server() -> Iterator[Ollama]:
    app = FakeOllama()
    with BackgroundServer(app) as server:
        yield Ollama(app, server.url)


@pytest.fixture
def ollama(ollama_server: Ollama) -> Ollama:
    ollama_server.app.clear()
    return ollama_server


def router_config(url: str, **settings: Any) -> dict[str, Any]:
    provider = {"kind": "ollama-native", "base_url": url, "models": MODELS, "keep_alive": "10m", **settings}
    return {
        "providers": {"local": provider},
        "ledger": {"backend": "memory"},
        "execution": {"max_retries": 0},
    }


@pytest.fixture
def make_router(clawrouter_router, ollama):
    """A router loading the installed plugin through its entry point."""

    def make(extra_models: list[dict[str, Any]] | None = None, **settings: Any):
        config = router_config(ollama.url, **settings)
        if extra_models:
            config["models"] = extra_models  # [[models]] of the config: added last, they win
        return clawrouter_router(config, entry_points=True, env=PLUGIN_ENV)

    return make


@pytest.fixture
async def client(make_router, clawrouter_client):
    return await clawrouter_client(make_router())


def chat_body(content: Any = "hello there", model: str = "local/llama3.2", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def sse_data(text: str) -> list[Any]:
    return [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: ") and line != "data: [DONE]"]


def direct_call(model: str, *, stream: bool = False, content: str = "hello there") -> ChatCall:
    """A call as the execute stage makes it, for testing the provider without a router."""
    messages = [{"role": "user", "content": content}]
    body = json.dumps({"model": f"local/{model}", "stream": stream, "messages": messages}).encode()
    info = ModelInfo(id=f"local/{model}", provider="local", upstream=model, input_price=0, output_price=0)
    return ChatCall(decode_request(body), info, body)


@pytest.fixture
async def provider(ollama) -> AsyncIterator[OllamaProvider]:
    provider = OllamaProvider("local", OllamaSettings(base_url=ollama.url, prewarm=False))
    await provider.start()
    yield provider
    await provider.aclose()


# --- installation and registration --------------------------------------------------------------


def test_entry_point_is_installed():
    found = {ep.name: ep for ep in entry_points(group="clawrouter")}
    assert found["ollama_native"].value == "clawrouter_ollama"
    assert found["ollama_native"].dist is not None and found["ollama_native"].dist.name == "clawrouter-ollama"
    assert found["ollama_native"].load() is clawrouter_ollama


async def test_plugins_endpoint_lists_the_plugin(client):
    document = (await client.get("/-/plugins")).json()
    assert document["errors"] == []
    plugin = next(p for p in document["plugins"] if p["name"] == "ollama_native")
    assert plugin["source"] == "entry_point"
    assert plugin["distribution"] == "clawrouter-ollama"
    assert plugin["version"] == clawrouter_ollama.__version__
    assert plugin["hooks"] == ["register_models", "register_providers"]
    assert plugin["registered"]["providers"] == ["local"]
    assert plugin["registered"]["models"] == [f"local/{m if isinstance(m, str) else m['name']}" for m in MODELS]

    models = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
    assert models["local/qwen2.5:7b"]["owned_by"] == "local"


@pytest.mark.parametrize(
    ("entry_points", "env"),
    [
        (False, PLUGIN_ENV),
        (True, {"CLAWROUTER_DISABLE_PLUGINS": "ollama_native"}),
        (True, {"CLAWROUTER_LOAD_PLUGINS": ""}),
    ],
)
def test_without_the_entry_point_the_kind_is_unknown(clawrouter_router, entry_points, env):
    with pytest.raises(
        ConfigError, match=re.escape("providers.local': no installed plugin provides kind 'ollama-native'")
    ):
        clawrouter_router(router_config("http://127.0.0.1:1"), entry_points=entry_points, env=env)


def test_registered_catalogue_entries(make_router, ollama):
    router = make_router()
    llama, qwen, llava = (router.catalogue.get(f"local/{m}") for m in ("llama3.2", "qwen2.5:7b", "llava:7b"))
    assert (llama.upstream, llama.input_price, llama.output_price) == ("llama3.2", 0.0, 0.0)
    assert llama.capabilities == ["streaming"] and llama.context_window == 4096
    assert qwen.capabilities == ["streaming", "tools"] and qwen.context_window == 8192
    assert llava.has("vision") and not llava.has("tools")
    assert repr(router.providers["local"]) == f"OllamaProvider(name='local', base_url={ollama.url!r})"


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"keep_alive": "soon"}, "providers.local.keep_alive"),
        ({"base_url": "127.0.0.1:11434"}, "providers.local.base_url"),
        ({"timeouts": {"connect": "fast"}}, "providers.local.timeouts.connect"),
        ({"num_ctx": 0}, "providers.local.num_ctx"),
        ({"capabilities": ["telepathy"]}, "providers.local.capabilities"),
        ({"models": [{"name": "x", "capabilties": []}]}, "providers.local.models[0].capabilties"),
        ({"models": ["a", {"name": "b", "capabilities": ["mind"]}]}, "providers.local.models[1].capabilities"),
        ({"models": ["a", "a"]}, "providers.local.models[1]"),
        ({"models": [3]}, "providers.local.models[0]"),
        ({"port": 11434}, "providers.local.port"),
    ],
)
def test_bad_settings_stop_the_router_naming_the_key(clawrouter_router, settings, key):
    config = router_config("http://127.0.0.1:1")
    config["providers"]["local"].update(settings)
    with pytest.raises(ConfigError, match=re.escape(f"config key '{key}'")):
        clawrouter_router(config, entry_points=True, env=PLUGIN_ENV)


def test_readme_config_snippet_is_valid(clawrouter_router):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    snippet = readme.split("## Configure", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    router = clawrouter_router(tomllib.loads(snippet), entry_points=True, env=PLUGIN_ENV)
    assert sorted(m.id for m in router.catalogue) == [
        "local/llama3.2",
        "local/llava:7b",
        "local/qwen2.5-coder:14b",
        "local/qwen2.5:7b",
    ]
    assert router.catalogue.get("local/qwen2.5-coder:14b").context_window == 16384


def test_settings_accept_durations_and_seconds():
    for value in ("5m", "1h30m", "0", "-1s", 300, -1, 2.5):
        assert load_settings("x", {"kind": "ollama-native", "keep_alive": value}).keep_alive == value


def test_other_kinds_are_left_alone(clawrouter_router):
    router = clawrouter_router(entry_points=True, env=PLUGIN_ENV)  # the embedded default: simulated only
    assert "local" not in router.providers
    assert any(p.name == "ollama_native" for p in router.plugins)


# --- request translation -------------------------------------------------------------------------


async def test_request_body_is_translated(client, ollama):
    body = {
        "model": "local/llava:7b",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {
                "role": "user",
                "name": "ada",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
                    {"type": "text", "text": "One word."},
                ],
            },
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": "\n\n",
        "max_tokens": 50,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
        },
        "n": 1,
        "logprobs": False,
        "user": "ada-42",
        "metadata": {"team": "x"},
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert ollama.last == {
        "model": "llava:7b",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Answer in English."},
            {"role": "user", "content": "What is this?\nOne word.", "images": [PNG]},
        ],
        "stream": False,
        "options": {
            "num_predict": 50,
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.25,
            "stop": ["\n\n"],
        },
        "format": {"type": "object", "properties": {"a": {"type": "string"}}},
        "keep_alive": "10m",
    }


async def test_num_ctx_json_mode_and_max_completion_tokens(client, ollama):
    body = chat_body(model="local/qwen2.5:7b", response_format={"type": "json_object"}, max_completion_tokens=9)
    body["max_tokens"] = 100  # max_completion_tokens wins
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    assert ollama.last["options"] == {"num_ctx": 8192, "num_predict": 9}
    assert ollama.last["format"] == "json"
    assert "tools" not in ollama.last


async def test_tools_and_tool_calls_are_translated(client, ollama):
    body = {
        "model": "local/qwen2.5:7b",
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert ollama.last["tools"] == [WEATHER_TOOL]
    assert ollama.last["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_time", "arguments": {}}},
            ],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        {"role": "tool", "content": "noon", "tool_name": "get_time"},
    ]
    assert response.json()["choices"][0]["message"]["content"] == "You said: noon"

    none = dict(body, tool_choice="none")
    assert (await client.post("/v1/chat/completions", json=none)).status_code == 200
    assert "tools" not in ollama.last


async def test_tool_call_answer(client, ollama):
    body = chat_body("Weather in Paris?", model="local/qwen2.5:7b", tools=[WEATHER_TOOL])
    answer = (await client.post("/v1/chat/completions", json=body)).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"seed": "seven"}, "seed"),
        ({"presence_penalty": "high"}, "presence_penalty"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tools": [WEATHER_TOOL], "tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        (
            {"messages": [{"role": "user", "content": [TEXT_PART, {"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[1].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [TEXT_PART, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            },
            "messages[0].content[1].image_url.url",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]},
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ],
)
async def test_what_ollama_cannot_honour_is_refused(client, ollama, change, param):
    model = "local/llava:7b" if "image_url" in json.dumps(change) else "local/qwen2.5:7b"
    for stream in (False, True):
        response = await client.post("/v1/chat/completions", json=chat_body(model=model, stream=stream) | change)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
    assert ollama.app.requests == []  # refused before anything was sent


# --- answers ---------------------------------------------------------------------------------------


async def test_json_answer(client, ollama):
    response = await client.post("/v1/chat/completions", json=chat_body("the sky is blue"))
    assert response.status_code == 200
    assert response.headers["x-clawrouter-model"] == "local/llama3.2"
    assert response.headers["x-clawrouter-provider"] == "local"
    assert response.headers["x-clawrouter-cost-usd"] == "0.0"
    answer = response.json()
    assert answer["object"] == "chat.completion" and answer["model"] == "llama3.2"
    assert answer["id"].startswith("chatcmpl-")
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "You said: the sky is blue"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert answer["usage"] == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}
    assert ollama.last["stream"] is False


async def test_length_and_thinking(client):
    answer = (await client.post("/v1/chat/completions", json=chat_body("one two three", max_tokens=3))).json()
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["choices"][0]["message"]["content"] == "You said: one"
    assert answer["usage"]["completion_tokens"] == 3

    answer = (await client.post("/v1/chat/completions", json=chat_body("hi", model="local/thinker"))).json()
    assert answer["choices"][0]["message"]["reasoning_content"] == "Hmm."


async def test_streamed_answer(client, ollama):
    body = chat_body("streams arrive in pieces", stream=True)
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
    chunks = sse_data(response.text)
    assert ollama.last["stream"] is True
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "You said: streams arrive in pieces"
    assert len(chunks) == 7  # one per word, then the finish_reason chunk
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop" and last["choices"][0]["delta"] == {}
    assert "usage" not in last  # not asked for
    assert last["clawrouter"]["model"] == "local/llama3.2"


async def test_streamed_usage_when_asked(client):
    body = chat_body("count me", stream=True, stream_options={"include_usage": True})
    chunks = sse_data((await client.post("/v1/chat/completions", json=body)).text)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


async def test_streamed_tool_call_and_length(client):
    body = chat_body("Weather?", model="local/qwen2.5:7b", stream=True, tools=[WEATHER_TOOL])
    chunks = sse_data((await client.post("/v1/chat/completions", json=body)).text)
    (call,) = chunks[0]["choices"][0]["delta"]["tool_calls"]
    assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    body = chat_body("one two three four", stream=True, max_tokens=2)
    chunks = sse_data((await client.post("/v1/chat/completions", json=body)).text)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_stream_sets_call_usage(provider, ollama):
    call = direct_call("llama3.2", stream=True, content="a b c")
    chunks = [json.loads(c) async for c in provider.stream(call)]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "You "}
    assert call.usage is not None and (call.usage.prompt_tokens, call.usage.completion_tokens) == (6, 5)


async def test_ndjson_lines_split_anywhere_are_reassembled():
    async def feed(*parts: bytes) -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    parts = (b'{"a":', b"1}\n", b'{"b":2}\r\n\n{"c"', b":3}\n{", b'"d":4}')
    assert [line async for line in iter_lines(feed(*parts))] == [b'{"a":1}', b'{"b":2}', b'{"c":3}', b'{"d":4}']


async def test_transport_injection_with_httpx_mock():
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=_answer(seen[-1])[-1] | {"message": {"role": "assistant", "content": "ok"}})

    transport = HttpxTransport(httpx.MockTransport(handler))
    provider = OllamaProvider("local", OllamaSettings(base_url="http://ollama.test", prewarm=False), transport)
    completion = await provider.chat(direct_call("llama3.2"))
    await provider.aclose()
    assert json.loads(completion.body)["choices"][0]["message"]["content"] == "ok"
    assert seen[0]["model"] == "llama3.2" and seen[0]["stream"] is False


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "error", "status", "fallback"),
    [
        ("missing", UpstreamServerError, 502, True),
        ("crash", UpstreamServerError, 502, True),
        ("busy", UpstreamServerError, 502, True),
        ("picky", UpstreamBadRequest, 400, False),
    ],
)
async def test_errors_are_mapped(provider, model, error, status, fallback):
    for stream in (False, True):
        with pytest.raises(error) as caught:
            if stream:
                [c async for c in provider.stream(direct_call(model, stream=True))]
            else:
                await provider.chat(direct_call(model))
        assert type(caught.value) is error
        assert caught.value.status == status and caught.value.fallback is fallback
        assert ERRORS[model][1] in caught.value.message


async def test_not_pulled_model_falls_back(make_router, clawrouter_client, ollama):
    fallback = {
        "id": "local/missing",
        "provider": "local",
        "upstream": "missing",
        "input_price": 0,
        "output_price": 0,
        "fallbacks": ["local/llama3.2"],
    }
    client = await clawrouter_client(make_router(extra_models=[fallback]))
    response = await client.post("/v1/chat/completions", json=chat_body("hi", model="local/missing"))
    assert response.status_code == 200
    assert response.headers["x-clawrouter-model"] == "local/llama3.2"
    assert [r["model"] for r in ollama.app.requests] == ["missing", "llama3.2"]


async def test_errors_reach_the_client(client):
    response = await client.post("/v1/chat/completions", json=chat_body(model="local/picky"))
    assert response.status_code == 400
    assert "num_predict must be an integer" in response.json()["error"]["message"]

    response = await client.post("/v1/chat/completions", json=chat_body(model="local/crash"))
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"


async def test_mid_stream_errors_end_the_stream_in_band(client):
    for model in ("flaky", "cut"):
        response = await client.post(
            "/v1/chat/completions", json=chat_body("a b c", model=f"local/{model}", stream=True)
        )
        assert response.status_code == 200
        events = sse_data(response.text)
        assert events[0]["choices"][0]["delta"]["role"] == "assistant"
        assert events[-1]["error"]["type"] == "upstream_error"
        assert "data: [DONE]" not in response.text


async def test_connection_refused_is_unavailable(clawrouter_router, clawrouter_client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    provider = OllamaProvider("local", OllamaSettings(base_url=url, prewarm=False))
    with pytest.raises(UpstreamUnavailable):
        await provider.chat(direct_call("llama3.2"))
    await provider.aclose()

    router = clawrouter_router(router_config(url), entry_points=True, env=PLUGIN_ENV)
    client = await clawrouter_client(router)
    response = await client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"


async def test_bearer_token_is_sent_and_never_shown(make_router, clawrouter_client, ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_PROXY_TOKEN", "tok-secret-123")
    router = make_router(api_key_env="OLLAMA_PROXY_TOKEN", headers={"x-team": "blue"})
    assert "tok-secret-123" not in repr(router.providers["local"])
    client = await clawrouter_client(router)
    assert (await client.post("/v1/chat/completions", json=chat_body())).status_code == 200
    assert ollama.app.headers[-1]["authorization"] == "Bearer tok-secret-123"
    assert ollama.app.headers[-1]["x-team"] == "blue"

    response = await client.post("/v1/chat/completions", json=chat_body(model="local/leaky"))
    assert response.status_code == 400
    assert "tok-secret-123" not in response.text and "***" in response.json()["error"]["message"]


async def test_auth_errors_are_mapped():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "unauthorized"})

    transport = HttpxTransport(httpx.MockTransport(handler))
    provider = OllamaProvider("local", OllamaSettings(base_url="http://ollama.test", prewarm=False), transport)
    with pytest.raises(UpstreamAuthError):
        await provider.chat(direct_call("llama3.2"))
    await provider.aclose()


# --- the OpenAI Python SDK against the router served over HTTP --------------------------------------------


@pytest.fixture
def served_router(make_router) -> Iterator[str]:
    with BackgroundServer(make_router().app) as server:
        yield server.url + "/v1"


def test_openai_sdk(served_router):
    with OpenAI(base_url=served_router, api_key="unused", max_retries=0) as sdk:
        completion = sdk.chat.completions.create(
            model="local/llama3.2", messages=[{"role": "user", "content": "hello from the SDK"}]
        )
        assert completion.choices[0].message.content == "You said: hello from the SDK"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.completion_tokens == 6

        stream = sdk.chat.completions.create(
            model="local/llama3.2",
            messages=[{"role": "user", "content": "stream it"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: stream it"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 9

        completion = sdk.chat.completions.create(
            model="local/qwen2.5:7b",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        )
        call = completion.choices[0].message.tool_calls[0]
        assert call.type == "function" and json.loads(call.function.arguments) == {"city": "Paris"}


async def test_async_openai_sdk_stream_and_errors(served_router):
    async with AsyncOpenAI(base_url=served_router, api_key="unused", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="local/qwen2.5:7b",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
        call = chunks[0].choices[0].delta.tool_calls[0]
        assert call.index == 0 and call.function.name == "get_weather"
        assert chunks[-1].choices[0].finish_reason == "tool_calls"

        import openai

        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(model="local/llama3.2", messages=[{"role": "user", "content": "hi"}], n=3)
        assert caught.value.body["param"] == "n"
