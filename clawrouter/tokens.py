"""Token estimates for routing and for the simulated provider.

These are estimates, not a provider's tokenizer: one token per word or
punctuation mark, plus a fixed overhead per message.
"""

from __future__ import annotations

import re

from .wire import ChatCompletionRequest

__all__ = ["count_tokens", "prompt_text", "prompt_tokens"]

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
