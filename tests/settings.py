"""Settings for the test suite: the example project plus a test app with probe handlers.

``ALARMS_JSON`` (a JSON object) overrides ``ALARMS`` keys, so that tests can start workers with
short leases and heartbeats.
"""

import json
import os

from testproject.settings import *  # noqa: F403
from testproject.settings import ALARMS, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.workerapp"]

ALARMS = {**ALARMS, **json.loads(os.environ.get("ALARMS_JSON", "{}"))}

# Django's Tasks framework (django.tasks on Django 6, the django-tasks backport on 5.2) with
# this package's backend; tests.workerapp.tasks defines the tasks.
TASKS = {
    "default": {
        "BACKEND": "django_alarms.tasks.AlarmsBackend",
        "QUEUES": ["default", "emails"],
    },
    "anyqueue": {"BACKEND": "django_alarms.tasks.AlarmsBackend", "QUEUES": []},
}
