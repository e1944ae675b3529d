"""Call a running ``clawrouter serve`` with the OpenAI Python SDK.

Start the router (simulated models unless a config says otherwise)::

    clawrouter serve                    # http://127.0.0.1:8402

then, in another shell::

    python examples/openai_sdk.py

The SDK needs only ``base_url`` and some ``api_key`` (no key is checked unless
``[auth] api_keys`` is configured). ``model="auto"`` lets the router choose;
``eco``, ``premium`` or a model id from ``client.models.list()`` work too. The
router names the model it picked in the ``x-clawrouter-model`` header.
"""

from __future__ import annotations

import os

from openai import OpenAI

# Not a CLAWROUTER_* variable: those are read as router config overrides.
BASE_URL = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8402/v1")


def main() -> None:
    with OpenAI(base_url=BASE_URL, api_key="anything") as client:
        print("models:", ", ".join(model.id for model in client.models.list()))

        # Non-streaming; with_raw_response gives the headers as well.
        raw = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "Say hello in five words."}],
        )
        completion = raw.parse()
        print("routed to:", raw.headers.get("x-clawrouter-model"))
        print("answer:", completion.choices[0].message.content)
        print("usage:", completion.usage)

        # Streaming; include_usage adds a last chunk carrying the token counts.
        stream = client.chat.completions.create(
            model="eco",
            messages=[{"role": "user", "content": "Tell me a short story."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    print(chunk.choices[0].delta.content, end="", flush=True)
                if chunk.usage is not None:
                    print("\nusage:", chunk.usage)


if __name__ == "__main__":
    main()
