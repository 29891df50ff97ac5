"""The battery's test app: the ledger-writing handler and the fault seams of a worker process."""
