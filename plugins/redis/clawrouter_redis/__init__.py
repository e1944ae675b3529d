"""clawrouter-redis: a Redis state backend for clawrouter (``[state] backend = "redis"``)."""

__version__ = "0.1.0"
