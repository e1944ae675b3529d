"""The x402 ``exact`` scheme on EVM chains (EIP-3009 ``transferWithAuthorization``).

Modules:

* :mod:`.networks` — the network/asset table (Base, Base Sepolia, local chains);
* :mod:`.eip3009` — EIP-712 digests, signing and fast signature recovery;
* :mod:`.chain` — the JSON-RPC / in-process chain client (web3), imported lazily;
* :mod:`.facilitator` — the embedded facilitator (the router's key settles);
* :mod:`.rail` — the payment rail the verify and settle stages call;
* :mod:`.localchain` — the project's test token on an in-process EVM or anvil.

Nothing here imports web3 at module import time except :mod:`.chain` and
:mod:`.localchain`; the rail loads them when it first needs the chain.
"""
