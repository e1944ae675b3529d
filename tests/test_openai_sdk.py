"""The OpenAI Python SDK against a real ``clawrouter serve`` process.

One ``python -m clawrouter.cli serve`` subprocess per module, on 127.0.0.1 and
a free port, with no ``CLAWROUTER_*`` variables from the environment (the
embedded default: simulated models). It is stopped by its pid at teardown.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

SIMULATED = {"simulated/eco", "simulated/standard", "simulated/premium"}
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello to the router."}]
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` (by its pid), then kill it if it does not exit in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


def wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=1.0) as client:
        while True:
            if process.poll() is not None:
                pytest.fail(f"clawrouter serve exited with {process.returncode}:\n{log.read_text(errors='replace')}")
            try:
                if client.get(f"{url}/-/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"clawrouter serve not healthy after {START_TIMEOUT}s:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a running ``clawrouter serve``."""
    workdir = tmp_path_factory.mktemp("clawrouter-serve")
    log = workdir / "serve.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWROUTER_")}
    command = [sys.executable, "-m", "clawrouter.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(process, url, log)
            yield url
        finally:
            stop_process(process)


@pytest.fixture
def client(server_url: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server_url}/v1", api_key="anything", max_retries=0, timeout=10.0) as sdk:
        yield sdk


@pytest.fixture
async def async_client(server_url: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{server_url}/v1", api_key="anything", max_retries=0, timeout=10.0) as sdk:
        yield sdk


# --- sync -----------------------------------------------------------------------------------


def test_sync_chat(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert raw.status_code == 200
    routed = raw.headers["x-clawrouter-model"]
    assert routed in SIMULATED
    assert raw.headers["x-clawrouter-provider"] == "simulated"
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == routed
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_sync_chat_explicit_model_and_max_tokens(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="simulated/eco", messages=MESSAGES, max_tokens=5)
    assert raw.headers["x-clawrouter-model"] == "simulated/eco"
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5


def test_sync_stream(client: OpenAI) -> None:
    with client.chat.completions.create(model="auto", messages=MESSAGES, stream=True) as stream:
        chunks = list(stream)
    assert len(chunks) > 2
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # not asked for


def test_sync_stream_include_usage(client: OpenAI) -> None:
    with client.chat.completions.create(
        model="eco", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as stream:
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_sync_stream_model_header(client: OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="premium", messages=MESSAGES, stream=True
    ) as response:
        assert response.headers["x-clawrouter-model"] in SIMULATED
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text.strip()


def test_models_list(client: OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    assert {"simulated/eco", "auto"} <= ids
    assert ids >= SIMULATED | {"auto", "eco", "premium"}


def test_unknown_model_is_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(model="no-such/model", messages=MESSAGES)
    error = excinfo.value
    assert error.status_code == 400
    assert "no-such/model" in error.message
    assert error.code == "model_not_found"
    assert error.param == "model"
    assert error.type == "invalid_request_error"


def test_unknown_model_when_streaming_is_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(model="no-such/model", messages=MESSAGES, stream=True)
    assert "no-such/model" in excinfo.value.message


def test_extra_unknown_field_is_accepted(client: OpenAI) -> None:
    completion = client.chat.completions.create(model="auto", messages=MESSAGES, extra_body={"some_vendor_field": 1})
    assert completion.choices[0].message.content


# --- async ----------------------------------------------------------------------------------


async def test_async_chat(async_client: AsyncOpenAI) -> None:
    raw = await async_client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert raw.headers["x-clawrouter-model"] in SIMULATED
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.total_tokens > 0


async def test_async_stream(async_client: AsyncOpenAI) -> None:
    stream = await async_client.chat.completions.create(
        model="auto", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    parts: list[str] = []
    async with stream:
        chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
    assert "".join(parts).strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_async_models_and_errors(async_client: AsyncOpenAI) -> None:
    ids = {model.id async for model in async_client.models.list()}
    assert {"simulated/eco", "auto"} <= ids
    with pytest.raises(openai.BadRequestError) as excinfo:
        await async_client.chat.completions.create(model="no-such/model", messages=MESSAGES)
    assert "no-such/model" in excinfo.value.message
