"""The agent's side: an httpx client that pays x402 challenges within a budget.

::

    import openai
    from clawrouter.client import Client, Policy
    from clawrouter.wallet import Wallet

    client = Client(Wallet.resolve(), Policy(max_per_call="0.05", max_per_session="1.00"))
    llm = openai.OpenAI(base_url="http://127.0.0.1:8402/v1", api_key="x402", http_client=client)
    llm.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    print(client.spend)

See docs/client.md. :class:`Policy` says what may be paid; a request outside
it raises :class:`PolicyError` before anything is signed. A request retried
after a network error, a timeout or a failed call carries the authorization it
already signed, never a second one.
"""

from ..receipts import ReceiptError
from .payer import CallRecord, Challenge, EvmExactSigner, Payer, PaymentSigner, Spend, parse_challenge
from .policy import Budget, PaymentError, Policy, PolicyError
from .transport import AsyncClient, AsyncX402Transport, Client, X402Transport

__all__ = [
    "AsyncClient",
    "AsyncX402Transport",
    "Budget",
    "CallRecord",
    "Challenge",
    "Client",
    "EvmExactSigner",
    "Payer",
    "PaymentError",
    "PaymentSigner",
    "Policy",
    "PolicyError",
    "ReceiptError",
    "Spend",
    "X402Transport",
    "parse_challenge",
]
