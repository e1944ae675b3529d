"""clawrouter-postgres: a PostgreSQL ledger for clawrouter (``[ledger] backend = "postgres"``)."""

__version__ = "0.1.0"
