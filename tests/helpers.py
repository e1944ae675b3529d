from __future__ import annotations


def chat(content: str = "hello there", model: str = "auto", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def sse_events(text: str) -> list[str]:
    """The data payloads of an SSE body."""
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]
