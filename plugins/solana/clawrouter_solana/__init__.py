"""clawrouter-solana: the x402 ``exact`` scheme on Solana for clawrouter.

Installing this distribution registers, through the ``clawrouter`` entry point
group, a payment rail for each Solana network configured in
``[plugins.solana]`` and a payment signer for the agent-side client.
"""

__version__ = "0.1.0"
