"""The benchmark harness of django-alarms (issue 6): ``python -m benchmarks --help``.

Every figure is measured with the real ``manage.py run_alarms`` worker in subprocesses, against
a database of its own, and reported next to a baseline measured in the same run on the same
database (the raw-SQL ceiling, bulk insert, one commit per row, a bare Django ``create()`` loop,
the wake-up jitter of a plain Python timer, the RSS of a bare Django process). See
``docs/performance.md`` for the method and the last full run.
"""
