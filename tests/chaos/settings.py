"""Settings of the battery's processes: the test settings plus the battery's app.

``DATABASE_URL`` and ``ALARMS_JSON`` work as for the tests (``tests/settings.py``).
``CHAOS_DJANGO_Q=1`` adds django-q2 on Redis (``CHAOS_Q_REDIS``, a database number of the
battery's own) with the queue ``CHAOS_Q_NAME``.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "tests.chaos.app.apps.ChaosAppConfig"]

if os.environ.get("CHAOS_DJANGO_Q") == "1":
    INSTALLED_APPS = [*INSTALLED_APPS, "django_q"]
    Q_CLUSTER = {
        "name": os.environ.get("CHAOS_Q_NAME", "django-alarms-chaos"),
        "redis": os.environ.get("CHAOS_Q_REDIS", "redis://127.0.0.1:6379/12"),
        "workers": int(os.environ.get("CHAOS_Q_WORKERS", "3")),
        "timeout": 300,
        "retry": 360,
        "max_attempts": 1,
        "ack_failures": True,
        "save_limit": -1,
        "scheduler": False,
        "guard_cycle": 0.5,
        "log_level": "INFO",  # the cluster says "Q Cluster ... running" at INFO
    }
