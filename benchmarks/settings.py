"""Settings of the benchmark runs: the test settings plus the benchmark handlers.

The database comes from ``DATABASE_URL`` and ``ALARMS`` overrides from ``ALARMS_JSON``, as for
the tests (see ``tests/settings.py``). ``DEBUG`` is off, as in production: with it on, Django
keeps every query of every connection in memory and wraps each cursor in a timing wrapper.
``BENCH_DJANGO_Q=1`` adds django-q2 (the django_q executor scenario), on Redis, with a queue of
the run's own (``BENCH_Q_NAME``).
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "benchmarks.benchapp"]

if os.environ.get("BENCH_DJANGO_Q") == "1":
    INSTALLED_APPS = [*INSTALLED_APPS, "django_q"]
    Q_CLUSTER = {
        "name": os.environ.get("BENCH_Q_NAME", "django-alarms-bench"),
        "redis": os.environ.get("BENCH_Q_REDIS", "redis://127.0.0.1:6379/14"),
        "workers": int(os.environ.get("BENCH_Q_WORKERS", "2")),
        "timeout": 300,
        "retry": 360,
        "max_attempts": 1,
        "ack_failures": True,
        "save_limit": -1,
        "scheduler": False,
        "guard_cycle": 0.5,
        "log_level": "WARNING",
    }
