"""The tamper-evident audit ledger: append-only rows chained by SHA-256."""
