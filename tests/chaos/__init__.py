"""The fault battery: real ``run_alarms`` processes, seeded faults, and a checker of the promise.

Run it with ``python -m tests.chaos --smoke`` or ``--full`` (see ``docs/reliability.md``).
``ledger`` is what the test handler writes, ``checker`` judges a run, ``supervisor`` starts
and stops processes and databases, ``scenarios`` are the experiments, ``cli`` the entry point.
"""
