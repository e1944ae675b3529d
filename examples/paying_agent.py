"""An agent that pays for its own LLM calls: the OpenAI SDK over ``clawrouter.client``.

Against a router that charges in USDC (``[payments]`` configured; see
docs/payments.md), with the agent's wallet in ``$CLAWROUTER_WALLET_KEY`` or the
key file ``clawrouter wallet new`` wrote::

    OPENAI_BASE_URL=http://127.0.0.1:8402/v1 python examples/paying_agent.py

Every 402 is paid within the policy below; anything outside it raises
``PolicyError`` before a signature is made. At the end the script prints what
the session spent and the router's verified receipts.
"""

from __future__ import annotations

import os

from openai import OpenAI

from clawrouter.client import Client, Policy, PolicyError
from clawrouter.wallet import Wallet

# Not a CLAWROUTER_* variable: those are read as router config overrides.
BASE_URL = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8402/v1")

POLICY = Policy(
    networks=["eip155:84532", "eip155:8453"],  # Base Sepolia first, then Base
    max_per_call="0.02",  # USD
    max_per_session="0.50",
)


def main(base_url: str = BASE_URL, wallet: Wallet | None = None, policy: Policy = POLICY) -> Client:
    wallet = wallet or Wallet.resolve()
    print(f"agent wallet {wallet.address}")
    with Client(wallet, policy) as http:
        llm = OpenAI(base_url=base_url, api_key="x402", http_client=http)
        reply = llm.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "Why should agents pay per call?"}], max_tokens=60
        )
        print("answer:", reply.choices[0].message.content)

        stream = llm.chat.completions.create(
            model="eco", messages=[{"role": "user", "content": "Stream a haiku."}], max_tokens=40, stream=True
        )
        for chunk in stream:
            print(chunk.choices[0].delta.content or "", end="", flush=True) if chunk.choices else None
        print()

        try:  # a request the policy refuses: nothing is signed
            llm.chat.completions.create(
                model="premium", messages=[{"role": "user", "content": "Write a novel."}], max_tokens=100_000
            )
        except PolicyError as exc:
            print(f"refused ({exc.reason})")

        spend = http.spend
        print(f"spent ${spend.charged} on {spend.paid_calls} calls; ${spend.open} signed but not settled")
        for record in http.calls:
            receipt = record.receipt
            status = "verified" if record.verified else (record.receipt_error or "none")
            model = receipt.model if receipt is not None else "-"
            print(f"  {record.state:9} ${record.usd} {model} tx={record.settlement and record.settlement.transaction}")
            print(f"            receipt: {status}")
    return http


if __name__ == "__main__":
    main()
