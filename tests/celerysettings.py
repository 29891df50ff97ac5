"""Settings for the Celery executor tests: ``tests.settings`` plus the Celery executor.

The Celery worker (``celery -A tests.celeryapp worker``) and the worker (``run_alarms
--executor celery``) of a test share these settings and so the same queue:
``ALARMS_CELERY_QUEUE`` names it (every test has its own, so that parallel runs never take each
other's tasks).
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import ALARMS

ALARMS = {
    **ALARMS,
    "EXECUTOR": "celery",
    "CELERY": {
        "APP": "tests.celeryapp.app",
        "QUEUE": os.environ.get("ALARMS_CELERY_QUEUE", "django-alarms-tests"),
        "QUEUE_WAIT": float(os.environ.get("ALARMS_CELERY_QUEUE_WAIT", "30")),
    },
}
