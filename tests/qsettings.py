"""Settings for the django-q2 executor tests: ``tests.settings`` plus django-q2 on Redis.

The cluster (``manage.py qcluster``) and the worker (``run_alarms --executor django_q``) of a
test share these settings and so the same queue. ``ALARMS_Q_NAME`` names the queue (the tests
give every run its own, so that parallel runs never take each other's tasks),
``ALARMS_Q_REDIS`` is the Redis URL (a database number of its own by default) and
``ALARMS_Q_WORKERS`` the number of cluster processes.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import ALARMS, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "django_q"]

Q_CLUSTER = {
    "name": os.environ.get("ALARMS_Q_NAME", "django-alarms-tests"),
    "redis": os.environ.get("ALARMS_Q_REDIS", "redis://127.0.0.1:6379/13"),
    "workers": int(os.environ.get("ALARMS_Q_WORKERS", "4")),
    # Each task carries its attempt's own time limit; this is the default for other tasks.
    # retry above timeout, one attempt per task: django-alarms owns retries.
    "timeout": 300,
    "retry": 360,
    "max_attempts": 1,
    "ack_failures": True,
    # django-alarms records every attempt itself; django-q keeps only its failures.
    "save_limit": -1,
    "scheduler": False,
    "guard_cycle": 0.5,
    "log_level": "INFO",
}

ALARMS = {**ALARMS, "EXECUTOR": "django_q"}
