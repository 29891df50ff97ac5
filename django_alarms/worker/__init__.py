"""The ``run_alarms`` worker: windowed loader, change feed, timers, claims, leases, recovery."""
