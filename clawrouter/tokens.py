"""Token estimates for routing and for the simulated provider.

These are estimates, not a provider's tokenizer: one token per word or
punctuation mark, plus a fixed overhead per message.
"""

from __future__ import annotations

import re

from .wire import ChatCompletionRequest, encode

__all__ = ["count_tokens", "prompt_bound", "prompt_text", "prompt_tokens"]

_TOKEN = re.compile(r"\w+|[^\w\s]")
PER_MESSAGE = 4


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def prompt_text(request: ChatCompletionRequest) -> str:
    """All text of the request's messages, joined by newlines."""
    parts: list[str] = []
    for message in request.messages:
        content = message.content
        if isinstance(content, str):
            parts.append(content)
        elif content:
            parts.extend(p.text for p in content if isinstance(p.text, str))
    return "\n".join(parts)


def prompt_tokens(request: ChatCompletionRequest) -> int:
    return count_tokens(prompt_text(request)) + PER_MESSAGE * len(request.messages)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def prompt_bound(request: ChatCompletionRequest) -> int:
    """An upper bound on the request's input tokens: every UTF-8 byte of its text a token
    (a byte-level BPE token covers at least one byte), plus the raw JSON of tool
    definitions and calls, plus a fixed overhead per message. O(1) per ASCII string."""
    total = 0
    for message in request.messages:
        total += 8
        content = message.content
        if isinstance(content, str):
            total += _utf8_len(content)
        elif content:
            for part in content:
                if isinstance(part.text, str):
                    total += _utf8_len(part.text)
                else:
                    total += len(encode(part))
        if isinstance(message.name, str):
            total += _utf8_len(message.name)
        if isinstance(message.tool_calls, list):
            total += len(encode(message.tool_calls))
    if isinstance(request.tools, list):
        total += len(encode(request.tools))
    return total
